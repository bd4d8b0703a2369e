//! Every expression, committed through the netlink layer into a fresh network namespace: `nft`
//! must print the expected rule, the dump must decode back to the same expressions, and the
//! listing must be accepted again by `nft -c -f`.

mod common;

use common::*;
use nftlbd::netlink::consts::*;
use nftlbd::netlink::sys::*;
use nftlbd::netlink::*;

const T: &str = "t";

fn base(name: &str, ty: ChainType, point: HookPoint, prio: i32) -> Chain {
    Chain::base(Family::Ip, T, name, ty, Hook::new(point, prio), Verdict::Accept)
}

/// Table `ip t` with a regular chain `c`, nat chains `pre`/`post`, a raw-priority `raw` chain,
/// and sets the cases refer to.
fn scaffold(b: &mut Batch) {
    b.add_table(&Table::new(Family::Ip, T)).unwrap();
    b.add_chain(&Chain::regular(Family::Ip, T, "c")).unwrap();
    b.add_chain(&Chain::regular(Family::Ip, T, "other")).unwrap();
    b.add_chain(&base("pre", ChainType::Nat, HookPoint::Prerouting, -100))
        .unwrap();
    b.add_chain(&base("post", ChainType::Nat, HookPoint::Postrouting, 100))
        .unwrap();
    b.add_chain(&base("raw", ChainType::Filter, HookPoint::Prerouting, -300))
        .unwrap();
    b.add_set(&Set::new(Family::Ip, T, "s", TypeSpec::of(DataType::Ipv4Addr)))
        .unwrap();
    let dynamic = Set::new(Family::Ip, T, "d", TypeSpec::of(DataType::Ipv4Addr))
        .with_flags(NFT_SET_EVAL | NFT_SET_TIMEOUT);
    b.add_set(&Set {
        size: Some(1000),
        timeout_ms: Some(60_000),
        ..dynamic
    })
    .unwrap();
    let conns = Set::new(Family::Ip, T, "e", TypeSpec::of(DataType::Ipv4Addr)).with_flags(NFT_SET_EVAL);
    b.add_set(&Set {
        size: Some(1000),
        ..conns
    })
    .unwrap();
    let persist = Set::map(
        Family::Ip,
        T,
        "p",
        TypeSpec::of(DataType::Ipv4Addr),
        TypeSpec::of(DataType::Mark),
    )
    .with_flags(NFT_SET_TIMEOUT);
    b.add_set(&Set {
        size: Some(65535),
        timeout_ms: Some(50_000),
        ..persist
    })
    .unwrap();
    // Keyed by numgen's host-order integer: nft needs the typeof to accept `numgen ... map @m`.
    let mut backends = Set::map(
        Family::Ip,
        T,
        "m",
        TypeSpec::of(DataType::Integer(4)),
        TypeSpec::concat(&[DataType::Ipv4Addr, DataType::InetService]),
    );
    backends.userdata.key_typeof = Some(Typeof::Numgen {
        random: false,
        modulus: 2,
        offset: 0,
    });
    backends.userdata.data_typeof = Some(Typeof::Concat(vec![
        Typeof::Payload(PayloadField::IpDaddr),
        Typeof::Payload(PayloadField::TcpDport),
    ]));
    b.add_set(&backends).unwrap();
    b.add_obj(&Obj::new(
        Family::Ip,
        T,
        "cnt",
        ObjKind::Counter { packets: 0, bytes: 0 },
    ))
    .unwrap();
    b.add_obj(&Obj::new(
        Family::Ip,
        T,
        "ftp-tcp",
        ObjKind::CtHelper {
            helper: "ftp".into(),
            l3proto: 2,
            l4proto: 6,
        },
    ))
    .unwrap();
}

/// Commits the scaffold plus one rule in `chain`, then checks nft's rendering and the decode.
fn case(chain: &str, exprs: Vec<Expr>, expected: &str) {
    let expected = expected.to_string();
    let chain = chain.to_string();
    in_netns(move || {
        let mut conn = Connection::new().unwrap();
        let mut b = Batch::new();
        scaffold(&mut b);
        b.add_rule(&Rule::new(Family::Ip, T, &chain, exprs.clone()).with_comment("case"))
            .unwrap();
        conn.commit(b).unwrap();

        let listing = nft(&["list", "chain", "ip", T, &chain]);
        let rule = normalize(&listing)
            .lines()
            .find(|l| l.ends_with("comment \"case\""))
            .map(|l| l.trim_end_matches("comment \"case\"").trim_end().to_string())
            .unwrap_or_else(|| panic!("rule not listed:\n{listing}"));
        assert_eq!(rule, expected, "nft renders the rule differently");

        let rules = conn.list_rules(Family::Ip, T, Some(&chain)).unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].exprs, exprs,
            "dump does not decode to the committed expressions"
        );
        assert_eq!(rules[0].comment.as_deref(), Some("case"));
        assert!(rules[0].handle.is_some());
        assert_nft_reparses();
    });
}

