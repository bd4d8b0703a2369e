//! The whole `netdev nftlbd` table: the farms' parts, then what they share (dispatch maps and
//! chains, the ingress chain of each device, the memories, copies of the policies' sets).

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Config, Policy, PolicyFamily};
use crate::netlink::consts::reg;
use crate::netlink::sys::*;
use crate::netlink::types::concat;
use crate::netlink::{
    Chain, ChainType, CmpOp, Data, DataType, Expr, Hook, HookPoint, PayloadField, Rule, Set, SetElem,
    TypeSpec, Verdict,
};

use super::super::alloc::Allocation;
use super::super::family::IpFamily;
use super::super::layout::{
    SET_L2_FLOWS, SET_L2_RETURN_ADDRS, SET_L2_RETURNS, SET_L2_SERVICE_ADDRS, SET_L2_SERVICES, STL_CLIENTS,
    STL_FLOWS, STL_MACS, STL_PORTS, TABLE, ingress_chain, is_l2, l2_ports_chain, policy_set,
};
use super::super::render::{policy_map_in, policy_part};
use super::super::ruleset::{ChainDef, FamilyState, FarmPart};
use super::draft::{BackendMacs, Draft, F};
use super::exprs::*;
use super::facts::{HostFacts, resolve};
use super::{farm, sets};

/// The `netdev` table of the layer-2 farms (`None` when no farm renders), and the backend MACs
/// it was made with. A farm the facts do not resolve is left out: validation names its problem,
/// and a farm whose interface or neighbour went away comes back when they do.
pub fn render(config: &Config, alloc: &Allocation, facts: &HostFacts) -> (Option<FamilyState>, BackendMacs) {
    let mut t = Draft::default();
    for f in config.farms.iter().filter(|f| is_l2(f)) {
        let (Some(fa), Ok(res)) = (alloc.farms.get(&f.name), resolve(f, facts)) else {
            continue;
        };
        farm::add_farm(&mut t, f, fa, &res, &config.policies);
    }
    if t.farms.is_empty() {
        return (None, t.macs);
    }
    let mut shared = range_chains(&mut t);
    let shared_elems = shared_sets(&mut t);
    let chains = ingress_chains(&t);
    copy_policies(&mut t, &config.policies, &mut shared);
    shared.insert(
        SET_L2_SERVICES.to_string(),
        FarmPart {
            chain: None,
            extra: Vec::new(),
            elems: shared_elems,
        },
    );
    let objs = t.counters.iter().map(|n| (n.clone(), sets::counter(n))).collect();
    let state = FamilyState {
        table: crate::netlink::Table::new(F, TABLE),
        sets: std::mem::take(&mut t.sets),
        objs,
        chains,
        shared,
        farms: std::mem::take(&mut t.farms),
    };
    (Some(state), t.macs)
}

/// Port-range dispatch: protocol . address → a chain of `th dport|sport A-B goto …` rules. The
/// chains, by name; their elements go to the `…-addrs` dispatch maps.
fn range_chains(t: &mut Draft) -> BTreeMap<String, FarmPart> {
    let mut parts = BTreeMap::new();
    for ((back, proto, addr), mut claims) in std::mem::take(&mut t.ranges) {
        claims.sort();
        let fam = family_of(addr);
        let name = l2_ports_chain(back, proto, &addr);
        let field = if back {
            PayloadField::ThSport
        } else {
            PayloadField::ThDport
        };
        let rules = claims
            .iter()
            .map(|(lo, hi, target)| {
                let mut e = Vec::new();
                fam.dependency(&mut e);
                if (*lo, *hi) != (0, 65535) {
                    e.push(Expr::payload(field, reg::R1));
                    e.push(Expr::Range {
                        sreg: reg::R1,
                        op: CmpOp::Eq,
                        from: lo.to_be_bytes().to_vec(),
                        to: hi.to_be_bytes().to_vec(),
                    });
                }
                e.push(Expr::verdict(Verdict::Goto(target.clone())));
                Rule::new(F, TABLE, &name, e)
            })
            .collect();
        let elem = SetElem::mapping(
            concat(&[&[proto], &octets(addr)]),
            Data::Verdict(Verdict::Goto(name.clone())),
        );
        if back {
            t.return_addrs.entry(fam).or_default().push(elem);
        } else {
            t.service_addrs.entry(fam).or_default().push(elem);
        }
        parts.insert(
            name.clone(),
            FarmPart {
                chain: Some(ChainDef {
                    chain: Chain::regular(F, TABLE, &name),
                    rules,
                }),
                extra: Vec::new(),
                elems: BTreeMap::new(),
            },
        );
    }
    parts
}

