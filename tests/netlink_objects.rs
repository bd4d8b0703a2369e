//! Tables, chains, sets, elements, named objects, rule positions, transactions and the monitor,
//! each in a fresh network namespace against the real kernel and nft.

mod common;

use common::*;
use nftlbd::netlink::sys::*;
use nftlbd::netlink::*;

fn commit(conn: &mut Connection, f: impl FnOnce(&mut Batch)) {
    let mut b = Batch::new();
    f(&mut b);
    conn.commit(b).unwrap();
}

fn without_handles_chain(mut c: Chain) -> Chain {
    c.handle = None;
    c
}

#[test]
fn tables_and_base_chains_of_every_hook() {
    in_netns(|| {
        let mut conn = Connection::new().unwrap();
        let hooks = [
            (
                "c-pre",
                ChainType::Nat,
                HookPoint::Prerouting,
                -100,
                Verdict::Accept,
            ),
            ("c-in", ChainType::Filter, HookPoint::Input, 0, Verdict::Drop),
            (
                "c-fwd",
                ChainType::Filter,
                HookPoint::Forward,
                -100,
                Verdict::Accept,
            ),
            (
                "c-out",
                ChainType::Route,
                HookPoint::Output,
                -150,
                Verdict::Accept,
            ),
            (
                "c-post",
                ChainType::Nat,
                HookPoint::Postrouting,
                100,
                Verdict::Accept,
            ),
        ];
        let mut chains = Vec::new();
        for (name, ty, point, prio, policy) in hooks {
            chains.push(Chain::base(
                Family::Ip6,
                "t6",
                name,
                ty,
                Hook::new(point, prio),
                policy,
            ));
        }
        chains.push(Chain::regular(Family::Ip6, "t6", "plain"));
        let ingress = Chain::base(
            Family::Netdev,
            "nd",
            "ingress-lo",
            ChainType::Filter,
            Hook {
                point: HookPoint::Ingress,
                priority: 101,
                device: Some("lo".into()),
            },
            Verdict::Accept,
        );
        let owned = Table {
            flags: NFT_TABLE_F_OWNER | nftlbd::netlink::consts::NFT_TABLE_F_PERSIST,
            ..Table::new(Family::Ip, "owned")
        };
        commit(&mut conn, |b| {
            b.add_table(&Table::new(Family::Ip6, "t6")).unwrap();
            for c in &chains {
                b.add_chain(c).unwrap();
            }
            b.add_table(&Table::new(Family::Netdev, "nd")).unwrap();
            b.add_chain(&ingress).unwrap();
            b.add_table(&owned).unwrap();
        });
        let text = normalize(&nft(&["list", "table", "ip6", "t6"]));
        assert_eq!(
            text,
            "table ip6 t6 {\n\
             chain c-pre {\ntype nat hook prerouting priority dstnat; policy accept;\n}\n\
             chain c-in {\ntype filter hook input priority filter; policy drop;\n}\n\
             chain c-fwd {\ntype filter hook forward priority -100; policy accept;\n}\n\
             chain c-out {\ntype route hook output priority mangle; policy accept;\n}\n\
             chain c-post {\ntype nat hook postrouting priority srcnat; policy accept;\n}\n\
             chain plain {\n}\n}"
        );
        let listed: Vec<Chain> = conn
            .list_chains(Family::Ip6, "t6")
            .unwrap()
            .into_iter()
            .map(without_handles_chain)
            .collect();
        assert_eq!(listed, chains);
        let nd: Vec<Chain> = conn
            .list_chains(Family::Netdev, "nd")
            .unwrap()
            .into_iter()
            .map(without_handles_chain)
            .collect();
        assert_eq!(nd, vec![ingress]);

        let tables = conn.list_tables(None).unwrap();
        let names: Vec<String> = tables
            .iter()
            .map(|t| format!("{} {}", t.family, t.name))
            .collect();
        // One NFPROTO_UNSPEC dump: every family, in creation order.
        assert_eq!(names, ["ip6 t6", "netdev nd", "ip owned"]);
        let o = tables.iter().find(|t| t.name == "owned").unwrap();
        assert_eq!(o.flags, owned.flags);
        assert_eq!(o.owner, Some(conn.portid()), "owner is our socket");
        let listed = nft(&["list", "table", "ip", "owned"]);
        assert!(listed.contains("flags owner"), "{listed}");
        // Someone else cannot delete an owned table (nor even dry-run a change to it).
        assert!(nft_stdin(&[], "delete table ip owned\n").is_err());
        assert_listing_reparses(&nft(&["list", "table", "ip6", "t6"]));
        assert_listing_reparses(&nft(&["list", "table", "netdev", "nd"]));
    });
}

