//! Desired state → nftables objects (pure). The layout is described in `layout`.
//!
//! - `sets`: set definitions; `base`: base chains and per-packet hooks; `farm`: a farm's chain
//!   and elements; `security`: policies, limits, logging, helpers; `shared`: parts several farms
//!   share (port-range dispatch, connection-limit chains).

mod base;
mod farm;
mod security;
mod sets;
mod shared;

pub use base::Needs;
use base::*;
use farm::*;
pub use farm::{backend_elems, farm_own_part, member_elems, slot_elem};
use security::*;
pub use security::{attached, log, log_prefix, policy_map_in, policy_part};
use sets::*;
pub use shared::*;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::model::{
    Backend, Config, Farm, FarmState, Helper, KeyField, KeyValue, LogPoint, Mode, Policy, PolicyFamily,
    PolicyType, Rate, Scheduler, VerdictAction, keeps_clients,
};
use crate::netlink::RateUnit as LimitUnit;
use crate::netlink::consts::{NF_CT_STATE_INVALID_BIT, reg};
use crate::netlink::sys::*;
use crate::netlink::types::concat;
use crate::netlink::*;

use super::alloc::{Allocation, FarmAlloc};
pub use super::family::IpFamily;
use super::layout::*;
use super::ruleset::{ChainDef, FamilyState, FarmPart};

/// IP_CT_DST_NAT status bit (`ct status dnat`).
const IPS_DST_NAT: u32 = 1 << 5;
const ARPHRD_ETHER: u16 = 1;
/// 4-byte register that holds a dynset's value (after a key of up to 15 words).
const DATA_REG: u32 = reg::r32(15);

