//! Parts shared by farms: port-range dispatch per address and backend connection-limit chains.

use super::*;

/// The services a farm takes in this family: (protocol, address, first port, last port). A farm
/// that is not up takes none; an empty port list is every port, 0-65535.
pub fn dispatch_claims(fam: IpFamily, farm: &Farm) -> Vec<(u8, IpAddr, u16, u16)> {
    if farm.state != FarmState::Up || is_l2(farm) {
        return Vec::new();
    }
    let ports = farm.virtual_ports.as_slice();
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