#[test]
fn sets_and_maps_of_every_shape_list_as_nft_would() {
    in_netns(|| {
        let mut conn = Connection::new().unwrap();
        let f = Family::Ip;
        let ports =
            Set::new(f, "t", "ports", TypeSpec::of(DataType::InetService)).with_flags(NFT_SET_INTERVAL);
        let mut blacklist =
            Set::new(f, "t", "black", TypeSpec::of(DataType::Ipv4Addr)).with_flags(NFT_SET_INTERVAL);
        blacklist.userdata.merge_elements = true;
        blacklist.exprs = vec![Expr::counter()];
        let services = Set::map(
            f,
            "t",
            "svc",
            TypeSpec::concat(&[DataType::InetProto, DataType::Ipv4Addr, DataType::InetService]),
            TypeSpec::of(DataType::Verdict),
        )
        .with_flags(NFT_SET_INTERVAL);
        let sessions = Set {
            timeout_ms: Some(50_000),
            size: Some(65535),
            ..Set::map(
                f,
                "t",
                "persist",
                TypeSpec::concat(&[DataType::Ipv4Addr, DataType::InetService]),
                TypeSpec::of(DataType::Mark),
            )
            .with_flags(NFT_SET_TIMEOUT)
        };
        let mut sched = Set::map(
            f,
            "t",
            "sched",
            TypeSpec::of(DataType::Integer(4)),
            TypeSpec::of(DataType::Mark),
        )
        .with_flags(NFT_SET_INTERVAL);
        sched.userdata.key_typeof = Some(Typeof::Numgen {
            random: true,
            modulus: 10,
            offset: 0,
        });
        sched.userdata.data_typeof = Some(Typeof::Ct { key: NFT_CT_MARK });
        sched.userdata.data_byteorder = Some(ByteOrder::Host);
        let v6 = Set::new(Family::Ip6, "t6", "v6", TypeSpec::of(DataType::Ipv6Addr));
        let macs = Set::map(
            f,
            "t",
            "macs",
            TypeSpec::of(DataType::Ipv4Addr),
            TypeSpec::of(DataType::EtherAddr),
        );
        let fixed = Set::new(f, "t", "fixed", TypeSpec::of(DataType::Ipv4Addr)).with_flags(NFT_SET_CONSTANT);

        commit(&mut conn, |b| {
            b.add_table(&Table::new(f, "t")).unwrap();
            b.add_chain(&Chain::regular(f, "t", "web")).unwrap();
            for s in [&ports, &blacklist, &services, &sessions, &sched, &macs, &fixed] {
                b.add_set(s).unwrap();
            }
            // A constant set takes its elements only in the transaction that creates it.
            b.add_elems(f, "t", "fixed", &[SetElem::key(ip4([10, 0, 0, 1]))])
                .unwrap();
            let mut e = SetElem::range(&port(80), &port(80), None);
            e.extend(SetElem::range(&port(8000), &port(8010), None));
            b.add_elems(f, "t", "ports", &e).unwrap();
            let mut e = SetElem::range(&ip4([10, 0, 0, 0]), &ip4([10, 255, 255, 255]), None);
            e.extend(SetElem::range(
                &ip4([192, 168, 1, 5]),
                &ip4([192, 168, 1, 9]),
                None,
            ));
            b.add_elems(f, "t", "black", &e).unwrap();
            let key = |p: u16| concat(&[&[6], &[10, 0, 0, 1], &port(p)]);
            b.add_elems(
                f,
                "t",
                "svc",
                &[SetElem::concat_range(
                    key(80),
                    key(90),
                    Some(Data::Verdict(Verdict::Goto("web".into()))),
                )],
            )
            .unwrap();
            let client = concat(&[&[10, 9, 0, 1], &port(4000)]);
            b.add_elems(
                f,
                "t",
                "persist",
                &[
                    SetElem::mapping(client, Data::Value(7u32.to_ne_bytes().to_vec().into()))
                        .with_timeout(20_000),
                ],
            )
            .unwrap();
            // Interval keys compare as big-endian bytes, so host-order values (numgen) are stored
            // big-endian; rules convert with a byteorder expression, as nft does.
            let mark = |m: u32| Some(Data::Value(m.to_ne_bytes().to_vec().into()));
            let mut e = SetElem::range(&0u32.to_be_bytes(), &4u32.to_be_bytes(), mark(1));
            e.extend(SetElem::range(&5u32.to_be_bytes(), &9u32.to_be_bytes(), mark(2)));
            b.add_elems(f, "t", "sched", &e).unwrap();
            b.add_elems(
                f,
                "t",
                "macs",
                &[SetElem::mapping(
                    ip4([10, 1, 0, 2]),
                    Data::Value(vec![2, 0, 0, 0, 0, 2].into()),
                )],
            )
            .unwrap();
            b.add_table(&Table::new(Family::Ip6, "t6")).unwrap();
            b.add_set(&v6).unwrap();
            let mut a = vec![0u8; 16];
            a[0] = 0xfd;
            a[15] = 1;
            b.add_elems(Family::Ip6, "t6", "v6", &[SetElem::key(a)]).unwrap();
        });

        let text = normalize(&nft(&["list", "table", "ip", "t"]));
        let expires = regex_free_strip_expires(&text);
        assert_eq!(
            expires,
            "table ip t {\n\
             set ports {\ntype inet_service\nflags interval\nelements = { 80, 8000-8010 }\n}\n\
             set black {\ntype ipv4_addr\nflags interval\ncounter\nauto-merge\nelements = { 10.0.0.0/8 counter packets 0 bytes 0, 192.168.1.5-192.168.1.9 counter packets 0 bytes 0 }\n}\n\
             map svc {\ntype inet_proto . ipv4_addr . inet_service : verdict\nflags interval\nelements = { tcp . 10.0.0.1 . 80-90 : goto web }\n}\n\
             map persist {\ntype ipv4_addr . inet_service : mark\nsize 65535\ntimeout 50s\nelements = { 10.9.0.1 . 4000 timeout 20s expires : 0x00000007 }\n}\n\
             map sched {\ntypeof numgen random mod 10 : ct mark\nflags interval\nelements = { 0-4 : 0x00000001, 5-9 : 0x00000002 }\n}\n\
             map macs {\ntype ipv4_addr : ether_addr\nelements = { 10.1.0.2 : 02:00:00:00:00:02 }\n}\n\
             set fixed {\ntype ipv4_addr\nflags constant\nelements = { 10.0.0.1 }\n}\n\
             chain web {\n}\n}"
        );
        assert_eq!(
            normalize(&nft(&["list", "set", "ip6", "t6", "v6"]))
                .lines()
                .nth(3),
            Some("elements = { fd00::1 }")
        );

        // Dumps decode back to the same definitions.
        let sets = conn.list_sets(f, "t").unwrap();
        for want in [&ports, &blacklist, &services, &sessions, &sched, &macs, &fixed] {
            let mut got = sets.iter().find(|s| s.name == want.name).unwrap().clone();
            got.handle = None;
            assert_eq!(&got, want, "set {} decodes differently", want.name);
        }
        // Elements, with the remaining timeout of the session.
        let elems = conn.list_elems(f, "t", "persist").unwrap();
        assert_eq!(elems.len(), 1);
        assert_eq!(elems[0].timeout_ms(), Some(20_000));
        let left = elems[0].expires_ms().expect("dynamic element has an expiry");
        assert!(left <= 20_000 && left > 10_000, "expires in {left} ms");
        let svc = conn.list_elems(f, "t", "svc").unwrap();
        assert_eq!(
            svc[0].key_end(),
            Some(&concat(&[&[6], &[10, 0, 0, 1], &port(90)])[..])
        );
        assert_eq!(svc[0].data, Some(Data::Verdict(Verdict::Goto("web".into()))));
        let black = conn.list_elems(f, "t", "black").unwrap();
        assert!(
            black
                .iter()
                .filter(|e| !e.interval_end)
                .all(|e| e.exprs() == [Expr::counter()]),
            "per-element counters: {black:?}"
        );
        assert_nft_reparses();
    });
}