fn r1() -> u32 {
    reg::R1
}

fn saddr_is(a: [u8; 4]) -> Vec<Expr> {
    vec![
        Expr::payload(PayloadField::IpSaddr, r1()),
        Expr::cmp(r1(), CmpOp::Eq, ip4(a)),
    ]
}

fn tcp() -> Vec<Expr> {
    vec![
        Expr::meta(NFT_META_L4PROTO, r1()),
        Expr::cmp(r1(), CmpOp::Eq, vec![6]),
    ]
}

fn with(mut a: Vec<Expr>, b: impl IntoIterator<Item = Expr>) -> Vec<Expr> {
    a.extend(b);
    a
}

#[test]
fn payload_cmp_and_verdicts() {
    case(
        "c",
        with(saddr_is([10, 0, 0, 1]), [Expr::verdict(Verdict::Accept)]),
        "ip saddr 10.0.0.1 accept",
    );
    case(
        "c",
        with(
            saddr_is([10, 0, 0, 1]),
            [Expr::cmp(r1(), CmpOp::Neq, ip4([10, 0, 0, 2]))],
        ),
        "ip saddr 10.0.0.1 ip saddr != 10.0.0.2",
    );
}

#[test]
fn every_verdict() {
    for (v, text) in [
        (Verdict::Drop, "drop"),
        (Verdict::Continue, "continue"),
        (Verdict::Return, "return"),
        (Verdict::Jump("other".into()), "jump other"),
        (Verdict::Goto("other".into()), "goto other"),
    ] {
        case("c", vec![Expr::verdict(v)], text);
    }
}

#[test]
fn cmp_operators_and_range() {
    let dport = Expr::payload(PayloadField::ThDport, r1());
    case(
        "c",
        with(tcp(), [dport.clone(), Expr::cmp(r1(), CmpOp::Gt, port(1024))]),
        "tcp dport > 1024",
    );
    case(
        "c",
        with(
            tcp(),
            [
                dport.clone(),
                Expr::Range {
                    sreg: r1(),
                    op: CmpOp::Eq,
                    from: port(80),
                    to: port(90),
                },
            ],
        ),
        "tcp dport 80-90",
    );
    case(
        "c",
        with(
            tcp(),
            [
                dport,
                Expr::Range {
                    sreg: r1(),
                    op: CmpOp::Neq,
                    from: port(80),
                    to: port(90),
                },
            ],
        ),
        "tcp dport != 80-90",
    );
}

#[test]
fn payload_set_with_checksum() {
    case(
        "raw",
        vec![
            Expr::immediate(r1(), ip4([10, 0, 0, 9])),
            Expr::PayloadSet {
                sreg: r1(),
                base: NFT_PAYLOAD_NETWORK_HEADER,
                offset: 16,
                len: 4,
                csum_type: NFT_PAYLOAD_CSUM_INET,
                csum_offset: 10,
                csum_flags: 0,
            },
        ],
        "ip daddr set 10.0.0.9",
    );
}

#[test]
fn meta_load_and_set() {
    case(
        "c",
        vec![
            Expr::meta(NFT_META_MARK, r1()),
            Expr::cmp(r1(), CmpOp::Eq, 5u32.to_ne_bytes()),
        ],
        "meta mark 0x00000005",
    );
    case(
        "c",
        vec![
            Expr::immediate(r1(), 7u32.to_ne_bytes()),
            Expr::MetaSet {
                key: NFT_META_MARK,
                sreg: r1(),
            },
        ],
        "meta mark set 0x00000007",
    );
}

#[test]
fn bitwise_on_ct_mark() {
    let bit = 0x8000_0000u32.to_ne_bytes();
    case(
        "c",
        vec![
            Expr::ct(NFT_CT_MARK, r1()),
            Expr::Bitwise {
                sreg: r1(),
                dreg: r1(),
                len: 4,
                mask: bit.to_vec(),
                xor: vec![0; 4],
            },
            Expr::cmp(r1(), CmpOp::Eq, bit),
        ],
        // nft shows a one-bit mask as a prefix.
        "ct mark 0x80000000/1",
    );
}

