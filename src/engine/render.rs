//! Desired state → nftables objects (pure). The layout is described in `layout`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::model::{
    Backend, Config, Farm, FarmState, Helper, KeyField, KeyValue, LogPoint, Mode, Policy, PolicyFamily,
    PolicyType, Rate, Scheduler, VerdictAction, keeps_clients, parse_session_client,
};
use crate::netlink::RateUnit as LimitUnit;
use crate::netlink::consts::{NF_CT_STATE_INVALID_BIT, reg};
use crate::netlink::sys::*;
use crate::netlink::types::concat;
use crate::netlink::*;

use super::alloc::{Allocation, FarmAlloc};
use super::layout::*;
use super::ruleset::{ChainDef, FamilyState, FarmPart};

/// IP_CT_DST_NAT status bit (`ct status dnat`).
const IPS_DST_NAT: u32 = 1 << 5;
const ARPHRD_ETHER: u16 = 1;
/// 4-byte register that holds a dynset's value (after a key of up to 15 words).
const DATA_REG: u32 = reg::r32(15);

/// The two IP families a farm can render into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub fn family(self) -> Family {
        match self {
            IpFamily::V4 => Family::Ip,
            IpFamily::V6 => Family::Ip6,
        }
    }

    fn nfproto(self) -> u32 {
        match self {
            IpFamily::V4 => NFPROTO_IPV4,
            IpFamily::V6 => NFPROTO_IPV6,
        }
    }

    fn is_v6(self) -> bool {
        self == IpFamily::V6
    }

    fn has(self, ip: &IpAddr) -> bool {
        ip.is_ipv6() == self.is_v6()
    }

    fn addr_type(self) -> DataType {
        match self {
            IpFamily::V4 => DataType::Ipv4Addr,
            IpFamily::V6 => DataType::Ipv6Addr,
        }
    }

    fn saddr(self) -> PayloadField {
        match self {
            IpFamily::V4 => PayloadField::IpSaddr,
            IpFamily::V6 => PayloadField::Ip6Saddr,
        }
    }

    fn daddr(self) -> PayloadField {
        match self {
            IpFamily::V4 => PayloadField::IpDaddr,
            IpFamily::V6 => PayloadField::Ip6Daddr,
        }
    }

    pub const BOTH: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];
}

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
    !super::l2::is_l2(farm) && farm.virtual_addresses.iter().any(|ip| fam.has(ip))
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
            let field = match k {
                KeyField::Srcip => fam.saddr(),
                KeyField::Dstip => fam.daddr(),
                KeyField::Srcport => PayloadField::ThSport,
                KeyField::Dstport => PayloadField::ThDport,
                KeyField::Srcmac => PayloadField::EtherSaddr,
                KeyField::Dstmac => PayloadField::EtherDaddr,
            };
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

// --- sets --------------------------------------------------------------------------------------

fn key_type(fam: IpFamily, k: KeyField) -> DataType {
    match k {
        KeyField::Srcip | KeyField::Dstip => fam.addr_type(),
        KeyField::Srcport | KeyField::Dstport => DataType::InetService,
        KeyField::Srcmac | KeyField::Dstmac => DataType::EtherAddr,
    }
}

fn shared_sets(fam: IpFamily) -> Vec<Set> {
    let f = fam.family();
    let m = TypeSpec::of(DataType::Mark);
    let addr = TypeSpec::of(fam.addr_type());
    let service = TypeSpec::concat(&[DataType::InetProto, fam.addr_type(), DataType::InetService]);
    let verdict = TypeSpec::of(DataType::Verdict);
    vec![
        Set::map(f, TABLE, SET_SERVICES, service.clone(), verdict.clone()),
        Set::map(f, TABLE, SET_SERVICES_LOCAL, service.clone(), verdict.clone()),
        Set::new(f, TABLE, SET_STRICT_SERVICES, service.clone()),
        Set::new(
            f,
            TABLE,
            SET_STRICT_ADDRS,
            TypeSpec::concat(&[DataType::InetProto, fam.addr_type()]),
        ),
        Set::map(
            f,
            TABLE,
            SET_RST_LIMITS,
            TypeSpec::of(DataType::Mark),
            verdict.clone(),
        ),
        Set::map(
            f,
            TABLE,
            SET_FORWARD_LOG,
            TypeSpec::of(DataType::Mark),
            verdict.clone(),
        ),
        Set::map(
            f,
            TABLE,
            SET_SERVICE_ADDRS_LOCAL,
            TypeSpec::concat(&[DataType::InetProto, fam.addr_type()]),
            verdict.clone(),
        ),
        Set::map(
            f,
            TABLE,
            SET_SERVICE_ADDRS,
            TypeSpec::concat(&[DataType::InetProto, fam.addr_type()]),
            verdict,
        ),
        Set::map(
            f,
            TABLE,
            SET_TARGETS_ADDR_PORT,
            m.clone(),
            TypeSpec::concat(&[fam.addr_type(), DataType::InetService]),
        ),
        Set::map(f, TABLE, SET_TARGETS_ADDR, m.clone(), addr.clone()),
        Set::new(f, TABLE, SET_MASQ, m.clone()),
        Set::map(f, TABLE, SET_SNAT, m.clone(), addr),
        Set::map(f, TABLE, SET_USER_MARKS, m.clone(), m.clone()),
        Set::new(f, TABLE, SET_LIVE, m.clone()),
        Set::map(f, TABLE, SET_BACKEND_LIMITS, m, TypeSpec::of(DataType::Verdict)),
    ]
}