/// Expiry times tick: replace "expires 19s…" by "expires" so listings compare.
fn regex_free_strip_expires(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("expires ") {
        out.push_str(&rest[..i + "expires".len()]);
        let tail = &rest[i + "expires ".len()..];
        let end = tail.find([' ', ',', '}']).unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn large_element_lists_are_chunked_and_deletes_and_flush_work() {
    in_netns(|| {
        let mut conn = Connection::new().unwrap();
        let f = Family::Ip;
        let map = Set::map(
            f,
            "t",
            "backends",
            TypeSpec::of(DataType::Mark),
            TypeSpec::concat(&[DataType::Ipv4Addr, DataType::InetService]),
        );
        let elems: Vec<SetElem> = (0..20_000u32)
            .map(|i| {
                let ip = [10, 100, (i >> 8) as u8, i as u8];
                SetElem::mapping(
                    i.to_ne_bytes().to_vec(),
                    Data::Value(concat(&[&ip, &port(80)]).into()),
                )
            })
            .collect();
        let mut b = Batch::new();
        b.add_table(&Table::new(f, "t")).unwrap();
        b.add_set(&map).unwrap();
        b.add_elems(f, "t", "backends", &elems).unwrap();
        assert!(
            b.len() > 10,
            "20,000 elements must span several messages, got {}",
            b.len()
        );
        conn.commit(b).unwrap();
        let mut got = conn.list_elems(f, "t", "backends").unwrap();
        got.sort_by_key(|e| u32::from_ne_bytes(e.key[..4].try_into().unwrap()));
        assert_eq!(got.len(), elems.len(), "elements lost between commit and dump");
        assert_eq!(got, elems);

        commit(&mut conn, |b| {
            b.del_elems(f, "t", "backends", &elems[..10]).unwrap()
        });
        assert_eq!(conn.list_elems(f, "t", "backends").unwrap().len(), 19_990);
        commit(&mut conn, |b| b.flush_set(f, "t", "backends").unwrap());
        assert!(conn.list_elems(f, "t", "backends").unwrap().is_empty());
        commit(&mut conn, |b| b.del_set(f, "t", "backends").unwrap());
        assert!(conn.list_sets(f, "t").unwrap().is_empty());
    });
}

#[test]
fn named_objects_counters_quota_limit_helper() {
    in_netns(|| {
        let mut conn = Connection::new().unwrap();
        let f = Family::Ip;
        let objs = vec![
            Obj::new(
                f,
                "t",
                "hits",
                ObjKind::Counter {
                    packets: 5,
                    bytes: 300,
                },
            ),
            Obj::new(
                f,
                "t",
                "cap",
                ObjKind::Quota {
                    bytes: 2 << 20,
                    consumed: 0,
                    over: true,
                },
            ),
            Obj::new(
                f,
                "t",
                "slow",
                ObjKind::Limit(Limit {
                    rate: 10,
                    unit: RateUnit::Minute,
                    burst: 7,
                    bytes: false,
                    over: false,
                }),
            ),
            Obj::new(
                f,
                "t",
                "ftp-tcp",
                ObjKind::CtHelper {
                    helper: "ftp".into(),
                    l3proto: 2,
                    l4proto: 6,
                },
            ),
        ];
        commit(&mut conn, |b| {
            b.add_table(&Table::new(f, "t")).unwrap();
            for o in &objs {
                b.add_obj(o).unwrap();
            }
        });
        let text = normalize(&nft(&["list", "table", "ip", "t"]));
        assert_eq!(
            text,
            "table ip t {\n\
             counter hits {\npackets 5 bytes 300\n}\n\
             quota cap {\nover 2 mbytes\n}\n\
             limit slow {\nrate 10/minute burst 7 packets\n}\n\
             ct helper ftp-tcp {\ntype \"ftp\" protocol tcp\nl3proto ip\n}\n}"
        );
        let mut listed = conn.list_objs(f, "t", None, false).unwrap();
        listed.iter_mut().for_each(|o| o.handle = None);
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        let mut want = objs.clone();
        want.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(listed, want);
        // Reading with reset returns the values and zeroes them.
        let c = conn.list_objs(f, "t", Some(NFT_OBJECT_COUNTER), true).unwrap();
        assert_eq!(
            c[0].kind,
            ObjKind::Counter {
                packets: 5,
                bytes: 300
            }
        );
        let c = conn.list_objs(f, "t", Some(NFT_OBJECT_COUNTER), false).unwrap();
        assert_eq!(c[0].kind, ObjKind::Counter { packets: 0, bytes: 0 });
        commit(&mut conn, |b| b.del_obj(f, "t", NFT_OBJECT_QUOTA, "cap").unwrap());
        assert_eq!(conn.list_objs(f, "t", None, false).unwrap().len(), 3);
        assert_nft_reparses();
    });
}

fn mark_rule(chain: &str, m: u32) -> Rule {
    Rule::new(
        Family::Ip,
        "t",
        chain,
        vec![
            Expr::immediate(reg::R1, m.to_ne_bytes()),
            Expr::MetaSet {
                key: NFT_META_MARK,
                sreg: reg::R1,
            },
        ],
    )
}

fn marks(conn: &mut Connection) -> Vec<u32> {
    conn.list_rules(Family::Ip, "t", Some("c"))
        .unwrap()
        .iter()
        .map(|r| match &r.exprs[0] {
            Expr::Immediate {
                data: Data::Value(v), ..
            } => u32::from_ne_bytes(v[..4].try_into().unwrap()),
            e => panic!("unexpected {e:?}"),
        })
        .collect()
}

#[test]
fn rules_append_insert_position_replace_delete_and_flush() {
    in_netns(|| {
        let mut conn = Connection::new().unwrap();
        commit(&mut conn, |b| {
            b.add_table(&Table::new(Family::Ip, "t")).unwrap();
            b.add_chain(&Chain::regular(Family::Ip, "t", "c")).unwrap();
            b.add_rule(&mark_rule("c", 1)).unwrap();
            b.add_rule(&mark_rule("c", 2)).unwrap();
            b.insert_rule(&mark_rule("c", 0), None).unwrap();
        });
        assert_eq!(marks(&mut conn), [0, 1, 2]);
        let h: Vec<u64> = conn
            .list_rules(Family::Ip, "t", Some("c"))
            .unwrap()
            .iter()
            .map(|r| r.handle.unwrap())
            .collect();
        commit(&mut conn, |b| {
            b.add_rule_after(&mark_rule("c", 11), h[1]).unwrap();
            b.insert_rule(&mark_rule("c", 19), Some(h[2])).unwrap();
        });
        assert_eq!(marks(&mut conn), [0, 1, 11, 19, 2]);
        commit(&mut conn, |b| {
            b.replace_rule(&Rule {
                handle: Some(h[0]),
                ..mark_rule("c", 100)
            })
            .unwrap();
            b.del_rule(Family::Ip, "t", "c", h[2]).unwrap();
        });
        assert_eq!(marks(&mut conn), [100, 1, 11, 19]);
        commit(&mut conn, |b| b.flush_chain(Family::Ip, "t", "c").unwrap());
        assert!(marks(&mut conn).is_empty());
        commit(&mut conn, |b| b.del_chain(Family::Ip, "t", "c").unwrap());
        assert!(conn.list_chains(Family::Ip, "t").unwrap().is_empty());
        assert!(
            Batch::new().replace_rule(&mark_rule("c", 1)).is_err(),
            "replace needs a handle"
        );
    });
}

#[test]
fn a_refused_batch_names_the_culprit_and_changes_nothing() {
    in_netns(|| {
        let mut conn = Connection::new().unwrap();
        // Someone else's ruleset, which we must never disturb.
        nft_stdin(
            &[],
            "table inet fw { chain input { type filter hook input priority 0; tcp dport 22 accept; }; }\n",
        )
        .unwrap();
        commit(&mut conn, |b| {
            b.add_table(&Table::new(Family::Ip, "t")).unwrap();
            b.add_chain(&Chain::regular(Family::Ip, "t", "c")).unwrap();
            b.add_rule(&mark_rule("c", 1)).unwrap();
        });
        let before = nft(&["list", "ruleset"]);
        let gen_before = conn.generation().unwrap();

        let mut b = Batch::new();
        b.add_chain(&Chain::regular(Family::Ip, "t", "new")).unwrap();
        b.add_rule(&mark_rule("new", 2)).unwrap();
        b.flush_chain(Family::Ip, "t", "c").unwrap();
        b.add_set(&Set::new(Family::Ip, "t", "s", TypeSpec::of(DataType::Ipv4Addr)))
            .unwrap();
        b.add_rule(&Rule::new(
            Family::Ip,
            "t",
            "c",
            vec![Expr::verdict(Verdict::Jump("missing".into()))],
        ))
        .unwrap();
        b.add_rule(&mark_rule("c", 3)).unwrap();
        let err = conn.commit(b).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.errno(), Some(libc::ENOENT), "{msg}");
        assert!(
            msg.contains("add rule ip t c (message 5 of 6)"),
            "error must name the refused message: {msg}"
        );
        assert!(
            msg.contains("expression #1 (immediate)"),
            "error must name the expression: {msg}"
        );

        assert_eq!(
            nft(&["list", "ruleset"]),
            before,
            "a failed batch changed the ruleset"
        );
        assert_eq!(conn.generation().unwrap(), gen_before);

        // Elements with a value of the wrong length: refused, nothing applied.
        let mut b = Batch::new();
        b.add_set(&Set::new(Family::Ip, "t", "s2", TypeSpec::of(DataType::Ipv4Addr)))
            .unwrap();
        b.add_elems(Family::Ip, "t", "s2", &[SetElem::key(vec![1, 2, 3])])
            .unwrap();
        let err = conn.commit(b).unwrap_err();
        assert!(err.to_string().contains("add elements 0..1 of ip t s2"), "{err}");
        assert_eq!(nft(&["list", "ruleset"]), before);
    });
}

#[test]
fn rulesets_written_by_nft_decode_and_re_encode_identically() {
    // A ruleset in nftlb's layout, written by nft itself.
    let ruleset = "table ip nftlb {
        map filter-proto-services { type inet_proto . ipv4_addr . inet_service : verdict; elements = { tcp . 10.0.0.100 . 80 : goto filter-lb01 } }
        map nat-proto-services { type inet_proto . ipv4_addr . inet_service : verdict; elements = { tcp . 10.0.0.100 . 80 : goto nat-lb01 } }
        map services-back-m { type mark : ipv4_addr; }
        map static-sessions-lb01 { type ipv4_addr : mark; }
        map persist-lb01 { type ipv4_addr : mark; size 65535; timeout 1m; }
        set est-connlimit-lb01 { type ipv4_addr; size 65535; flags dynamic; }
        set new-rtlimit-lb01 { type ipv4_addr; size 65535; flags dynamic,timeout; timeout 2m; }
        chain filter { type filter hook prerouting priority mangle; policy accept;
            meta mark 0x00000000 meta mark set ct mark
            ip protocol . ip daddr . th dport vmap @filter-proto-services; }
        chain prerouting { type nat hook prerouting priority dstnat; policy accept;
            ct state new meta mark 0x00000000 meta mark set ct mark
            ip protocol . ip daddr . th dport vmap @nat-proto-services; }
        chain postrouting { type nat hook postrouting priority srcnat; policy accept;
            ct mark 0x00000000 ct mark set meta mark
            ct mark & 0x80000000 == 0x80000000 masquerade
            snat to ct mark map @services-back-m; }
        chain filter-lb01 {
            ct state new add @new-rtlimit-lb01 { ip saddr limit rate over 100/second burst 10 packets } log prefix \"KNAME-lb01 \" drop
            ct state new add @est-connlimit-lb01 { ip saddr ct count over 20 } drop
            ct mark set ip saddr map @static-sessions-lb01 accept
            ct state new ct mark set ip saddr map @persist-lb01
            ct state new ct mark 0x00000000 ct mark set numgen random mod 10 map { 0-4 : 0x80000001, 5-9 : 0x80000002 }
            ct mark != { 0x00000000, 0x80000000 } update @persist-lb01 { ip saddr : ct mark }; }
        chain nat-lb01 { ip protocol tcp dnat to ct mark map { 0x80000001 : 10.1.0.2 . 8080, 0x80000002 : 10.1.0.3 . 8080 }; }
    }\n";
    let r = ruleset.to_string();
    let (objects, listing) = in_netns(move || {
        nft_stdin(&[], &r).unwrap();
        let mut conn = Connection::new().unwrap();
        let f = Family::Ip;
        let sets = conn.list_sets(f, "nftlb").unwrap();
        let elems: Vec<(String, Vec<SetElem>)> = sets
            .iter()
            .map(|s| (s.name.clone(), conn.list_elems(f, "nftlb", &s.name).unwrap()))
            .collect();
        let chains = conn.list_chains(f, "nftlb").unwrap();
        let rules = conn.list_rules(f, "nftlb", None).unwrap();
        assert_eq!(rules.len(), 14);
        // Anonymous sets (the inline maps) come back as sets too, bound to their rules.
        assert!(sets.iter().any(|s| s.flags & NFT_SET_ANONYMOUS != 0));
        ((sets, elems, chains, rules), nft(&["list", "ruleset"]))
    });
    // Write what we decoded into a fresh namespace: nft must list the very same ruleset.
    let relisted = in_netns(move || {
        let (sets, elems, chains, rules) = objects;
        let mut conn = Connection::new().unwrap();
        let mut b = Batch::new();
        b.add_table(&Table::new(Family::Ip, "nftlb")).unwrap();
        for c in &chains {
            b.add_chain(&Chain {
                handle: None,
                ..c.clone()
            })
            .unwrap();
        }
        for s in &sets {
            b.add_set(&Set {
                handle: None,
                ..s.clone()
            })
            .unwrap();
        }
        for (set, e) in &elems {
            if !e.is_empty() {
                b.add_elems(Family::Ip, "nftlb", set, e).unwrap();
            }
        }
        for r in &rules {
            b.add_rule(&Rule {
                handle: None,
                ..r.clone()
            })
            .unwrap();
        }
        conn.commit(b).unwrap();
        nft(&["list", "ruleset"])
    });
    assert_eq!(relisted, listing);
}