/// The dispatch maps and memories the farms need, per family; their shared elements.
fn shared_sets(t: &mut Draft) -> BTreeMap<String, Vec<SetElem>> {
    let families_in: BTreeSet<IpFamily> = t.in_devs.iter().map(|(_, f)| *f).collect();
    let families_back: BTreeSet<IpFamily> = t.back_devs.iter().map(|(_, f)| *f).collect();
    let mut elems = BTreeMap::new();
    for fam in IpFamily::BOTH {
        let addr = fam.addr_type();
        let addr_type = TypeSpec::concat(&[DataType::InetProto, addr]);
        let service_type = TypeSpec::concat(&[DataType::InetProto, addr, DataType::InetService]);
        let flow_type = TypeSpec::concat(&[addr, addr, DataType::InetService]);
        let mut add = |name: String, set: Set| t.sets.insert(name, set);
        if families_in.contains(&fam) {
            for (name, key) in [
                (SET_L2_SERVICE_ADDRS, &addr_type),
                (SET_L2_SERVICES, &service_type),
            ] {
                add(fam.name(name), sets::verdict_map(&fam.name(name), key.clone()));
            }
            elems.insert(
                fam.name(SET_L2_SERVICES),
                t.services.remove(&fam).unwrap_or_default(),
            );
            elems.insert(
                fam.name(SET_L2_SERVICE_ADDRS),
                t.service_addrs.remove(&fam).unwrap_or_default(),
            );
        }
        if families_back.contains(&fam) {
            for (name, key) in [(SET_L2_RETURN_ADDRS, &addr_type), (SET_L2_RETURNS, &service_type)] {
                add(fam.name(name), sets::verdict_map(&fam.name(name), key.clone()));
            }
            elems.insert(
                fam.name(SET_L2_RETURNS),
                t.returns.remove(&fam).unwrap_or_default(),
            );
            elems.insert(
                fam.name(SET_L2_RETURN_ADDRS),
                t.return_addrs.remove(&fam).unwrap_or_default(),
            );
            let macs = fam.name(STL_MACS);
            add(macs.clone(), sets::addr_map(&macs, fam, DataType::EtherAddr));
            let clients = fam.name(STL_CLIENTS);
            add(
                clients.clone(),
                sets::memory(&clients, TypeSpec::of(addr), DataType::EtherAddr),
            );
        }
        if t.needs_stl_ports.contains(&fam) {
            let name = fam.name(STL_PORTS);
            add(name.clone(), sets::addr_map(&name, fam, DataType::InetService));
        }
        if t.needs_stl_flows.contains(&fam) {
            let name = fam.name(STL_FLOWS);
            add(name.clone(), sets::memory(&name, flow_type.clone(), addr));
        }
        if t.needs_flows.contains(&fam) {
            let name = fam.name(SET_L2_FLOWS);
            add(name.clone(), sets::memory(&name, flow_type, DataType::EtherAddr));
        }
    }
    elems
}

/// One ingress chain per device: client dispatch where farms listen, reply dispatch where
/// stateless farms' backends answer; per family the device sees.
fn ingress_chains(t: &Draft) -> Vec<ChainDef> {
    let devs: BTreeSet<&String> = t.in_devs.iter().chain(&t.back_devs).map(|(d, _)| d).collect();
    let mut chains = Vec::new();
    for dev in devs {
        let name = ingress_chain(dev);
        let mut rules = Vec::new();
        for fam in IpFamily::BOTH {
            let key = (dev.clone(), fam);
            if t.in_devs.contains(&key) {
                let d = (
                    SET_L2_SERVICES,
                    SET_L2_SERVICE_ADDRS,
                    fam.daddr(),
                    PayloadField::ThDport,
                );
                rules.extend(dispatch_rules(&name, fam, d));
            }
            if t.back_devs.contains(&key) {
                let d = (
                    SET_L2_RETURNS,
                    SET_L2_RETURN_ADDRS,
                    fam.saddr(),
                    PayloadField::ThSport,
                );
                rules.extend(dispatch_rules(&name, fam, d));
            }
        }
        let hook = Hook {
            point: HookPoint::Ingress,
            priority: 101,
            device: Some(dev.clone()),
        };
        chains.push(ChainDef {
            chain: Chain::base(F, TABLE, &name, ChainType::Filter, hook, Verdict::Accept),
            rules,
        });
    }
    chains
}

/// The two dispatch rules of one direction: (map of exact ports, map of ranged addresses,
/// address field, port field).
fn dispatch_rules(
    chain: &str,
    fam: IpFamily,
    (exact, ranged, addr, port): (&str, &str, PayloadField, PayloadField),
) -> [Rule; 2] {
    let w = fam.words();
    let mut e = Vec::new();
    fam.dependency(&mut e);
    e.push(Expr::meta(NFT_META_L4PROTO, reg::R1));
    e.push(Expr::payload(addr, reg::r32(1)));
    e.push(Expr::payload(port, reg::r32(1 + w)));
    e.push(Expr::map(&fam.name(exact), reg::R1, reg::VERDICT));
    let by_port = Rule::new(F, TABLE, chain, e);
    let mut e = Vec::new();
    fam.dependency(&mut e);
    e.push(Expr::meta(NFT_META_L4PROTO, reg::R1));
    e.push(Expr::payload(addr, reg::r32(1)));
    e.push(Expr::map(&fam.name(ranged), reg::R1, reg::VERDICT));
    [by_port, Rule::new(F, TABLE, chain, e)]
}

/// A copy of each policy some layer-2 farm attaches: its set and its elements.
fn copy_policies(
    t: &mut Draft,
    policies: &crate::model::List<Policy>,
    shared: &mut BTreeMap<String, FarmPart>,
) {
    for p in policies.iter().filter(|p| t.used_policies.contains(&p.name)) {
        let fam = if p.family == PolicyFamily::Ipv6 {
            IpFamily::V6
        } else {
            IpFamily::V4
        };
        let set = policy_set(&p.name);
        t.sets.insert(set.clone(), policy_map_in(F, p));
        if let Some(part) = policy_part(fam, p) {
            shared.insert(set, part);
        }
    }
}