fn slots_map(fam: IpFamily, shard: u32) -> Set {
    let mut s = Set::map(
        fam.family(),
        TABLE,
        &slots_set(shard),
        TypeSpec::of(DataType::Integer(4)),
        TypeSpec::of(DataType::Mark),
    );
    // nft types a numgen key as `integer`; without typeof it refuses to re-read the listing.
    s.userdata.key_typeof = Some(Typeof::Numgen {
        random: false,
        modulus: 2,
        offset: 0,
    });
    s.userdata.data_typeof = Some(Typeof::Ct { key: NFT_CT_MARK });
    s
}

fn persist_map(fam: IpFamily, keys: &[KeyField]) -> Set {
    let mut fields = vec![DataType::Mark];
    fields.extend(keys.iter().map(|k| key_type(fam, *k)));
    // nft names at most 5 concatenated types (6 bits each in a u32); a longer key is described
    // as one integer of the same length, which the kernel treats alike.
    let key = if fields.len() <= 5 {
        TypeSpec::concat(&fields)
    } else {
        TypeSpec::of(DataType::Integer(
            fields.iter().map(|f| types::reg_len(f.byte_len())).sum(),
        ))
    };
    let mut s = Set::map(
        fam.family(),
        TABLE,
        &persist_set(keys),
        key,
        TypeSpec::of(DataType::Mark),
    )
    .with_flags(NFT_SET_TIMEOUT);
    s.size = Some(PERSIST_SIZE);
    s
}

// --- base chains -------------------------------------------------------------------------------

/// Which per-packet hooks the configuration needs: a feature nobody uses costs no packet anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    pub strict: bool,
    pub rst: bool,
    pub marks: bool,
    pub forward_log: bool,
}

impl Needs {
    pub fn of<'a>(fam: IpFamily, farms: impl Iterator<Item = &'a Farm>) -> Needs {
        let mut n = Needs::default();
        for f in farms.filter(|f| farm_uses(f, fam)) {
            n.strict |= f.tcp_strict;
            n.rst |= f.rst_rtlimit.is_some_and(|r| r.count > 0);
            n.marks |= f.mark.is_some() || f.backends.iter().any(|b| b.mark.is_some());
            n.forward_log |= f.log.contains(&LogPoint::Forward) && f.mode != Mode::Local;
        }
        n
    }
}