#[test]
fn monitor_reports_our_changes_and_everyone_elses() {
    in_netns(|| {
        let mut mon = Monitor::new().unwrap();
        let mut conn = Connection::new().unwrap();
        commit(&mut conn, |b| {
            b.add_table(&Table::new(Family::Ip, "t")).unwrap();
            b.add_chain(&Chain::regular(Family::Ip, "t", "c")).unwrap();
            b.add_set(&Set::new(Family::Ip, "t", "s", TypeSpec::of(DataType::Ipv4Addr)))
                .unwrap();
            b.add_elems(Family::Ip, "t", "s", &[SetElem::key(ip4([1, 2, 3, 4]))])
                .unwrap();
            b.add_rule(&mark_rule("c", 1)).unwrap();
        });
        let mut ours = Vec::new();
        loop {
            let e = mon
                .next(Some(std::time::Duration::from_secs(5)))
                .unwrap()
                .expect("event before timeout");
            assert_eq!(e.origin, conn.portid());
            let done = matches!(e.change, Change::NewGen { .. });
            ours.push(e.change);
            if done {
                break;
            }
        }
        assert!(matches!(&ours[0], Change::NewTable(t) if t.name == "t"));
        assert!(matches!(&ours[1], Change::NewChain(c) if c.name == "c"));
        assert!(matches!(&ours[2], Change::NewSet(s) if s.name == "s"));
        assert!(
            matches!(&ours[3], Change::NewElems { set, elems, .. } if set == "s" && elems[0].key == [1, 2, 3, 4])
        );
        assert!(matches!(&ours[4], Change::NewRule(r) if r.exprs == mark_rule("c", 1).exprs));

        // An operator flushes the whole ruleset: we see our table go, from someone else.
        nft(&["flush", "ruleset"]);
        let mut saw_delete = false;
        while let Some(e) = mon.next(Some(std::time::Duration::from_secs(5))).unwrap() {
            if let Change::DelTable(t) = &e.change {
                assert_eq!(t.name, "t");
                assert_ne!(e.origin, conn.portid());
                saw_delete = true;
            }
            if let Change::NewGen { process, .. } = &e.change {
                assert_eq!(process.as_deref(), Some("nft"));
                break;
            }
        }
        assert!(saw_delete, "the flush was not reported");
    });
}