#[test]
fn lookup_and_inverted_lookup() {
    let load = Expr::payload(PayloadField::IpSaddr, r1());
    case(
        "c",
        vec![
            load.clone(),
            Expr::lookup("s", r1()),
            Expr::verdict(Verdict::Drop),
        ],
        "ip saddr @s drop",
    );
    case(
        "c",
        vec![
            load,
            Expr::Lookup {
                set: "s".into(),
                sreg: r1(),
                dreg: None,
                invert: true,
            },
        ],
        "ip saddr != @s",
    );
}

#[test]
fn ct_load_set_and_helper() {
    let est = (NF_CT_STATE_BIT_ESTABLISHED | NF_CT_STATE_BIT_RELATED).to_ne_bytes();
    case(
        "c",
        vec![
            Expr::ct(NFT_CT_STATE, r1()),
            Expr::Bitwise {
                sreg: r1(),
                dreg: r1(),
                len: 4,
                mask: est.to_vec(),
                xor: vec![0; 4],
            },
            Expr::cmp(r1(), CmpOp::Neq, [0; 4]),
            Expr::verdict(Verdict::Accept),
        ],
        "ct state established,related accept",
    );
    case(
        "c",
        vec![
            Expr::immediate(r1(), 1u32.to_ne_bytes()),
            Expr::CtSet {
                key: NFT_CT_MARK,
                sreg: r1(),
                dir: None,
            },
        ],
        "ct mark set 0x00000001",
    );
    case(
        "c",
        vec![
            Expr::Ct {
                key: NFT_CT_SRC_IP,
                dreg: r1(),
                dir: Some(0),
            },
            Expr::cmp(r1(), CmpOp::Eq, ip4([1, 2, 3, 4])),
        ],
        "ct original ip saddr 1.2.3.4",
    );
    case(
        "pre",
        with(
            tcp(),
            [Expr::Objref {
                obj_type: NFT_OBJECT_CT_HELPER,
                name: "ftp-tcp".into(),
            }],
        ),
        "meta l4proto tcp ct helper set \"ftp-tcp\"",
    );
}

#[test]
fn nat_masquerade_redirect() {
    case(
        "pre",
        with(
            tcp(),
            [
                Expr::immediate(r1(), ip4([10, 1, 0, 2])),
                Expr::immediate(reg::R2, port(8080)),
                Expr::nat(NatType::Dnat, 2, Some((r1(), r1())), Some((reg::R2, reg::R2)), 0),
            ],
        ),
        "meta l4proto tcp dnat to 10.1.0.2:8080",
    );
    case(
        "post",
        vec![
            Expr::immediate(r1(), ip4([192, 0, 2, 1])),
            Expr::nat(NatType::Snat, 2, Some((r1(), r1())), None, 0),
        ],
        "snat to 192.0.2.1",
    );
    // Address and port ranges, with NAT flags.
    case(
        "pre",
        with(
            tcp(),
            [
                Expr::immediate(r1(), ip4([10, 1, 0, 2])),
                Expr::immediate(reg::R2, ip4([10, 1, 0, 9])),
                Expr::immediate(reg::R3, port(8000)),
                Expr::immediate(reg::R4, port(8009)),
                Expr::nat(
                    NatType::Dnat,
                    2,
                    Some((r1(), reg::R2)),
                    Some((reg::R3, reg::R4)),
                    NF_NAT_RANGE_PERSISTENT,
                ),
            ],
        ),
        "meta l4proto tcp dnat to 10.1.0.2-10.1.0.9:8000-8009 persistent",
    );
    case("post", vec![Expr::masq(None, 0)], "masquerade");
    case(
        "post",
        vec![Expr::masq(None, NF_NAT_RANGE_PROTO_RANDOM_FULLY)],
        "masquerade fully-random",
    );
    case(
        "post",
        with(
            tcp(),
            [
                Expr::immediate(r1(), port(1000)),
                Expr::immediate(reg::R2, port(2000)),
                Expr::masq(Some((r1(), reg::R2)), 0),
            ],
        ),
        "meta l4proto tcp masquerade to :1000-2000",
    );
    case(
        "pre",
        with(
            tcp(),
            [
                Expr::immediate(r1(), port(3128)),
                Expr::redir(Some((r1(), r1())), 0),
            ],
        ),
        "meta l4proto tcp redirect to :3128",
    );
}

#[test]
fn numgen_map_to_concatenated_nat_target() {
    // The load-balancing rule: pick a backend by round robin, DNAT to its address and port.
    case(
        "pre",
        with(
            tcp(),
            [
                Expr::Numgen {
                    dreg: r1(),
                    modulus: 2,
                    random: false,
                    offset: 0,
                },
                Expr::map("m", r1(), r1()),
                Expr::nat(
                    NatType::Dnat,
                    2,
                    Some((r1(), r1())),
                    Some((reg::r32(1), reg::r32(1))),
                    0,
                ),
            ],
        ),
        "meta l4proto tcp dnat ip to numgen inc mod 2 map @m",
    );
}

