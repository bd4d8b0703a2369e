//! The sets of a family table: shared maps, slot shards, persistence kinds, policies, limits.

use super::*;

pub(super) fn key_type(fam: IpFamily, k: KeyField) -> DataType {
    match k {
        KeyField::Srcip | KeyField::Dstip => fam.addr_type(),
        KeyField::Srcport | KeyField::Dstport => DataType::InetService,
        KeyField::Srcmac | KeyField::Dstmac => DataType::EtherAddr,
    }
}

pub(super) fn shared_sets(fam: IpFamily) -> Vec<Set> {
    let f = fam.family();
    let m = TypeSpec::of(DataType::Mark);
    let addr = TypeSpec::of(fam.addr_type());
    let service = TypeSpec::concat(&[DataType::InetProto, fam.addr_type(), DataType::InetService]);
    let verdict = TypeSpec::of(DataType::Verdict);
    // Every element counts the packets of its farm's or backend's connections.
    let traffic = crate::engine::counters::traffic_set(f);
    let new_conns = crate::engine::counters::new_conns_set(f);
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
        traffic,
        new_conns,
        Set::map(f, TABLE, SET_BACKEND_LIMITS, m, TypeSpec::of(DataType::Verdict)),
    ]
}

pub(super) fn slots_map(fam: IpFamily, shard: u32) -> Set {
    // Keyed by the connection mark the farm's rule drew the slot into (`pick-<shard>`).
    let m = TypeSpec::of(DataType::Mark);
    Set::map(fam.family(), TABLE, &slots_set(shard), m.clone(), m)
}

/// `pick-<shard>`: the slot in the connection mark becomes the backend id. A slot the map lacks
/// cannot reach `to-backend` (it would read as another farm's backend): it is dropped.
pub(super) fn pick_chain_def(fam: IpFamily, shard: u32) -> ChainDef {
    let name = pick_chain(shard);
    let mut e = Exprs::new();
    e.ct_mark(reg::R1)
        .push(Expr::map(&slots_set(shard), reg::R1, reg::R1))
        .set_ct_mark(reg::R1)
        .push(Expr::verdict(Verdict::Return));
    let pick = rule(fam, &name, &mut e);
    e.push(Expr::verdict(Verdict::Drop));
    let drop = rule(fam, &name, &mut e);
    ChainDef {
        chain: Chain::regular(fam.family(), TABLE, &name),
        rules: vec![pick, drop],
    }
}

pub(super) fn persist_map(fam: IpFamily, keys: &[KeyField]) -> Set {
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