#[test]
fn foreign_change_sees_what_is_queued_without_waiting_and_skips_ours() {
    in_netns(|| {
        let mut mon = Monitor::new().unwrap();
        let mut conn = Connection::new().unwrap();
        let ours = conn.portid();
        commit(&mut conn, |b| {
            b.add_table(&Table::new(Family::Ip, "t")).unwrap();
            b.add_chain(&Chain::regular(Family::Ip, "t", "c")).unwrap();
        });
        // Our own transaction's events are queued by the time the commit returns: read now,
        // they are skipped, and a second look finds nothing left.
        assert!(!mon.foreign_change(ours, "t").unwrap());
        assert!(
            mon.next(Some(std::time::Duration::from_millis(50)))
                .unwrap()
                .is_none()
        );
        // Someone else's change to another table is not ours to repair.
        nft(&["add", "table", "ip", "u"]);
        assert!(!mon.foreign_change(ours, "t").unwrap());
        nft(&["add", "chain", "ip", "t", "d"]);
        assert!(mon.foreign_change(ours, "t").unwrap());
        assert!(!mon.foreign_change(ours, "t").unwrap());
        // In any family: the name is what makes it ours.
        nft(&["add", "table", "ip6", "t"]);
        assert!(mon.foreign_change(ours, "t").unwrap());
    });
}