fn base_chains(fam: IpFamily, needs: Needs) -> Vec<ChainDef> {
    let f = fam.family();
    let base = |name: &str, ty: ChainType, point: HookPoint, prio: i32| {
        Chain::base(f, TABLE, name, ty, Hook::new(point, prio), Verdict::Accept)
    };
    let mut e = Exprs::new();

    // Dispatch: one hash lookup of protocol, address and port; then, for port ranges (and farms
    // of every port), one of protocol and address that leads to that address's `ports-` chain.
    let w = 1 + types::reg_len(fam.addr_type().byte_len()) / 4;
    let mut dispatch = |chain: &str, exact: &str, addrs: &str| {
        e.push(Expr::meta(NFT_META_L4PROTO, reg::R1))
            .push(Expr::payload(fam.daddr(), reg::r32(1)))
            .push(Expr::payload(PayloadField::ThDport, reg::r32(w)))
            .push(Expr::map(exact, reg::R1, reg::VERDICT));
        let first = rule(fam, chain, &mut e);
        e.push(Expr::meta(NFT_META_L4PROTO, reg::R1))
            .push(Expr::payload(fam.daddr(), reg::r32(1)))
            .push(Expr::map(addrs, reg::R1, reg::VERDICT));
        vec![first, rule(fam, chain, &mut e)]
    };
    let prerouting = ChainDef {
        chain: base(CHAIN_PREROUTING, ChainType::Nat, HookPoint::Prerouting, -100),
        rules: dispatch(CHAIN_PREROUTING, SET_SERVICES, SET_SERVICE_ADDRS),
    };
    // Connections the balancer opens itself, to `intra-connect` farms.
    let output = ChainDef {
        chain: base(CHAIN_OUTPUT, ChainType::Nat, HookPoint::Output, -100),
        rules: dispatch(CHAIN_OUTPUT, SET_SERVICES_LOCAL, SET_SERVICE_ADDRS_LOCAL),
    };

    let mut rules = Vec::new();
    // A backend at its established-connection limit refuses the new one.
    e.ct_mark(reg::R1)
        .push(Expr::map(SET_BACKEND_LIMITS, reg::R1, reg::VERDICT));
    rules.push(rule(fam, CHAIN_TO_BACKEND, &mut e));
    e.ct_mark(reg::R1)
        .push(Expr::map(SET_USER_MARKS, reg::R1, reg::R1))
        .push(Expr::MetaSet {
            key: NFT_META_MARK,
            sreg: reg::R1,
        });
    rules.push(rule(fam, CHAIN_TO_BACKEND, &mut e));
    let port_reg = reg::r32(types::reg_len(fam.addr_type().byte_len()) / 4);
    for proto in [6u8, 17, 132] {
        e.push(Expr::meta(NFT_META_L4PROTO, reg::R1))
            .push(Expr::cmp(reg::R1, CmpOp::Eq, vec![proto]))
            .ct_mark(reg::R1)
            .push(Expr::map(SET_TARGETS_ADDR_PORT, reg::R1, reg::R1))
            .push(Expr::nat(
                NatType::Dnat,
                fam.nfproto(),
                Some((reg::R1, reg::R1)),
                Some((port_reg, port_reg)),
                0,
            ));
        rules.push(rule(fam, CHAIN_TO_BACKEND, &mut e));
    }
    e.ct_mark(reg::R1)
        .push(Expr::map(SET_TARGETS_ADDR, reg::R1, reg::R1))
        .push(Expr::nat(
            NatType::Dnat,
            fam.nfproto(),
            Some((reg::R1, reg::R1)),
            None,
            0,
        ));
    rules.push(rule(fam, CHAIN_TO_BACKEND, &mut e));
    let to_backend = ChainDef {
        chain: Chain::regular(f, TABLE, CHAIN_TO_BACKEND),
        rules,
    };

    e.ct_dnat()
        .ct_mark(reg::R1)
        .push(Expr::lookup(SET_MASQ, reg::R1))
        .push(Expr::masq(None, 0));
    let masq = rule(fam, CHAIN_POSTROUTING, &mut e);
    e.ct_dnat()
        .ct_mark(reg::R1)
        .push(Expr::map(SET_SNAT, reg::R1, reg::R1))
        .push(Expr::nat(
            NatType::Snat,
            fam.nfproto(),
            Some((reg::R1, reg::R1)),
            None,
            0,
        ));
    let snat = rule(fam, CHAIN_POSTROUTING, &mut e);
    let postrouting = ChainDef {
        chain: base(CHAIN_POSTROUTING, ChainType::Nat, HookPoint::Postrouting, 100),
        rules: vec![masq, snat],
    };

    // tcp-strict: every TCP packet to a strict farm's service is checked.
    let mut mangle_rules = Vec::new();
    let mut chains = Vec::new();
    if needs.strict {
        e.push(Expr::meta(NFT_META_L4PROTO, reg::R1))
            .push(Expr::cmp(reg::R1, CmpOp::Eq, vec![6]))
            .push(Expr::meta(NFT_META_L4PROTO, reg::R1))
            .push(Expr::payload(fam.daddr(), reg::r32(1)))
            .push(Expr::payload(PayloadField::ThDport, reg::r32(w)))
            .push(Expr::lookup(SET_STRICT_SERVICES, reg::R1))
            .push(Expr::verdict(Verdict::Jump(CHAIN_STRICT.into())));
        mangle_rules.push(rule(fam, CHAIN_MANGLE, &mut e));
        e.push(Expr::meta(NFT_META_L4PROTO, reg::R1))
            .push(Expr::cmp(reg::R1, CmpOp::Eq, vec![6]))
            .push(Expr::meta(NFT_META_L4PROTO, reg::R1))
            .push(Expr::payload(fam.daddr(), reg::r32(1)))
            .push(Expr::lookup(SET_STRICT_ADDRS, reg::R1))
            .push(Expr::verdict(Verdict::Jump(CHAIN_STRICT.into())));
        mangle_rules.push(rule(fam, CHAIN_MANGLE, &mut e));
    }
    if needs.rst {
        // rst-rtlimit: a client's resets, per farm (the farm is in the connection's mark).
        e.push(Expr::meta(NFT_META_L4PROTO, reg::R1))
            .push(Expr::cmp(reg::R1, CmpOp::Eq, vec![6]))
            .push(Expr::payload(PayloadField::TcpFlags, reg::R1))
            .push(Expr::Bitwise {
                sreg: reg::R1,
                dreg: reg::R1,
                len: 1,
                mask: vec![0x04],
                xor: vec![0],
            })
            .push(Expr::cmp(reg::R1, CmpOp::Neq, vec![0]))
            .ct_mark(reg::R1)
            .mask(reg::R1, FARM_MASK)
            .push(Expr::map(SET_RST_LIMITS, reg::R1, reg::VERDICT));
        mangle_rules.push(rule(fam, CHAIN_MANGLE, &mut e));
    }
    if needs.strict {
        e.push(Expr::ct(NFT_CT_STATE, reg::R1))
            .mask(reg::R1, NF_CT_STATE_INVALID_BIT)
            .push(Expr::cmp(reg::R1, CmpOp::Neq, vec![0; 4]))
            .push(Expr::verdict(Verdict::Drop));
        let mut strict_rules = vec![rule(fam, CHAIN_STRICT, &mut e)];
        for bogus in [0x03u8, 0x06] {
            // syn+fin, syn+rst
            e.push(Expr::payload(PayloadField::TcpFlags, reg::R1))
                .push(Expr::Bitwise {
                    sreg: reg::R1,
                    dreg: reg::R1,
                    len: 1,
                    mask: vec![bogus],
                    xor: vec![0],
                })
                .push(Expr::cmp(reg::R1, CmpOp::Eq, vec![bogus]))
                .push(Expr::verdict(Verdict::Drop));
            strict_rules.push(rule(fam, CHAIN_STRICT, &mut e));
        }
        chains.push(ChainDef {
            chain: Chain::regular(f, TABLE, CHAIN_STRICT),
            rules: strict_rules,
        });
    }
    chains.extend([to_backend, prerouting, output, postrouting]);

    if needs.marks {
        // Later packets of a connection get the user's mark too (before routing).
        e.ct_dnat()
            .ct_mark(reg::R1)
            .push(Expr::map(SET_USER_MARKS, reg::R1, reg::R1))
            .push(Expr::MetaSet {
                key: NFT_META_MARK,
                sreg: reg::R1,
            });
        mangle_rules.push(rule(fam, CHAIN_MANGLE, &mut e));
    }
    if !mangle_rules.is_empty() {
        chains.push(ChainDef {
            chain: base(CHAIN_MANGLE, ChainType::Filter, HookPoint::Prerouting, -150),
            rules: mangle_rules,
        });
    }
    if needs.forward_log {
        // log: forward — the farm is in the connection's mark.
        e.ct_mark(reg::R1)
            .mask(reg::R1, FARM_MASK)
            .push(Expr::map(SET_FORWARD_LOG, reg::R1, reg::VERDICT));
        chains.push(ChainDef {
            chain: base(CHAIN_FORWARD, ChainType::Filter, HookPoint::Forward, 0),
            rules: vec![rule(fam, CHAIN_FORWARD, &mut e)],
        });
    }
    chains
}

