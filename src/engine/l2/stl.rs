//! Stateless DNAT: the client's MAC is remembered, the destination address (and with one virtual
//! port, the port) becomes the chosen backend's, the MACs are rewritten and the frame leaves by
//! `oface`. The backends' replies are rewritten back at the ingress of `oface`
//! (`l2-<farm>-back`), with no conntrack entry.
//!
//! nft 1.0.6 cannot list a dynset whose data comes straight from a map lookup (it aborts), so
//! each rule writes the backend address into the packet first, reads it back, and only then
//! updates the memories. Their keys use the farm's one VIP as a constant, since the destination
//! is already rewritten by then; ports and MACs are rewritten last, so key fields on them still
//! see the client's packet. (Each rule names its own IP and Ethernet dependencies so nft can
//! show it.)

use crate::model::{Farm, Mode, PortRange, Protocol, Scheduler};
use crate::netlink::consts::reg;
use crate::netlink::sys::*;
use crate::netlink::types::concat;
use crate::netlink::*;

use super::super::layout::{
    STL_CLIENTS, STL_FLOWS, STL_MACS, STL_PORTS, TABLE, l2_back_chain, l2_counter, l2_persist_set,
};
use super::super::ruleset::{ChainDef, FarmPart};
use super::draft::{Draft, F, FarmCtx};
use super::exprs::*;
use super::sets;

/// The port a stlsdnat farm rewrites to and from (its one port, when a backend has its own),
/// and the offset of the transport checksum to update.
pub fn stl_port_rewrite(farm: &Farm) -> Option<(u16, u32)> {
    if farm.mode != Mode::Stlsdnat || farm.backends.iter().all(|b| b.port.is_none()) {
        return None;
    }
    let ports = &farm.virtual_ports;
    let vport = match ports.as_slice() {
        [r] if r.first == r.last => r.first,
        _ => return None,
    };
    let csum = match farm.protocol {
        Protocol::Tcp => 16,
        Protocol::Udp => 6,
        _ => return None,
    };
    Some((vport, csum))
}

/// The farm chain's rules after counting, and the chain of the replies.
pub(super) fn rules(ctx: &FarmCtx, t: &mut Draft) -> (Vec<Rule>, ChainDef) {
    let per_flow = matches!(ctx.farm.scheduler, Scheduler::Rr | Scheduler::Weight);
    let mut rules = vec![learn_client(ctx)];
    if per_flow {
        rules.push(known_flow(ctx));
        t.needs_stl_flows.insert(ctx.fam);
    }
    if !ctx.farm.persistence.is_empty() {
        rules.push(known_client(ctx, t, per_flow));
    }
    rules.push(choose(ctx, per_flow));
    let back = back_chain(ctx);
    t.back_devs.insert((ctx.res.oface.clone(), ctx.fam));
    (rules, back)
}

/// Remembers the client's MAC by its address (replies are sent to it).
fn learn_client(ctx: &FarmCtx) -> Rule {
    let fam = ctx.fam;
    let mut e = Vec::new();
    dependencies(&mut e, fam);
    e.push(Expr::payload(fam.saddr(), reg::R1));
    e.push(Expr::payload(PayloadField::EtherSaddr, reg::R2));
    e.push(Expr::Dynset {
        set: fam.name(STL_CLIENTS),
        op: DynsetOp::Update,
        sreg_key: reg::R1,
        sreg_data: Some(reg::R2),
        timeout_ms: Some(u64::from(ctx.farm.persist_ttl.max(1)) * 1000),
        exprs: Vec::new(),
    });
    ctx.rule(&mut e)
}

/// `ip daddr set` the backend address in `reg`, then read it back.
fn rewrite_ip(ctx: &FarmCtx, e: &mut Vec<Expr>, reg: u32) {
    ctx.fam.set_addr(e, true, reg);
    e.push(Expr::payload(ctx.fam.daddr(), reg));
}

/// The end of every rule that sends to a backend: its port (by its address, when rewritten),
/// its MAC (by its address), `oface`'s MAC, counting, `fwd`.
fn finish(ctx: &FarmCtx, e: &mut Vec<Expr>) {
    let fam = ctx.fam;
    if let Some((_, csum)) = stl_port_rewrite(ctx.farm) {
        e.push(Expr::payload(fam.daddr(), reg::R1));
        e.push(Expr::map(&fam.name(STL_PORTS), reg::R1, reg::R1));
        set_port(e, 2, reg::R1, csum);
    }
    e.push(Expr::payload(fam.daddr(), reg::R1));
    e.push(Expr::map(&fam.name(STL_MACS), reg::R1, reg::R1));
    set_ether(e, 0, reg::R1);
    ctx.set_source_mac(e);
    ctx.send(e);
}

/// A known flow keeps its backend (the choice is per flow, not per packet).
fn known_flow(ctx: &FarmCtx) -> Rule {
    let fam = ctx.fam;
    let mut e = Vec::new();
    dependencies(&mut e, fam);
    flow_key(&mut e, fam, None);
    e.push(Expr::map(&fam.name(STL_FLOWS), reg::R1, fam.flow_data()));
    rewrite_ip(ctx, &mut e, fam.flow_data());
    flow_key(&mut e, fam, Some(ctx.vip));
    e.push(flow_update(true, fam, fam.flow_data()));
    finish(ctx, &mut e);
    ctx.rule(&mut e)
}

