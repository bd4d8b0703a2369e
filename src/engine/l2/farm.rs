//! One layer-2 farm's part of the table: its chain (policies, log, counting, then the mode's
//! rules), its slot elements and what it adds to the shared dispatch.

use std::collections::BTreeMap;

use crate::model::{
    Backend, Farm, FarmState, LogPoint, Mode, Policy, PolicyFamily, PolicyType, VerdictAction,
};
use crate::netlink::consts::reg;
use crate::netlink::sys::*;
use crate::netlink::types::concat;
use crate::netlink::*;

use super::super::alloc::FarmAlloc;
use super::super::layout::{
    TABLE, backend_traffic_set, l2_counter, l2_farm_chain, l2_slots, policy_refusal, policy_set, shard_of,
    stl_slots,
};
use super::super::render::{attached, log_prefix};
use super::super::ruleset::{ChainDef, FarmPart};
use super::draft::{Draft, F, FarmCtx};
use super::exprs::*;
use super::facts::Resolved;
use super::{dsr, sets, stl};

/// Adds one farm (resolved as `res`) to the table.
pub(super) fn add_farm(
    t: &mut Draft,
    farm: &Farm,
    fa: &FarmAlloc,
    res: &Resolved,
    policies: &crate::model::List<Policy>,
) {
    for (b, mac) in &res.macs {
        t.macs.insert((farm.name.clone(), b.clone()), *mac);
    }
    let Some(vip) = farm.virtual_addresses.first().copied() else {
        return;
    };
    let fam = family_of(vip);
    let stateless = farm.mode == Mode::Stlsdnat;
    let shard = if stateless {
        stl_slots(fam.is_v6(), shard_of(fa.id))
    } else {
        l2_slots(shard_of(fa.id))
    };
    t.sets.entry(shard.clone()).or_insert_with(|| {
        if stateless {
            sets::slot_map(&shard, fam.addr_type(), fam.daddr())
        } else {
            sets::slot_map(&shard, DataType::EtherAddr, PayloadField::EtherDaddr)
        }
    });
    t.in_devs.insert((res.iface.clone(), fam));
    let ctx = FarmCtx {
        farm,
        fa,
        res,
        fam,
        vip,
        stateless,
        chain: l2_farm_chain(&farm.name),
        shard,
        slots: fa.slots(fam.is_v6()).len() as u32,
    };
    let mut rules = policy_rules(&ctx, policies, t);
    rules.extend(log_rule(&ctx));
    rules.extend(count_rule(&ctx, t));
    let mut extra = Vec::new();
    if ctx.slots > 0 && !stateless {
        rules.extend(dsr::rules(&ctx, t));
    }
    if ctx.slots > 0 && stateless {
        let (r, back) = stl::rules(&ctx, t);
        rules.extend(r);
        extra.push(back);
    }
    rules.push(Rule::new(
        F,
        TABLE,
        &ctx.chain,
        vec![Expr::verdict(Verdict::Drop)],
    ));
    let mut part = FarmPart {
        chain: Some(ChainDef {
            chain: Chain::regular(F, TABLE, &ctx.chain),
            rules,
        }),
        extra,
        elems: BTreeMap::from([(ctx.shard.clone(), slot_elems(&ctx))]),
    };
    let ports = farm.virtual_ports.as_slice().to_vec();
    let port_list = every_port_if_none(ports);
    if stateless {
        stl::elems(&ctx, t, &port_list, &mut part);
    }
    if farm.state == FarmState::Up {
        claim_services(&ctx, t, &port_list);
    }
    t.farms.insert(farm.name.clone(), part);
}

/// A farm without ports takes every port: the range 0-65535.
fn every_port_if_none(ports: Vec<crate::model::PortRange>) -> Vec<crate::model::PortRange> {
    if ports.is_empty() {
        vec![crate::model::PortRange {
            first: 0,
            last: 65535,
        }]
    } else {
        ports
    }
}