#[test]
fn a_paused_monitor_hears_none_of_ours_and_counts_what_others_committed() {
    in_netns(|| {
        let mut mon = Monitor::new().unwrap();
        let mut conn = Connection::new().unwrap();
        let ours = conn.portid();
        let quiet = |b: &mut Batch, chain: &str| {
            b.add_table(&Table::new(Family::Ip, "t")).unwrap();
            b.add_chain(&Chain::regular(Family::Ip, "t", chain)).unwrap();
        };
        let silence = std::time::Duration::from_millis(50);

        // Only our own transactions while paused: nothing queued, nothing foreign.
        let paused = mon.pause();
        let before = conn.commits();
        commit(&mut conn, |b| quiet(b, "a"));
        commit(&mut conn, |b| quiet(b, "b"));
        // An empty batch commits nothing and is not counted.
        commit(&mut conn, |_| {});
        assert_eq!(conn.commits() - before, 2);
        mon.resume(paused, 2).unwrap();
        assert!(mon.next(Some(silence)).unwrap().is_none());
        assert!(!mon.foreign_change(ours, "t").unwrap());

        // Someone else commits while we are paused: not heard, but counted, once.
        let paused = mon.pause();
        nft(&["add", "chain", "ip", "t", "d"]);
        commit(&mut conn, |b| quiet(b, "c"));
        mon.resume(paused, 1).unwrap();
        assert!(mon.next(Some(silence)).unwrap().is_none());
        assert!(mon.foreign_change(ours, "t").unwrap());
        assert!(!mon.foreign_change(ours, "t").unwrap());

        // Resumed, it hears everyone again.
        nft(&["add", "chain", "ip", "t", "e"]);
        assert!(mon.foreign_change(ours, "t").unwrap());
        commit(&mut conn, |b| quiet(b, "f"));
        assert!(!mon.foreign_change(ours, "t").unwrap());
    });
}