// --- farms -------------------------------------------------------------------------------------

/// Ends a rule that refuses a packet as the farm's `verdict` says: log (with `prefix`), drop.
fn log(prefix: String) -> Expr {
    Expr::Log {
        prefix: Some(prefix.chars().take(127).collect()),
        group: None,
        snaplen: None,
        qthreshold: None,
        // The kernel stores the default level (warning) explicitly; say it so reads match.
        level: Some(4),
        flags: 0,
    }
}

/// The farm's log statement, rate-limited by `log-rtlimit` when set.
fn farm_log(e: &mut Exprs, farm: &Farm, prefix: String) {
    if let Some(rate) = farm.log_rtlimit.filter(|r| r.count > 0) {
        let mut l = limit(rate, 5);
        if let Expr::Limit(x) = &mut l {
            x.over = false;
        }
        e.push(l);
    }
    e.push(log(prefix));
}

/// Ends a rule that refuses a packet as the farm's `verdict` says. With `log-rtlimit` the rule
/// jumps to a chain of its own (`refuse-<farm>-<kind>`), where a rate-limited log cannot keep
/// the drop from happening; that chain is added to `extra`.
fn refuse_or_jump(e: &mut Exprs, fam: IpFamily, farm: &Farm, kind: &str, extra: &mut Vec<ChainDef>) {
    let logs = farm.verdict.contains(&VerdictAction::Log);
    if !(logs && farm.log_rtlimit.is_some_and(|r| r.count > 0)) {
        refuse(e, farm, kind);
        return;
    }
    let name = refuse_chain(&farm.name, &kind.replace('.', "_"));
    let p = farm
        .log_prefix
        .as_deref()
        .map(|p| format!("{p}{kind} "))
        .unwrap_or(format!("{kind}-{} ", farm.name));
    let mut c = Exprs::new();
    farm_log(&mut c, farm, p);
    let mut rules = vec![rule(fam, &name, &mut c)];
    if farm.verdict.contains(&VerdictAction::Drop) {
        c.push(Expr::verdict(Verdict::Drop));
        rules.push(rule(fam, &name, &mut c));
    }
    extra.push(ChainDef {
        chain: Chain::regular(fam.family(), TABLE, &name),
        rules,
    });
    e.push(Expr::verdict(Verdict::Jump(name)));
}

fn refuse(e: &mut Exprs, farm: &Farm, prefix: &str) {
    if farm.verdict.contains(&VerdictAction::Log) {
        let p = farm
            .log_prefix
            .as_deref()
            .map(|p| format!("{p}{prefix} "))
            .unwrap_or(format!("{prefix}-{} ", farm.name));
        e.push(log(p));
    }
    if farm.verdict.contains(&VerdictAction::Drop) {
        e.push(Expr::verdict(Verdict::Drop));
    }
}

/// `ct mark & 0xffff0000 . <saddr>` into the registers from R1: the farm and the client.
fn farm_and_client(e: &mut Exprs, fam: IpFamily) {
    e.ct_mark(reg::R1).mask(reg::R1, FARM_MASK);
    e.key_fields(fam, &[KeyField::Srcip], 1);
}

fn limit(rate: Rate, burst: u32) -> Expr {
    Expr::Limit(Limit {
        rate: rate.count,
        unit: match rate.unit {
            crate::model::RateUnit::Second => LimitUnit::Second,
            crate::model::RateUnit::Minute => LimitUnit::Minute,
            crate::model::RateUnit::Hour => LimitUnit::Hour,
            crate::model::RateUnit::Day => LimitUnit::Day,
            crate::model::RateUnit::Week => LimitUnit::Week,
        },
        // nft prints a burst of 0 as no burst and reads that back as 5: always say it.
        burst: burst.max(1),
        bytes: false,
        over: true,
    })
}

