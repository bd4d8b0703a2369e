//! Direct server return: the frame's destination MAC becomes the chosen backend's, its source
//! MAC `oface`'s, and it leaves by `oface` (the backends hold the VIP and answer clients
//! directly).
//!
//! Round robin and weight would choose per packet, which before connection tracking splits a
//! connection; so the first packet of a flow chooses and `l2-flows` remembers the choice
//! (refreshed by every packet). With persistence, a known client goes back to its backend.

use crate::model::Scheduler;
use crate::netlink::consts::reg;
use crate::netlink::*;

use super::super::layout::{SET_L2_FLOWS, l2_persist_set};
use super::draft::{Draft, FarmCtx};
use super::exprs::*;
use super::sets;

/// The rules after counting: known flow, known client, then the choice.
pub(super) fn rules(ctx: &FarmCtx, t: &mut Draft) -> Vec<Rule> {
    let per_flow = matches!(ctx.farm.scheduler, Scheduler::Rr | Scheduler::Weight);
    let mut rules = Vec::new();
    if per_flow {
        rules.push(known_flow(ctx));
    }
    if !ctx.farm.persistence.is_empty() {
        rules.push(known_client(ctx, t, per_flow));
    }
    if per_flow {
        rules.push(choose_per_flow(ctx));
        t.needs_flows.insert(ctx.fam);
    } else {
        rules.push(choose_by_hash(ctx));
    }
    rules
}

/// A known flow keeps its backend.
fn known_flow(ctx: &FarmCtx) -> Rule {
    let fam = ctx.fam;
    let mut e = Vec::new();
    dependencies(&mut e, fam);
    flow_key(&mut e, fam, None);
    e.push(Expr::map(&fam.name(SET_L2_FLOWS), reg::R1, fam.flow_data()));
    // Written, then read back for the update: nft 1.0.6 cannot list a dynset whose data comes
    // straight from a map lookup (it aborts).
    set_ether(&mut e, 0, fam.flow_data());
    e.push(Expr::payload(PayloadField::EtherDaddr, fam.flow_data()));
    e.push(flow_update(false, fam, fam.flow_data()));
    ctx.set_source_mac(&mut e);
    ctx.send(&mut e);
    ctx.rule(&mut e)
}

/// A known client goes back to its backend (and, per flow, stays there).
fn known_client(ctx: &FarmCtx, t: &mut Draft, per_flow: bool) -> Rule {
    let (fam, keys) = (ctx.fam, &ctx.farm.persistence);
    let set = l2_persist_set(false, fam.is_v6(), keys);
    t.sets
        .entry(set.clone())
        .or_insert_with(|| sets::persist_map(false, fam, keys));
    let mut e = Vec::new();
    dependencies(&mut e, fam);
    persist_key(&mut e, fam, keys, None);
    e.push(Expr::map(&set, reg::R1, PERSIST_DATA));
    set_ether(&mut e, 0, PERSIST_DATA);
    e.push(Expr::payload(PayloadField::EtherDaddr, PERSIST_DATA));
    e.push(persist_update(false, fam, ctx.farm, PERSIST_DATA));
    if per_flow {
        flow_key(&mut e, fam, None);
        e.push(flow_update(false, fam, PERSIST_DATA));
    }
    ctx.set_source_mac(&mut e);
    ctx.send(&mut e);
    ctx.rule(&mut e)
}

/// After a backend was chosen (its MAC is the frame's destination): remember the client.
fn remember_client(ctx: &FarmCtx, e: &mut Vec<Expr>) {
    if !ctx.farm.persistence.is_empty() {
        persist_key(e, ctx.fam, &ctx.farm.persistence, None);
        e.push(Expr::payload(PayloadField::EtherDaddr, PERSIST_DATA));
        e.push(persist_update(false, ctx.fam, ctx.farm, PERSIST_DATA));
    }
}

/// Round robin or weight: the next slot (random for weight), remembered for the flow.
fn choose_per_flow(ctx: &FarmCtx) -> Rule {
    let fam = ctx.fam;
    let mut e = Vec::new();
    dependencies(&mut e, fam);
    ctx.set_source_mac(&mut e);
    e.push(Expr::Numgen {
        dreg: reg::R1,
        modulus: ctx.slots,
        random: ctx.farm.scheduler == Scheduler::Weight,
        offset: ctx.base(),
    });
    e.push(Expr::map(&ctx.shard, reg::R1, reg::R1));
    set_ether(&mut e, 0, reg::R1);
    flow_key(&mut e, fam, None);
    e.push(Expr::payload(PayloadField::EtherDaddr, fam.flow_data()));
    e.push(flow_update(false, fam, fam.flow_data()));
    remember_client(ctx, &mut e);
    ctx.send(&mut e);
    ctx.rule(&mut e)
}

/// Hash and symhash: the slot of the packet's hash (the same for every packet of a flow).
fn choose_by_hash(ctx: &FarmCtx) -> Rule {
    let mut e = Vec::new();
    dependencies(&mut e, ctx.fam);
    ctx.set_source_mac(&mut e);
    hash(&mut e, ctx.fam, ctx.farm, ctx.slots, ctx.base());
    e.push(Expr::map(&ctx.shard, reg::R1, reg::R1));
    set_ether(&mut e, 0, reg::R1);
    remember_client(ctx, &mut e);
    ctx.send(&mut e);
    ctx.rule(&mut e)
}
