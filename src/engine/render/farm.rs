//! One farm's chain and the elements it adds to shared sets.

use super::*;

pub(super) fn farm_rules(
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
        let p = log_prefix(farm, "farm", "IN", format!("IN-{} ", farm.name));
        farm_log(&mut e, farm, p);
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
        // The slot goes through the connection mark: a rule here that bound the slot map would
        // make the kernel walk the whole map each time N changes (see `layout`).
        e.set_ct_mark(reg::R1)
            .push(Expr::verdict(Verdict::Jump(pick_chain(shard_of(fa.id)))));
        rules.push(rule(fam, &chain, &mut e));
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

pub(super) fn push(part: &mut FarmPart, set: &str, e: SetElem) {
    // Found first: a farm pushes an element per slot and per backend into a few sets, and an
    // owned key per element was a string allocated and freed for each of them.
    match part.elems.get_mut(set) {
        Some(v) => v.push(e),
        None => {
            part.elems.insert(set.to_string(), vec![e]);
        }
    }
}

/// A farm's chains and the elements of its own (dispatch, counters of the farm, logging): all
/// but what its slots and backends add. O(1) in the number of backends.
pub fn farm_own_part(
    fam: IpFamily,
    farm: &Farm,
    fa: &FarmAlloc,
    policies: &crate::model::List<Policy>,
) -> FarmPart {
    let f = fam.family();
    let chain = farm_chain(&farm.name);
    let mut extra = Vec::new();
    let rules = farm_rules(fam, farm, fa, &attached(farm, policies), &mut extra);
    if farm.log.contains(&LogPoint::Forward) && farm.mode != Mode::Local {
        // Packets of the farm's connections that the balancer forwards, both ways.
        let name = forward_log_chain(&farm.name);
        let mut e = Exprs::new();
        farm_log(
            &mut e,
            farm,
            log_prefix(farm, "farm", "FWD", format!("FWD-{} ", farm.name)),
        );
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
    push(&mut part, SET_TRAFFIC, SetElem::key(mark(farm_tag(fa.id))));
    push(&mut part, SET_NEW_CONNS, SetElem::key(mark(farm_tag(fa.id))));
    part
}

pub(super) fn farm_part(
    fam: IpFamily,
    farm: &Farm,
    fa: &FarmAlloc,
    policies: &crate::model::List<Policy>,
) -> FarmPart {
    let mut part = farm_own_part(fam, farm, fa, policies);
    if farm.mode == Mode::Local {
        return part;
    }
    let shard = slots_set(shard_of(fa.id));
    for (i, member) in fa.slots(fam.is_v6()).iter().enumerate() {
        push(&mut part, &shard, slot_elem(fa, i, *member));
    }
    for b in farm.backends.iter() {
        backend_elems(fam, farm, fa, b, &mut |set, e| push(&mut part, set, e));
    }
    // Static sessions: persistence entries without a timeout.
    let by_name: HashMap<&str, &Backend> = if farm.sessions.is_empty() {
        HashMap::new()
    } else {
        farm.backends.iter().map(|b| (b.name.as_str(), b)).collect()
    };
    for s in &farm.sessions {
        // Validation made sure the backend exists and the client is a key of the persistence.
        let Some(b) = by_name.get(s.backend.as_str()).copied() else {
            continue;
        };
        let values = s.client.values();
        let Some(member) = fa.members.get(&b.name) else {
            continue;
        };
        let in_family = values
            .iter()
            .all(|v| !matches!(v, KeyValue::Ip(ip) if !fam.has(ip)));
        if !in_family || !fam.has(&b.ip_addr) {
            continue;
        }
        let data = Data::Value(mark(backend_id(fa.id, *member)).into());
        let key = super::super::persist::encode_key(fa.id, values);
        push(
            &mut part,
            &persist_set(&farm.persistence),
            SetElem::mapping(key, data),
        );
    }
    part
}

/// Slot `i` of the farm, held by `member`: an element of its shard's slot map.
pub fn slot_elem(fa: &FarmAlloc, i: usize, member: u16) -> SetElem {
    let key = mark(slot_base(fa.id) + i as u32);
    SetElem::mapping(key, Data::Value(mark(backend_id(fa.id, member)).into()))
}

/// The elements one backend puts into the shared sets of family `fam` (none when it is of the
/// other family or has no member id), each with its set's name. A change to one backend is
/// rendered by this alone, not by rendering its farm.
pub fn backend_elems(
    fam: IpFamily,
    farm: &Farm,
    fa: &FarmAlloc,
    b: &Backend,
    out: &mut dyn FnMut(&str, SetElem),
) {
    if let Some(member) = fa.members.get(&b.name) {
        member_elems(fam, farm, fa.id, *member, b, out);
    }
}

/// [`backend_elems`] of a backend with member id `member` in farm `farm_id` (a removed backend
/// has it no longer in the allocation).
pub fn member_elems(
    fam: IpFamily,
    farm: &Farm,
    farm_id: u16,
    member: u16,
    b: &Backend,
    out: &mut dyn FnMut(&str, SetElem),
) {
    if !fam.has(&b.ip_addr) || farm.mode == Mode::Local {
        return;
    }
    let id = mark(backend_id(farm_id, member));
    out(SET_TRAFFIC, SetElem::key(id.clone()));
    out(SET_NEW_CONNS, SetElem::key(id.clone()));
    let addr = octets(&b.ip_addr);
    match b.port {
        Some(p) => out(
            SET_TARGETS_ADDR_PORT,
            SetElem::mapping(id.clone(), Data::Value(concat(&[&addr, &p.to_be_bytes()]).into())),
        ),
        None => out(
            SET_TARGETS_ADDR,
            SetElem::mapping(id.clone(), Data::Value(addr.into())),
        ),
    }
    if farm.mode == Mode::Snat {
        match b.source_addr.or(farm.source_addr) {
            Some(src) => out(
                SET_SNAT,
                SetElem::mapping(id.clone(), Data::Value(octets(&src).into())),
            ),
            None => out(SET_MASQ, SetElem::key(id.clone())),
        }
    }
    if let Some(m) = b.mark.or(farm.mark) {
        out(
            SET_USER_MARKS,
            SetElem::mapping(id.clone(), Data::Value(mark(m.0).into())),
        );
    }
    if !farm.persistence.is_empty() && keeps_clients(b) {
        out(SET_LIVE, SetElem::key(id.clone()));
    }
    if b.est_connlimit > 0 {
        let jump = Data::Verdict(Verdict::Jump(climit_chain(b.est_connlimit)));
        out(SET_BACKEND_LIMITS, SetElem::mapping(id, jump));
    }
}