/// Security rules of a farm, first in its chain (new connections only, as the chain is a nat
/// chain): its policies in attachment order, then its per-client limits.
fn security_rules(
    fam: IpFamily,
    farm: &Farm,
    policies: &[&Policy],
    chain: &str,
    rules: &mut Vec<Rule>,
    extra: &mut Vec<ChainDef>,
) {
    let mut e = Exprs::new();
    for p in policies.iter().filter(|p| policy_in(p, fam)) {
        // A blacklist refuses what it lists; a whitelist refuses everything it does not list.
        e.push(Expr::payload(fam.saddr(), reg::R1)).push(Expr::Lookup {
            set: policy_set(&p.name),
            sreg: reg::R1,
            dreg: None,
            invert: p.kind == PolicyType::Whitelist,
        });
        let kind = if p.kind == PolicyType::Whitelist {
            "WL"
        } else {
            "BL"
        };
        refuse_or_jump(&mut e, fam, farm, &format!("policy-{kind}-{}", p.name), extra);
        rules.push(rule(fam, chain, &mut e));
    }
    let ttl = Some(u64::from(farm.limits_ttl.max(1)) * 1000);
    if let Some(rate) = farm.new_rtlimit.filter(|r| r.count > 0) {
        farm_and_client(&mut e, fam);
        e.push(Expr::Dynset {
            set: new_rtlimit_set(&rate, farm.new_rtlimit_burst),
            op: DynsetOp::Add,
            sreg_key: reg::R1,
            sreg_data: None,
            timeout_ms: ttl,
            exprs: vec![limit(rate, farm.new_rtlimit_burst)],
        });
        refuse_or_jump(&mut e, fam, farm, "new-rtlimit", extra);
        rules.push(rule(fam, chain, &mut e));
    }
    if farm.est_connlimit > 0 {
        farm_and_client(&mut e, fam);
        e.push(Expr::Dynset {
            set: est_connlimit_set(farm.est_connlimit),
            op: DynsetOp::Add,
            sreg_key: reg::R1,
            sreg_data: None,
            timeout_ms: None,
            exprs: vec![Expr::Connlimit {
                count: farm.est_connlimit,
                over: true,
            }],
        });
        refuse_or_jump(&mut e, fam, farm, "est-connlimit", extra);
        rules.push(rule(fam, chain, &mut e));
    }
}

/// The conntrack helper objects a farm needs: (object name, kernel helper, layer-4 protocol).
fn helpers(farm: &Farm) -> Vec<(String, &'static str, u8)> {
    let helper = match farm.helper {
        Helper::None => return Vec::new(),
        Helper::Ftp => "ftp",
        Helper::Pptp => "pptp",
        Helper::Sip => "sip",
        Helper::Snmp => "snmp",
        Helper::Tftp => "tftp",
    };
    farm.protocol
        .numbers()
        .iter()
        .filter_map(|p| match p {
            6 => Some(("tcp", 6)),
            17 => Some(("udp", 17)),
            _ => None,
        })
        .map(|(name, n)| (helper_obj(helper, name), helper, n))
        .collect()
}

fn farm_rules(
    fam: IpFamily,
    farm: &Farm,
    fa: &FarmAlloc,
    policies: &[&Policy],
    extra: &mut Vec<ChainDef>,
) -> Vec<Rule> {
    let chain = farm_chain(&farm.name);
    let mut rules = Vec::new();
    let mut e = Exprs::new();
    e.push(Expr::immediate(reg::R1, mark(farm_tag(fa.id))))
        .set_ct_mark(reg::R1);
    rules.push(rule(fam, &chain, &mut e));
    if farm.log.contains(&LogPoint::Input) {
        // Every new connection of the farm, as nftlb's `IN-<farm>` log.
        let prefix = farm.log_prefix.clone().unwrap_or_default();
        farm_log(&mut e, farm, format!("{prefix}IN-{} ", farm.name));
        rules.push(rule(fam, &chain, &mut e));
    }
    security_rules(fam, farm, policies, &chain, &mut rules, extra);
    // Conntrack helpers: expected related connections (FTP data, …) follow, NATed alike.
    for (name, _, l4) in helpers(farm) {
        e.push(Expr::meta(NFT_META_L4PROTO, reg::R1))
            .push(Expr::cmp(reg::R1, CmpOp::Eq, vec![l4]))
            .push(Expr::Objref {
                obj_type: NFT_OBJECT_CT_HELPER,
                name,
            });
        rules.push(rule(fam, &chain, &mut e));
    }
    if farm.mode == Mode::Local {
        // Served by a local process: claim the connection, no address translation.
        e.push(Expr::verdict(Verdict::Accept));
        rules.push(rule(fam, &chain, &mut e));
        return rules;
    }
    let keys = &farm.persistence;
    let ttl = Some(farm.persist_ttl);
    if !keys.is_empty() {
        // A known client goes back to its backend while that backend keeps clients.
        e.ether_dependency(keys)
            .persist_key(fam, keys)
            .push(Expr::map(&persist_set(keys), reg::R1, reg::R1))
            .set_ct_mark(reg::R1);
        rules.push(rule(fam, &chain, &mut e));
        e.ether_dependency(keys)
            .ct_mark(reg::R1)
            .push(Expr::lookup(SET_LIVE, reg::R1))
            .persist_op(fam, keys, DynsetOp::Update, ttl)
            .goto(CHAIN_TO_BACKEND);
        rules.push(rule(fam, &chain, &mut e));
        // Its backend is gone: forget the session so the new choice is remembered.
        e.ether_dependency(keys)
            .ct_mark(reg::R1)
            .mask(reg::R1, MEMBER_MASK)
            .push(Expr::cmp(reg::R1, CmpOp::Neq, vec![0; 4]))
            .persist_op(fam, keys, DynsetOp::Delete, None);
        rules.push(rule(fam, &chain, &mut e));
    }
    let slots = fa.slots(fam.is_v6()).len() as u32;
    if slots > 0 {
        let modulus = slots;
        let offset = slot_base(fa.id);
        match farm.scheduler {
            Scheduler::Rr | Scheduler::Weight => {
                e.push(Expr::Numgen {
                    dreg: reg::R1,
                    modulus,
                    random: farm.scheduler == Scheduler::Weight,
                    offset,
                });
            }
            Scheduler::Hash => {
                let fields = farm.hash_fields();
                e.ether_dependency(&fields);
                let words = e.key_fields(fam, &fields, 0);
                // A single field hashes its own length; a concatenation its padded registers.
                let len = match fields.as_slice() {
                    [one] => key_type(fam, *one).byte_len(),
                    _ => words * 4,
                };
                e.push(Expr::Jhash {
                    sreg: reg::R1,
                    dreg: reg::R1,
                    len,
                    modulus,
                    seed: Some(0),
                    offset,
                });
            }
            Scheduler::Symhash => {
                e.push(Expr::Symhash {
                    dreg: reg::R1,
                    modulus,
                    offset,
                });
            }
        }
        e.push(Expr::map(&slots_set(shard_of(fa.id)), reg::R1, reg::R1))
            .set_ct_mark(reg::R1);
        if !keys.is_empty() {
            e.ether_dependency(keys)
                .persist_op(fam, keys, DynsetOp::Update, ttl);
        }
        e.goto(CHAIN_TO_BACKEND);
        rules.push(rule(fam, &chain, &mut e));
    }
    // No backend takes new connections.
    e.push(Expr::verdict(Verdict::Drop));
    rules.push(rule(fam, &chain, &mut e));
    rules
}