/// A known client goes back to its backend.
fn known_client(ctx: &FarmCtx, t: &mut Draft, per_flow: bool) -> Rule {
    let (fam, keys) = (ctx.fam, &ctx.farm.persistence);
    let set = l2_persist_set(true, fam.is_v6(), keys);
    t.sets
        .entry(set.clone())
        .or_insert_with(|| sets::persist_map(true, fam, keys));
    let mut e = Vec::new();
    dependencies(&mut e, fam);
    persist_key(&mut e, fam, keys, None);
    e.push(Expr::map(&set, reg::R1, PERSIST_DATA));
    rewrite_ip(ctx, &mut e, PERSIST_DATA);
    persist_key(&mut e, fam, keys, Some(ctx.vip));
    e.push(persist_update(true, fam, ctx.farm, PERSIST_DATA));
    if per_flow {
        flow_key(&mut e, fam, Some(ctx.vip));
        e.push(flow_update(true, fam, PERSIST_DATA));
    }
    finish(ctx, &mut e);
    ctx.rule(&mut e)
}

/// Choose: the slot is computed on the client's packet, then the packet is rewritten and the
/// choice remembered.
fn choose(ctx: &FarmCtx, per_flow: bool) -> Rule {
    let (fam, farm) = (ctx.fam, ctx.farm);
    let mut e = Vec::new();
    dependencies(&mut e, fam);
    if per_flow {
        e.push(Expr::Numgen {
            dreg: reg::R1,
            modulus: ctx.slots,
            random: farm.scheduler == Scheduler::Weight,
            offset: ctx.base(),
        });
    } else {
        hash(&mut e, fam, farm, ctx.slots, ctx.base());
    }
    e.push(Expr::map(&ctx.shard, reg::R1, PERSIST_DATA));
    rewrite_ip(ctx, &mut e, PERSIST_DATA);
    if per_flow {
        flow_key(&mut e, fam, Some(ctx.vip));
        e.push(flow_update(true, fam, PERSIST_DATA));
    }
    if !farm.persistence.is_empty() {
        persist_key(&mut e, fam, &farm.persistence, Some(ctx.vip));
        e.push(persist_update(true, fam, farm, PERSIST_DATA));
    }
    finish(ctx, &mut e);
    ctx.rule(&mut e)
}

/// `l2-<farm>-back`: a backend's reply is counted for it, gets the VIP (and virtual port) as
/// its source, the client's MAC as destination, `iface`'s MAC as source, and leaves by `iface`.
fn back_chain(ctx: &FarmCtx) -> ChainDef {
    let fam = ctx.fam;
    let name = l2_back_chain(&ctx.farm.name);
    let mut r = Vec::new();
    dependencies(&mut r, fam);
    // Counted before it is rewritten to the VIP.
    ctx.count_backend(&mut r, fam.saddr());
    if let Some((vport, csum)) = stl_port_rewrite(ctx.farm) {
        r.push(Expr::immediate(reg::R1, vport.to_be_bytes().to_vec()));
        set_port(&mut r, 0, reg::R1, csum);
    }
    r.push(Expr::immediate(reg::R1, octets(ctx.vip)));
    fam.set_addr(&mut r, false, reg::R1);
    r.push(Expr::payload(fam.daddr(), reg::R1));
    r.push(Expr::map(&fam.name(STL_CLIENTS), reg::R1, reg::R1));
    set_ether(&mut r, 0, reg::R1);
    r.push(Expr::immediate(reg::R1, ctx.res.input.mac.to_vec()));
    set_ether(&mut r, 6, reg::R1);
    fwd(&mut r, ctx.res.input.index);
    let count = vec![Expr::Objref {
        obj_type: NFT_OBJECT_COUNTER,
        name: l2_counter(ctx.fa.id),
    }];
    ChainDef {
        chain: Chain::regular(F, TABLE, &name),
        rules: vec![Rule::new(F, TABLE, &name, count), Rule::new(F, TABLE, &name, r)],
    }
}

/// The farm's elements in the stateless maps: backend address → MAC, → own port (when ports are
/// rewritten), and the reply dispatch of each backend's ports.
pub(super) fn elems(ctx: &FarmCtx, t: &mut Draft, port_list: &[PortRange], part: &mut FarmPart) {
    let fam = ctx.fam;
    let back = l2_back_chain(&ctx.farm.name);
    let rewrite = stl_port_rewrite(ctx.farm);
    let mut macs = Vec::new();
    let mut backend_ports = Vec::new();
    for b in &ctx.farm.backends {
        let (a, Some(mac)) = (b.ip_addr, ctx.res.macs.get(&b.name)) else {
            continue;
        };
        if family_of(a) != fam {
            continue;
        }
        macs.push(SetElem::mapping(octets(a), Data::Value(mac.to_vec().into())));
        // With port rewriting, replies come from the backend's own port.
        let own: Vec<PortRange> = match rewrite {
            Some((vport, _)) => {
                let p = b.port.unwrap_or(vport);
                backend_ports.push(SetElem::mapping(
                    octets(a),
                    Data::Value(p.to_be_bytes().to_vec().into()),
                ));
                vec![PortRange { first: p, last: p }]
            }
            None => port_list.to_vec(),
        };
        for proto in ctx.farm.protocol.numbers() {
            for r in &own {
                if r.first != r.last {
                    t.ranges
                        .entry((true, *proto, a))
                        .or_default()
                        .push((r.first, r.last, back.clone()));
                    continue;
                }
                let key = concat(&[&[*proto], &octets(a), &r.first.to_be_bytes()]);
                t.returns
                    .entry(fam)
                    .or_default()
                    .push(SetElem::mapping(key, Data::Verdict(Verdict::Goto(back.clone()))));
            }
        }
    }
    part.elems.insert(fam.name(STL_MACS), macs);
    if rewrite.is_some() {
        part.elems.insert(fam.name(STL_PORTS), backend_ports);
        t.needs_stl_ports.insert(fam);
    }
}