#[test]
fn numgen_and_hashes() {
    let mark_set = Expr::MetaSet {
        key: NFT_META_MARK,
        sreg: r1(),
    };
    case(
        "c",
        vec![
            Expr::Numgen {
                dreg: r1(),
                modulus: 10,
                random: true,
                offset: 5,
            },
            mark_set.clone(),
        ],
        "meta mark set numgen random mod 10 offset 5",
    );
    case(
        "c",
        vec![
            Expr::payload(PayloadField::IpSaddr, r1()),
            Expr::Jhash {
                sreg: r1(),
                dreg: r1(),
                len: 4,
                modulus: 4,
                seed: Some(0xbeef),
                offset: 0,
            },
            mark_set.clone(),
        ],
        "meta mark set jhash ip saddr mod 4 seed 0xbeef",
    );
    case(
        "c",
        vec![
            Expr::Symhash {
                dreg: r1(),
                modulus: 2,
                offset: 100,
            },
            mark_set,
        ],
        "meta mark set symhash mod 2 offset 100",
    );
}

#[test]
fn dynset_with_nested_limit_connlimit_and_update() {
    let saddr = Expr::payload(PayloadField::IpSaddr, r1());
    let limit = Limit {
        rate: 10,
        unit: RateUnit::Second,
        burst: 20,
        bytes: false,
        over: true,
    };
    case(
        "c",
        vec![
            saddr.clone(),
            Expr::set_add("d", r1(), None, vec![Expr::Limit(limit)]),
            Expr::verdict(Verdict::Drop),
        ],
        "add @d { ip saddr limit rate over 10/second burst 20 packets } drop",
    );
    case(
        "c",
        vec![
            saddr.clone(),
            Expr::set_add("d", r1(), Some(30_000), vec![Expr::counter()]),
        ],
        "add @d { ip saddr timeout 30s counter }",
    );
    // Connection counting needs a set without timeouts (the kernel refuses it otherwise).
    case(
        "c",
        vec![
            saddr.clone(),
            Expr::set_add("e", r1(), None, vec![Expr::Connlimit { count: 5, over: true }]),
        ],
        "add @e { ip saddr ct count over 5 }",
    );
    case(
        "c",
        vec![
            saddr,
            Expr::ct(NFT_CT_MARK, reg::R2),
            Expr::Dynset {
                set: "p".into(),
                op: DynsetOp::Update,
                sreg_key: r1(),
                sreg_data: Some(reg::R2),
                timeout_ms: None,
                exprs: vec![],
            },
        ],
        "update @p { ip saddr : ct mark }",
    );
}

#[test]
fn stateful_expressions() {
    case("c", vec![Expr::counter()], "counter packets 0 bytes 0");
    case(
        "c",
        vec![Expr::Limit(Limit {
            rate: 2,
            unit: RateUnit::Hour,
            burst: 3,
            bytes: false,
            over: false,
        })],
        "limit rate 2/hour burst 3 packets",
    );
    case(
        "c",
        vec![Expr::Connlimit { count: 3, over: true }],
        "ct count over 3",
    );
    case(
        "c",
        vec![Expr::Quota {
            bytes: 1 << 20,
            consumed: 0,
            over: true,
        }],
        "quota over 1 mbytes",
    );
    case(
        "c",
        vec![Expr::Objref {
            obj_type: NFT_OBJECT_COUNTER,
            name: "cnt".into(),
        }],
        "counter name \"cnt\"",
    );
}

#[test]
fn reject_log_notrack_fib() {
    case(
        "c",
        vec![Expr::Reject(Reject::Icmp(1))],
        "reject with icmp host-unreachable",
    );
    // nft hides the l4proto dependency of `tcp reset`.
    case(
        "c",
        with(tcp(), [Expr::Reject(Reject::TcpRst)]),
        "reject with tcp reset",
    );
    // (icmpx is for inet/netdev tables: nft cannot render it in an ip table.)
    case("c", vec![Expr::log(Some("IN-web "))], "log prefix \"IN-web \"");
    case(
        "c",
        vec![Expr::Log {
            prefix: None,
            group: Some(2),
            snaplen: None,
            qthreshold: None,
            level: None,
            flags: 0,
        }],
        "log group 2",
    );
    case("raw", vec![Expr::Notrack], "notrack");
    case(
        "raw",
        vec![
            Expr::Fib {
                dreg: r1(),
                result: NFT_FIB_RESULT_ADDRTYPE,
                flags: NFTA_FIB_F_DADDR,
            },
            Expr::cmp(r1(), CmpOp::Eq, 2u32.to_ne_bytes()),
        ],
        "fib daddr type local",
    );
}