fn push(part: &mut FarmPart, set: &str, e: SetElem) {
    part.elems.entry(set.to_string()).or_default().push(e);
}

fn policy_in(p: &Policy, fam: IpFamily) -> bool {
    (p.family == PolicyFamily::Ipv6) == fam.is_v6()
}

/// The policies a farm attaches, in its order (validation made sure they exist).
fn attached<'a>(farm: &Farm, policies: &'a [Policy]) -> Vec<&'a Policy> {
    farm.policies
        .iter()
        .filter_map(|n| policies.iter().find(|p| p.name == *n))
        .collect()
}

/// A policy's set: addresses, CIDRs and ranges as intervals, each with a counter.
fn policy_map(fam: IpFamily, p: &Policy) -> Set {
    let mut s = Set::new(
        fam.family(),
        TABLE,
        &policy_set(&p.name),
        TypeSpec::of(fam.addr_type()),
    )
    .with_flags(NFT_SET_INTERVAL);
    s.exprs = vec![Expr::counter()];
    s
}

/// A policy's elements (merged: the kernel refuses overlapping or touching intervals).
pub fn policy_part(fam: IpFamily, p: &Policy) -> Option<FarmPart> {
    if !policy_in(p, fam) {
        return None;
    }
    let mut ranges: Vec<(u128, u128)> = p
        .elements
        .iter()
        .filter_map(|e| crate::model::parse_policy_element(p.family, e).ok())
        .map(|(a, b)| (ip_num(&a), ip_num(&b)))
        .collect();
    ranges.sort();
    let mut merged: Vec<(u128, u128)> = Vec::new();
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let width = if fam.is_v6() { 16 } else { 4 };
    let bytes = |n: u128| n.to_be_bytes()[16 - width..].to_vec();
    let elems = merged
        .iter()
        .flat_map(|(a, b)| SetElem::range(&bytes(*a), &bytes(*b), None))
        .collect();
    Some(FarmPart {
        chain: None,
        extra: Vec::new(),
        elems: BTreeMap::from([(policy_set(&p.name), elems)]),
    })
}