/// Policies first, in the farm's order, on every client packet (there is no connection state
/// here): a blacklist refuses what it lists, a whitelist what it does not. Each policy of the
/// farm's family has a copy of its set in this table.
fn policy_rules(ctx: &FarmCtx, policies: &crate::model::List<Policy>, t: &mut Draft) -> Vec<Rule> {
    let (farm, fam) = (ctx.farm, ctx.fam);
    let mut rules = Vec::new();
    let mut e = Vec::new();
    for p in attached(farm, policies)
        .into_iter()
        .filter(|p| (p.family == PolicyFamily::Ipv6) == fam.is_v6())
    {
        let set = policy_set(&p.name);
        t.used_policies.insert(p.name.clone());
        let white = p.kind == PolicyType::Whitelist;
        let matches = |e: &mut Vec<Expr>| {
            fam.dependency(e);
            e.push(Expr::payload(fam.saddr(), reg::R1));
            e.push(Expr::Lookup {
                set: set.clone(),
                sreg: reg::R1,
                dreg: None,
                invert: white,
            });
        };
        let kind = policy_refusal(white, &p.name);
        if farm.verdict.contains(&VerdictAction::Log) {
            // The log has a rule of its own, so a rate limit on it cannot spare a drop.
            matches(&mut e);
            let prefix = match &farm.log_prefix {
                None => format!("{kind}-{} ", farm.name),
                Some(_) => log_prefix(farm, &kind, "DROP", format!("{kind} ")),
            };
            farm_log(&mut e, farm, prefix);
            rules.push(ctx.rule(&mut e));
        }
        if farm.verdict.contains(&VerdictAction::Drop) {
            matches(&mut e);
            e.push(Expr::verdict(Verdict::Drop));
            rules.push(ctx.rule(&mut e));
        }
    }
    rules
}

/// What the farm sends out, as nftlb's `OUT-<farm>` log (rate-limited if asked).
fn log_rule(ctx: &FarmCtx) -> Option<Rule> {
    let farm = ctx.farm;
    if !farm.log.contains(&LogPoint::Output) {
        return None;
    }
    let mut e = Vec::new();
    let prefix = log_prefix(farm, "farm", "OUT", format!("OUT-{} ", farm.name));
    farm_log(&mut e, farm, prefix);
    Some(ctx.rule(&mut e))
}

/// Counting every client packet that is balanced (`Farm.Packets`) in the farm's named counter,
/// and the set that counts per backend (see [`FarmCtx::count_backend`]).
fn count_rule(ctx: &FarmCtx, t: &mut Draft) -> Option<Rule> {
    if ctx.slots == 0 {
        return None;
    }
    let counter = l2_counter(ctx.fa.id);
    let mut e = vec![Expr::Objref {
        obj_type: NFT_OBJECT_COUNTER,
        name: counter.clone(),
    }];
    t.counters.push(counter);
    let key = if ctx.stateless {
        ctx.fam.addr_type()
    } else {
        DataType::EtherAddr
    };
    let traffic = backend_traffic_set(ctx.fa.id);
    t.sets.insert(traffic.clone(), sets::traffic_set(&traffic, key));
    Some(ctx.rule(&mut e))
}

/// The farm's slots in its shard's map: slot → backend MAC (dsr) or address (stlsdnat).
fn slot_elems(ctx: &FarmCtx) -> Vec<SetElem> {
    let members: BTreeMap<u16, &Backend> = ctx
        .farm
        .backends
        .iter()
        .filter_map(|b| Some((*ctx.fa.members.get(&b.name)?, b)))
        .collect();
    ctx.fa
        .slots(ctx.fam.is_v6())
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let b = members.get(m)?;
            let data = if ctx.stateless {
                if family_of(b.ip_addr) != ctx.fam {
                    return None;
                }
                octets(b.ip_addr)
            } else {
                ctx.res.macs.get(&b.name)?.to_vec()
            };
            Some(SetElem::mapping(
                (ctx.base() + i as u32).to_ne_bytes().to_vec(),
                Data::Value(data.into()),
            ))
        })
        .collect()
}

/// The client dispatch of the farm's addresses and ports: single ports into `l2-services`,
/// ranges into the addresses' range chains. A stateless farm has one address (its replies are
/// rewritten to it); dsr may have more.
fn claim_services(ctx: &FarmCtx, t: &mut Draft, port_list: &[crate::model::PortRange]) {
    let vips = ctx
        .farm
        .virtual_addresses
        .iter()
        .filter(|a| family_of(**a) == ctx.fam);
    for &vip in vips {
        for proto in ctx.farm.protocol.numbers() {
            for r in port_list {
                if r.first != r.last {
                    t.ranges.entry((false, *proto, vip)).or_default().push((
                        r.first,
                        r.last,
                        ctx.chain.clone(),
                    ));
                    continue;
                }
                let key = concat(&[&[*proto], &octets(vip), &r.first.to_be_bytes()]);
                t.services.entry(ctx.fam).or_default().push(SetElem::mapping(
                    key,
                    Data::Verdict(Verdict::Goto(ctx.chain.clone())),
                ));
            }
        }
    }
}
