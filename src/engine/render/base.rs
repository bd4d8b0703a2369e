//! Base chains: dispatch, NAT, and the per-packet hooks a configuration needs.

use super::*;

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

pub(super) fn base_chains(fam: IpFamily, needs: Needs) -> Vec<ChainDef> {
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
    // The connection is the backend's now: counted once (a nat chain sees its first packet only),
    // by backend and by farm.
    e.ct_mark(reg::R1).push(Expr::lookup(SET_NEW_CONNS, reg::R1));
    rules.push(rule(fam, CHAIN_TO_BACKEND, &mut e));
    e.ct_mark(reg::R1)
        .mask(reg::R1, FARM_MASK)
        .push(Expr::lookup(SET_NEW_CONNS, reg::R1));
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
    // Counting: the packets of every balanced connection, in both directions, after NAT (so the
    // first packet has its mark). One lookup by backend id (or a local farm's tag), one by farm.
    for (name, point) in [
        (CHAIN_COUNT, HookPoint::Prerouting),
        (CHAIN_COUNT_OUT, HookPoint::Output),
    ] {
        e.ct_mark(reg::R1).push(Expr::lookup(SET_TRAFFIC, reg::R1));
        let by_id = rule(fam, name, &mut e);
        e.ct_dnat()
            .ct_mark(reg::R1)
            .mask(reg::R1, FARM_MASK)
            .push(Expr::lookup(SET_TRAFFIC, reg::R1));
        let by_farm = rule(fam, name, &mut e);
        chains.push(ChainDef {
            chain: base(name, ChainType::Filter, point, -90),
            rules: vec![by_id, by_farm],
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