fn ip_num(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

fn limit_set(fam: IpFamily, name: &str, timeout: bool) -> Set {
    let mut s = Set::new(
        fam.family(),
        TABLE,
        name,
        TypeSpec::concat(&[DataType::Mark, fam.addr_type()]),
    )
    .with_flags(NFT_SET_EVAL | if timeout { NFT_SET_TIMEOUT } else { 0 });
    s.size = Some(LIMIT_SIZE);
    s
}

fn farm_part(fam: IpFamily, farm: &Farm, fa: &FarmAlloc, policies: &[Policy]) -> FarmPart {
    let f = fam.family();
    let chain = farm_chain(&farm.name);
    let mut extra = Vec::new();
    let rules = farm_rules(fam, farm, fa, &attached(farm, policies), &mut extra);
    if farm.log.contains(&LogPoint::Forward) && farm.mode != Mode::Local {
        // Packets of the farm's connections that the balancer forwards, both ways.
        let name = forward_log_chain(&farm.name);
        let prefix = farm.log_prefix.clone().unwrap_or_default();
        let mut e = Exprs::new();
        farm_log(&mut e, farm, format!("{prefix}FWD-{} ", farm.name));
        extra.push(ChainDef {
            chain: Chain::regular(f, TABLE, &name),
            rules: vec![rule(fam, &name, &mut e)],
        });
    }
    let mut part = FarmPart {
        chain: Some(ChainDef {
            chain: Chain::regular(f, TABLE, &chain),
            rules,
        }),
        extra,
        elems: BTreeMap::new(),
    };
    if farm.log.contains(&LogPoint::Forward) && farm.mode != Mode::Local {
        let jump = Data::Verdict(Verdict::Jump(forward_log_chain(&farm.name)));
        push(
            &mut part,
            SET_FORWARD_LOG,
            SetElem::mapping(mark(farm_tag(fa.id)), jump),
        );
    }
    // Single ports: elements of the exact dispatch map. Ranges go to the `ports-` chains.
    for (proto, vip, lo, hi) in dispatch_claims(fam, farm) {
        if lo == hi {
            let key = concat(&[&[proto], &octets(&vip), &lo.to_be_bytes()]);
            let verdict = Data::Verdict(Verdict::Goto(chain.clone()));
            if farm.intra_connect {
                push(
                    &mut part,
                    SET_SERVICES_LOCAL,
                    SetElem::mapping(key.clone(), verdict.clone()),
                );
            }
            if farm.tcp_strict && proto == 6 {
                push(&mut part, SET_STRICT_SERVICES, SetElem::key(key.clone()));
            }
            push(&mut part, SET_SERVICES, SetElem::mapping(key, verdict));
        }
    }
    if let Some(rate) = farm.rst_rtlimit.filter(|r| r.count > 0) {
        let chain = rst_rtlimit_name(&rate, farm.rst_rtlimit_burst, farm.limits_ttl);
        let jump = Data::Verdict(Verdict::Jump(chain));
        push(
            &mut part,
            SET_RST_LIMITS,
            SetElem::mapping(mark(farm_tag(fa.id)), jump),
        );
    }
    if farm.mode == Mode::Local {
        return part;
    }
    let base = slot_base(fa.id);
    let shard = slots_set(shard_of(fa.id));
    for (i, member) in fa.slots(fam.is_v6()).iter().enumerate() {
        let key = mark(base + i as u32);
        let data = Data::Value(mark(backend_id(fa.id, *member)));
        push(&mut part, &shard, SetElem::mapping(key, data));
    }
    for b in farm.backends.iter().filter(|b| fam.has(&b.ip_addr)) {
        let Some(member) = fa.members.get(&b.name) else {
            continue;
        };
        let id = mark(backend_id(fa.id, *member));
        let addr = octets(&b.ip_addr);
        match b.port {
            Some(p) => push(
                &mut part,
                SET_TARGETS_ADDR_PORT,
                SetElem::mapping(id.clone(), Data::Value(concat(&[&addr, &p.to_be_bytes()]))),
            ),
            None => push(
                &mut part,
                SET_TARGETS_ADDR,
                SetElem::mapping(id.clone(), Data::Value(addr)),
            ),
        }
        if farm.mode == Mode::Snat {
            match b.source_addr.or(farm.source_addr) {
                Some(src) => push(
                    &mut part,
                    SET_SNAT,
                    SetElem::mapping(id.clone(), Data::Value(octets(&src))),
                ),
                None => push(&mut part, SET_MASQ, SetElem::key(id.clone())),
            }
        }
        if let Some(m) = b.mark.or(farm.mark) {
            push(
                &mut part,
                SET_USER_MARKS,
                SetElem::mapping(id.clone(), Data::Value(mark(m.0))),
            );
        }
        if !farm.persistence.is_empty() && keeps_clients(b) {
            push(&mut part, SET_LIVE, SetElem::key(id.clone()));
        }
        if b.est_connlimit > 0 {
            let jump = Data::Verdict(Verdict::Jump(climit_chain(b.est_connlimit)));
            push(&mut part, SET_BACKEND_LIMITS, SetElem::mapping(id, jump));
        }
    }
    // Static sessions: persistence entries without a timeout.
    let by_name: HashMap<&str, &Backend> = if farm.sessions.is_empty() {
        HashMap::new()
    } else {
        farm.backends.iter().map(|b| (b.name.as_str(), b)).collect()
    };
    for s in &farm.sessions {
        let (Some(b), Ok(values)) = (
            by_name.get(s.backend.as_str()).copied(),
            parse_session_client(&farm.persistence, &s.client),
        ) else {
            continue;
        };
        let Some(member) = fa.members.get(&b.name) else {
            continue;
        };
        let in_family = values
            .iter()
            .all(|v| !matches!(v, KeyValue::Ip(ip) if !fam.has(ip)));
        if !in_family || !fam.has(&b.ip_addr) {
            continue;
        }
        let data = Data::Value(mark(backend_id(fa.id, *member)));
        let key = super::sessions::encode_key(fa.id, &values);
        push(
            &mut part,
            &persist_set(&farm.persistence),
            SetElem::mapping(key, data),
        );
    }
    part
}

/// The services a farm takes in this family: (protocol, address, first port, last port). A farm
/// that is not up takes none; an empty port list is every port, 0-65535.
pub fn dispatch_claims(fam: IpFamily, farm: &Farm) -> Vec<(u8, IpAddr, u16, u16)> {
    if farm.state != FarmState::Up || super::l2::is_l2(farm) {
        return Vec::new();
    }
    let ports = crate::model::parse_ports(&farm.virtual_ports).unwrap_or_default();
    let ranges: Vec<(u16, u16)> = if ports.is_empty() {
        vec![(0, 65535)]
    } else {
        ports.iter().map(|r| (r.first, r.last)).collect()
    };
    let mut out = Vec::new();
    for proto in farm.protocol.numbers() {
        for vip in farm.virtual_addresses.iter().filter(|ip| fam.has(ip)) {
            out.extend(ranges.iter().map(|(lo, hi)| (*proto, *vip, *lo, *hi)));
        }
    }
    out
}

/// A farm's port range on one protocol and address: (farm, first, last, intra-connect,
/// tcp-strict).
pub type RangeClaim<'a> = (&'a str, u16, u16, bool, bool);

