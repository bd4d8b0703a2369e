//! What rendering builds up: the table in the making (what the farms add, what the shared part
//! needs), and the context every rule of one farm is made from.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::model::Farm;
use crate::netlink::consts::reg;
use crate::netlink::{DynsetOp, Expr, Family, PayloadField, Rule, Set, SetElem};

use super::super::alloc::FarmAlloc;
use super::super::family::IpFamily;
use super::super::layout::{TABLE, backend_traffic_set, slot_base};
use super::super::ruleset::FarmPart;
use super::exprs::{fwd, set_ether};
use super::facts::Resolved;

pub(super) const F: Family = Family::Netdev;

/// The MAC each dsr backend was resolved to (farm, backend → MAC): its traffic is counted under
/// it, so reading the count must not resolve again.
pub type BackendMacs = BTreeMap<(String, String), [u8; 6]>;

/// (replies?, protocol, address): what a range chain dispatches.
pub(super) type RangeKey = (bool, u8, IpAddr);

/// The table being built: what the farms add, and what the shared part needs.
#[derive(Default)]
pub(super) struct Draft {
    pub sets: BTreeMap<String, Set>,
    pub farms: BTreeMap<String, FarmPart>,
    /// The farms' named counters.
    pub counters: Vec<String>,
    /// Client and reply dispatch of single ports, by family.
    pub services: BTreeMap<IpFamily, Vec<SetElem>>,
    pub returns: BTreeMap<IpFamily, Vec<SetElem>>,
    /// Client and reply dispatch of port ranges (address → range chain), by family.
    pub service_addrs: BTreeMap<IpFamily, Vec<SetElem>>,
    pub return_addrs: BTreeMap<IpFamily, Vec<SetElem>>,
    /// Devices whose ingress dispatches clients' packets, and devices that take backends'
    /// replies, with the families they see.
    pub in_devs: BTreeSet<(String, IpFamily)>,
    pub back_devs: BTreeSet<(String, IpFamily)>,
    /// The families that need each memory.
    pub needs_flows: BTreeSet<IpFamily>,
    pub needs_stl_flows: BTreeSet<IpFamily>,
    pub needs_stl_ports: BTreeSet<IpFamily>,
    /// Port ranges: (first, last, target chain).
    pub ranges: BTreeMap<RangeKey, Vec<(u16, u16, String)>>,
    /// Policies some farm attaches: their sets are copied into this table.
    pub used_policies: BTreeSet<String>,
    pub macs: BackendMacs,
}

/// What every rule of a farm is made from.
pub(super) struct FarmCtx<'a> {
    pub farm: &'a Farm,
    pub fa: &'a FarmAlloc,
    pub res: &'a Resolved,
    /// The farm's family (its addresses').
    pub fam: IpFamily,
    /// The farm's first address (stateless DNAT farms have only this one).
    pub vip: IpAddr,
    pub stateless: bool,
    pub chain: String,
    /// The shard's slot map.
    pub shard: String,
    /// Number of scheduling slots (0: no backend takes new flows).
    pub slots: u32,
}

impl FarmCtx<'_> {
    /// A rule of the farm's chain made of `e` (which is left empty for the next rule).
    pub fn rule(&self, e: &mut Vec<Expr>) -> Rule {
        Rule::new(F, TABLE, &self.chain, std::mem::take(e))
    }

    /// The first slot of the farm in its shard's map.
    pub fn base(&self) -> u32 {
        slot_base(self.fa.id)
    }

    /// What the datapath knows the chosen backend by: the MAC (dsr) or address (stlsdnat) it
    /// wrote into the packet.
    pub fn backend_key(&self) -> PayloadField {
        if self.stateless {
            self.fam.daddr()
        } else {
            PayloadField::EtherDaddr
        }
    }

    /// Counts the packet for the backend whose MAC or address is in `key`: an update, not a
    /// lookup (a key not there yet is added, with the set's counter, and the packet goes on).
    pub fn count_backend(&self, e: &mut Vec<Expr>, key: PayloadField) {
        e.push(Expr::payload(key, reg::R1));
        e.push(Expr::Dynset {
            set: backend_traffic_set(self.fa.id),
            op: DynsetOp::Update,
            sreg_key: reg::R1,
            sreg_data: None,
            timeout_ms: None,
            exprs: Vec::new(),
        });
    }

    /// `ether saddr set <oface's MAC>`, count for the backend, `fwd to <oface>`.
    pub fn send(&self, e: &mut Vec<Expr>) {
        self.count_backend(e, self.backend_key());
        fwd(e, self.res.output.index);
    }

    /// `ether saddr set <oface's MAC>`.
    pub fn set_source_mac(&self, e: &mut Vec<Expr>) {
        e.push(Expr::immediate(reg::R1, self.res.output.mac.to_vec()));
        set_ether(e, 6, reg::R1);
    }
}