#[test]
fn dup_to_address_and_device() {
    case(
        "raw",
        vec![
            Expr::immediate(r1(), ip4([127, 0, 0, 2])),
            Expr::Dup {
                sreg_addr: r1(),
                sreg_dev: None,
            },
        ],
        "dup to 127.0.0.2",
    );
    case(
        "raw",
        vec![
            Expr::immediate(r1(), ip4([127, 0, 0, 2])),
            Expr::immediate(reg::R2, 1u32.to_ne_bytes()),
            Expr::Dup {
                sreg_addr: r1(),
                sreg_dev: Some(reg::R2),
            },
        ],
        "dup to 127.0.0.2 device \"lo\"",
    );
}

#[test]
fn netdev_ingress_fwd_and_mac_rewrite() {
    in_netns(|| {
        let mut conn = Connection::new().unwrap();
        let lo = 1u32.to_ne_bytes(); // ifindex of lo in a fresh namespace
        let hook = Hook {
            point: HookPoint::Ingress,
            priority: 101,
            device: Some("lo".into()),
        };
        let mut b = Batch::new();
        b.add_table(&Table::new(Family::Netdev, "nd")).unwrap();
        b.add_chain(&Chain::base(
            Family::Netdev,
            "nd",
            "ingress-lo",
            ChainType::Filter,
            hook,
            Verdict::Accept,
        ))
        .unwrap();
        // nft needs the link-layer type before it can name `ether` fields (it adds this itself).
        let exprs = vec![
            Expr::meta(NFT_META_IFTYPE, reg::R1),
            Expr::cmp(reg::R1, CmpOp::Eq, 1u16.to_ne_bytes()),
            Expr::immediate(reg::R1, vec![2, 0, 0, 0, 0, 1]),
            Expr::PayloadSet {
                sreg: reg::R1,
                base: NFT_PAYLOAD_LL_HEADER,
                offset: 0,
                len: 6,
                csum_type: 0,
                csum_offset: 0,
                csum_flags: 0,
            },
            Expr::immediate(reg::R2, lo),
            Expr::Fwd {
                sreg_dev: reg::R2,
                addr: None,
            },
        ];
        b.add_rule(&Rule::new(Family::Netdev, "nd", "ingress-lo", exprs.clone()))
            .unwrap();
        conn.commit(b).unwrap();
        let text = normalize(&nft(&["list", "table", "netdev", "nd"]));
        assert_eq!(
            text,
            "table netdev nd {\nchain ingress-lo {\ntype filter hook ingress device \"lo\" priority 101; policy accept;\n\
             ether daddr set 02:00:00:00:00:01 fwd to \"lo\"\n}\n}"
        );
        let rules = conn.list_rules(Family::Netdev, "nd", None).unwrap();
        assert_eq!(rules[0].exprs, exprs);
        let chains = conn.list_chains(Family::Netdev, "nd").unwrap();
        assert_eq!(
            chains[0].hook.as_ref().and_then(|h| h.device.as_deref()),
            Some("lo")
        );
        assert_nft_reparses();
    });
}

#[test]
fn queue_is_reported_unsupported_by_probe_and_kernel() {
    in_netns(|| {
        let mut conn = Connection::new().unwrap();
        let before = conn.generation().unwrap();
        let f = conn.probe().unwrap();
        assert_eq!(conn.generation().unwrap(), before, "probing commits nothing");
        assert!(f.table_owner, "kernel 6.18 has table owner: {f:?}");
        assert!(f.table_persist, "kernel 6.18 has table persist: {f:?}");
        assert!(!f.queue, "this kernel is built without NFT_QUEUE: {f:?}");
        assert!(!f.flowtable, "this kernel is built without NF_FLOW_TABLE: {f:?}");
        // Probing left nothing behind.
        assert_eq!(normalize(&nft(&["list", "ruleset"])), "");
        let mut b = Batch::new();
        scaffold(&mut b);
        b.add_rule(&Rule::new(
            Family::Ip,
            T,
            "c",
            vec![Expr::Queue {
                num: 0,
                total: 1,
                flags: 1,
            }],
        ))
        .unwrap();
        let err = conn.commit(b).unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
        assert!(err.to_string().contains("add rule ip t c"), "{err}");
    });
}