/// The port-range dispatch of one protocol and address, from its range claims (farm, first,
/// last); `None` when there is none. A chain of one rule per range, sorted, and the element of
/// `service-addrs` that leads to it.
pub fn ports_part(fam: IpFamily, proto: u8, vip: &IpAddr, claims: &[RangeClaim]) -> Option<FarmPart> {
    if claims.is_empty() {
        return None;
    }
    let name = ports_chain(proto, vip);
    let mut sorted = claims.to_vec();
    sorted.sort_by_key(|c| c.1);
    let mut e = Exprs::new();
    let rules = sorted
        .iter()
        .map(|(farm, lo, hi, _, _)| {
            if (*lo, *hi) != (0, 65535) {
                e.push(Expr::payload(PayloadField::ThDport, reg::R1))
                    .push(Expr::Range {
                        sreg: reg::R1,
                        op: CmpOp::Eq,
                        from: lo.to_be_bytes().to_vec(),
                        to: hi.to_be_bytes().to_vec(),
                    });
            }
            e.goto(&farm_chain(farm));
            rule(fam, &name, &mut e)
        })
        .collect();
    let key = concat(&[&[proto], &octets(vip)]);
    let elem = SetElem::mapping(key.clone(), Data::Verdict(Verdict::Goto(name.clone())));
    let mut elems = BTreeMap::from([(SET_SERVICE_ADDRS.to_string(), vec![elem.clone()])]);
    // Connections from the balancer itself reach this address's ranges when a farm on it asks.
    if claims.iter().any(|c| c.3) {
        elems.insert(SET_SERVICE_ADDRS_LOCAL.to_string(), vec![elem]);
    }
    if proto == 6 && claims.iter().any(|c| c.4) {
        elems.insert(SET_STRICT_ADDRS.to_string(), vec![SetElem::key(key.clone())]);
    }
    Some(FarmPart {
        chain: Some(ChainDef {
            chain: Chain::regular(fam.family(), TABLE, &name),
            rules,
        }),
        extra: Vec::new(),
        elems,
    })
}

/// The port-range dispatch parts of every address the given farms take ranges on.
pub fn ports_parts<'a>(fam: IpFamily, farms: impl Iterator<Item = &'a Farm>) -> BTreeMap<String, FarmPart> {
    let mut claims: BTreeMap<(u8, IpAddr), Vec<RangeClaim>> = BTreeMap::new();
    for farm in farms {
        for (proto, vip, lo, hi) in dispatch_claims(fam, farm) {
            if lo != hi {
                claims.entry((proto, vip)).or_default().push((
                    farm.name.as_str(),
                    lo,
                    hi,
                    farm.intra_connect,
                    farm.tcp_strict,
                ));
            }
        }
    }
    claims
        .iter()
        .filter_map(|((proto, vip), c)| {
            ports_part(fam, *proto, vip, c).map(|p| (ports_chain(*proto, vip), p))
        })
        .collect()
}

/// The chain that refuses new connections to backends that have `n` established ones.
pub fn climit_part(fam: IpFamily, n: u32) -> FarmPart {
    let name = climit_chain(n);
    let mut e = Exprs::new();
    e.ct_mark(reg::R1)
        .push(Expr::Dynset {
            set: backend_conns_set(n),
            op: DynsetOp::Add,
            sreg_key: reg::R1,
            sreg_data: None,
            timeout_ms: None,
            exprs: vec![Expr::Connlimit { count: n, over: true }],
        })
        .push(Expr::verdict(Verdict::Drop));
    FarmPart {
        chain: Some(ChainDef {
            chain: Chain::regular(fam.family(), TABLE, &name),
            rules: vec![rule(fam, &name, &mut e)],
        }),
        extra: Vec::new(),
        elems: BTreeMap::new(),
    }
}

/// How many backends of the farms use each `est-connlimit` value in this family.
pub fn climit_users<'a>(fam: IpFamily, farms: impl Iterator<Item = &'a Farm>) -> BTreeMap<u32, usize> {
    let mut m = BTreeMap::new();
    for f in farms.filter(|f| farm_uses(f, fam) && f.mode != Mode::Local) {
        for b in f
            .backends
            .iter()
            .filter(|b| b.est_connlimit > 0 && fam.has(&b.ip_addr))
        {
            *m.entry(b.est_connlimit).or_default() += 1;
        }
    }
    m
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
    for farm in config.farms.iter().filter(|f| farm_uses(f, fam)) {
        let Some(fa) = alloc.farms.get(&farm.name) else {
            continue;
        };
        used = true;
        if farm.mode != Mode::Local {
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
pub fn render_farm(fam: IpFamily, farm: &Farm, alloc: &Allocation, policies: &[Policy]) -> Option<FarmPart> {
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