fn octets(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn mark(v: u32) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

/// Whether the farm has anything to render in this family.
pub fn farm_uses(farm: &Farm, fam: IpFamily) -> bool {
    !is_l2(farm) && farm.virtual_addresses.iter().any(|ip| fam.has(ip))
}

/// Table flags. Not `owner`/`persist`, although they would lock the table to the daemon: an owned
/// table makes every other `nft -c -f` fail with EPERM, and nft 1.0.6 prints its flags as an empty
/// `flags` line that breaks `nft list ruleset | nft -f -` for the whole ruleset. Administrators'
/// backups and other tools matter more; foreign changes are detected and repaired instead.
pub fn table_flags(_features: &KernelFeatures) -> u32 {
    0
}

// --- expression helpers ----------------------------------------------------------------------

struct Exprs(Vec<Expr>);

impl Exprs {
    fn new() -> Self {
        Exprs(Vec::new())
    }
    fn push(&mut self, e: Expr) -> &mut Self {
        self.0.push(e);
        self
    }
    fn ct_mark(&mut self, dreg: u32) -> &mut Self {
        self.push(Expr::ct(NFT_CT_MARK, dreg))
    }
    fn set_ct_mark(&mut self, sreg: u32) -> &mut Self {
        self.push(Expr::CtSet {
            key: NFT_CT_MARK,
            sreg,
            dir: None,
        })
    }
    fn mask(&mut self, r: u32, mask: u32) -> &mut Self {
        self.push(Expr::Bitwise {
            sreg: r,
            dreg: r,
            len: 4,
            mask: mark(mask),
            xor: vec![0; 4],
        })
    }
    /// `ct status dnat`.
    fn ct_dnat(&mut self) -> &mut Self {
        self.push(Expr::ct(NFT_CT_STATUS, reg::R1))
            .mask(reg::R1, IPS_DST_NAT)
            .push(Expr::cmp(reg::R1, CmpOp::Neq, vec![0; 4]))
    }
    fn goto(&mut self, chain: &str) -> &mut Self {
        self.push(Expr::verdict(Verdict::Goto(chain.into())))
    }
    /// The `meta iiftype ether` dependency nft adds before link-layer matches.
    fn ether_dependency(&mut self, keys: &[KeyField]) -> &mut Self {
        if keys
            .iter()
            .any(|k| matches!(k, KeyField::Srcmac | KeyField::Dstmac))
        {
            self.push(Expr::meta(NFT_META_IFTYPE, reg::R1)).push(Expr::cmp(
                reg::R1,
                CmpOp::Eq,
                ARPHRD_ETHER.to_ne_bytes().to_vec(),
            ));
        }
        self
    }
    /// Loads the packet fields of a key into consecutive 4-byte registers from `first_word`.
    fn key_fields(&mut self, fam: IpFamily, keys: &[KeyField], first_word: u32) -> u32 {
        let mut word = first_word;
        for k in keys {
            let field = fam.key_field(*k);
            let dreg = if word == 0 { reg::R1 } else { reg::r32(word) };
            self.push(Expr::payload(field, dreg));
            word += types::reg_len(field.location().2) / 4;
        }
        word
    }
    /// `ct mark & 0xffff0000 . <keys>` into the registers from R1.
    fn persist_key(&mut self, fam: IpFamily, keys: &[KeyField]) -> &mut Self {
        self.ct_mark(reg::R1).mask(reg::R1, FARM_MASK);
        self.key_fields(fam, keys, 1);
        self
    }
    fn persist_op(&mut self, fam: IpFamily, keys: &[KeyField], op: DynsetOp, ttl: Option<u32>) -> &mut Self {
        self.persist_key(fam, keys).ct_mark(DATA_REG).push(Expr::Dynset {
            set: persist_set(keys),
            op,
            sreg_key: reg::R1,
            sreg_data: Some(DATA_REG),
            timeout_ms: ttl.map(|t| u64::from(t) * 1000),
            exprs: Vec::new(),
        })
    }
}

fn rule(fam: IpFamily, chain: &str, e: &mut Exprs) -> Rule {
    Rule::new(fam.family(), TABLE, chain, std::mem::take(&mut e.0))
}

/// The table of one family without farm parts: table, sets and shared chains. `None` when no
/// farm uses the family. O(farms) but cheap: it only looks at which shards and persistence kinds
/// are in use.
pub fn skeleton(
    fam: IpFamily,
    config: &Config,
    alloc: &Allocation,
    flags: u32,
    backend_limits: &[u32],
) -> Option<FamilyState> {
    let mut sets: BTreeMap<String, Set> = BTreeMap::new();
    let mut used = false;
    let mut shards = std::collections::BTreeSet::new();
    for farm in config.farms.iter().filter(|f| farm_uses(f, fam)) {
        let Some(fa) = alloc.farms.get(&farm.name) else {
            continue;
        };
        used = true;
        if farm.mode != Mode::Local {
            shards.insert(shard_of(fa.id));
            sets.entry(slots_set(shard_of(fa.id)))
                .or_insert_with(|| slots_map(fam, shard_of(fa.id)));
            if !farm.persistence.is_empty() {
                sets.entry(persist_set(&farm.persistence))
                    .or_insert_with(|| persist_map(fam, &farm.persistence));
            }
        }
    }
    if !used {
        return None;
    }
    for p in config.policies.iter().filter(|p| policy_in(p, fam)) {
        sets.insert(policy_set(&p.name), policy_map(fam, p));
    }
    for f in config.farms.iter().filter(|f| farm_uses(f, fam)) {
        if let Some(rate) = f.new_rtlimit.filter(|r| r.count > 0) {
            let name = new_rtlimit_set(&rate, f.new_rtlimit_burst);
            sets.entry(name.clone())
                .or_insert_with(|| limit_set(fam, &name, true));
        }
        if f.est_connlimit > 0 {
            let name = est_connlimit_set(f.est_connlimit);
            sets.entry(name.clone())
                .or_insert_with(|| limit_set(fam, &name, false));
        }
    }
    for n in backend_limits {
        let name = backend_conns_set(*n);
        let mut s =
            Set::new(fam.family(), TABLE, &name, TypeSpec::of(DataType::Mark)).with_flags(NFT_SET_EVAL);
        s.size = Some(LIMIT_SIZE);
        sets.insert(name, s);
    }
    sets.extend(shared_sets(fam).into_iter().map(|s| (s.name.clone(), s)));
    // rst-rtlimit: one chain and one set per limit (rate, burst, ttl) in use.
    let mut chains = base_chains(fam, Needs::of(fam, config.farms.iter()));
    chains.extend(shards.into_iter().map(|s| pick_chain_def(fam, s)));
    for f in config.farms.iter().filter(|f| farm_uses(f, fam)) {
        if let Some(rate) = f.rst_rtlimit.filter(|r| r.count > 0) {
            let name = rst_rtlimit_name(&rate, f.rst_rtlimit_burst, f.limits_ttl);
            if !sets.contains_key(&name) {
                sets.insert(name.clone(), limit_set(fam, &name, true));
                let mut e = Exprs::new();
                farm_and_client(&mut e, fam);
                e.push(Expr::Dynset {
                    set: name.clone(),
                    op: DynsetOp::Add,
                    sreg_key: reg::R1,
                    sreg_data: None,
                    timeout_ms: Some(u64::from(f.limits_ttl.max(1)) * 1000),
                    exprs: vec![limit(rate, f.rst_rtlimit_burst)],
                })
                .push(Expr::verdict(Verdict::Drop));
                chains.push(ChainDef {
                    chain: Chain::regular(fam.family(), TABLE, &name),
                    rules: vec![rule(fam, &name, &mut e)],
                });
            }
        }
    }
    let mut table = Table::new(fam.family(), TABLE);
    table.flags = flags;
    let mut objs = BTreeMap::new();
    for f in config.farms.iter().filter(|f| farm_uses(f, fam)) {
        for (name, helper, l4) in helpers(f) {
            objs.entry(name.clone()).or_insert_with(|| Obj {
                family: fam.family(),
                table: TABLE.into(),
                name,
                handle: None,
                kind: ObjKind::CtHelper {
                    helper: helper.into(),
                    l3proto: fam.nfproto() as u16,
                    l4proto: l4,
                },
            });
        }
    }
    Some(FamilyState {
        table,
        sets,
        objs,
        chains,
        shared: BTreeMap::new(),
        farms: BTreeMap::new(),
    })
}

/// One farm's part of a family's table, if the farm uses the family.
pub fn render_farm(
    fam: IpFamily,
    farm: &Farm,
    alloc: &Allocation,
    policies: &crate::model::List<Policy>,
) -> Option<FarmPart> {
    let fa = alloc.farms.get(&farm.name)?;
    farm_uses(farm, fam).then(|| farm_part(fam, farm, fa, policies))
}

/// The whole desired table of one family, or `None` when no farm uses the family.
pub fn render_family(fam: IpFamily, config: &Config, alloc: &Allocation, flags: u32) -> Option<FamilyState> {
    let climits = climit_users(fam, config.farms.iter());
    let values: Vec<u32> = climits.keys().copied().collect();
    let mut state = skeleton(fam, config, alloc, flags, &values)?;
    for farm in &config.farms {
        if let Some(part) = render_farm(fam, farm, alloc, &config.policies) {
            state.farms.insert(farm.name.clone(), part);
        }
    }
    state.shared = ports_parts(fam, config.farms.iter());
    for p in &config.policies {
        if let Some(part) = policy_part(fam, p) {
            state.shared.insert(policy_set(&p.name), part);
        }
    }
    for n in values {
        state.shared.insert(climit_chain(n), climit_part(fam, n));
    }
    Some(state)
}
