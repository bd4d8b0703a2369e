//! The engine against the kernel without traffic: what it commits, that `nft` can read it back,
//! that changes are O(change), that refusals change nothing, and the `nftlbd` command. Needs root.

mod common;

use common::{in_netns, nft, nft_stdin};
use nftlbd::engine::{Allocation, Engine, EngineError, KernelEngine, MemoryEngine};
use nftlbd::model::{Config, parse_config};
use serde_json::{Value, json};

fn config(farms: Value) -> Config {
    parse_config(&json!({ "farms": farms }).to_string()).expect("valid test configuration")
}

fn farm(name: &str, vip: &str, n: usize) -> Value {
    let b: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("b{i}"), "ip-addr": format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256)}))
        .collect();
    json!({"name": name, "virtual-addresses": [vip], "virtual-ports": "80,443,8000-8100", "backends": b})
}

#[test]
fn every_layout_feature_lists_and_reparses_with_nft() {
    in_netns(|| {
        let c = config(json!([
            // nft 1.0.6 cannot re-read a dynset key longer than about 20 bytes (its register
            // allocator asserts; it cannot write such a rule either), e.g. IPv6 srcip + srcport
            // persistence. The kernel runs them; this listing test keeps to what nft can read.
            {"name": "a", "family": "dual", "virtual-addresses": ["192.0.2.1", "2001:db8::1"], "protocol": "all",
             "scheduler": "hash", "sched-param": ["srcip", "srcport", "dstmac"], "mark": 7,
             "backends": [{"name": "x", "ip-addr": "10.0.0.1", "port": 81, "mark": 9, "source-addr": "192.0.2.200"},
                          {"name": "y", "ip-addr": "2001:db8:1::1", "weight": 4},
                          {"name": "z", "ip-addr": "10.0.0.3", "state": "drain"}]},
            {"name": "p", "virtual-addresses": ["192.0.2.5"], "persistence": ["srcip", "srcport", "srcmac"], "persist-ttl": 90,
             "backends": [{"name": "x", "ip-addr": "10.0.0.1"}],
             "sessions": [{"client": "198.51.100.1 . 1000 . 02:00:00:00:00:01", "backend": "x"}]},
            {"name": "p6", "family": "ipv6", "virtual-addresses": ["2001:db8::5"], "persistence": ["srcip"],
             "backends": [{"name": "x", "ip-addr": "2001:db8:1::1"}]},
            {"name": "b", "scheduler": "symhash", "mode": "dnat", "virtual-addresses": ["192.0.2.2"], "virtual-ports": "",
             "backends": [{"name": "x", "ip-addr": "10.0.0.9"}]},
            {"name": "c", "scheduler": "weight", "protocol": "sctp", "virtual-addresses": ["192.0.2.3"],
             "persistence": ["dstip", "dstport", "dstmac"], "backends": []},
            {"name": "d", "mode": "local", "virtual-addresses": ["192.0.2.4"]},
            {"name": "h", "scheduler": "hash", "sched-param": ["srcip", "dstip", "srcport", "dstport", "srcmac", "dstmac"],
             "virtual-addresses": ["192.0.2.6"], "backends": [{"name": "x", "ip-addr": "10.0.0.1"}]}
        ]));
        let mut e = KernelEngine::open().unwrap();
        e.reconcile(c.clone(), Allocation::default()).unwrap();
        let listing = nft(&["list", "ruleset"]);
        nft_stdin(&["-c"], &listing)
            .unwrap_or_else(|err| panic!("nft cannot re-read our tables: {err}\n{listing}"));
        for want in [
            "jhash ip saddr . ip daddr . th sport . th dport . ether saddr . ether daddr mod 1 seed 0x0 offset 7340032",
            "jhash ip6 saddr . th sport . ether daddr mod 4 seed 0x0 offset 1048576",
            "symhash mod 1 offset 4194304",
            "numgen random mod 0",
            "ct mark set 0x00060000\n\t\taccept",
            "update @persist-srcip-srcport-srcmac { ct mark & 0xffff0000 . ip saddr . th sport . ether saddr timeout 1m30s : ct mark }",
            "0x00020000 . 198.51.100.1 . 1000 . 02:00:00:00:00:01 : 0x00020001",
            "update @persist-srcip { ct mark & 0xffff0000 . ip6 saddr timeout 1m : ct mark }",
            "0x00010001 : 192.0.2.200",
            "0x00010001 : 0x00000009",
            "0x00010003 : 0x00000007",
        ] {
            if want == "numgen random mod 0" {
                assert!(
                    !listing.contains(want),
                    "a farm without backends has no scheduler rule"
                );
                continue;
            }
            assert!(listing.contains(want), "missing {want:?} in\n{listing}");
        }
        // Reconciling with the same state reads everything back and finds nothing to do.
        let alloc = e.allocation().clone();
        let again = e.reconcile(c, alloc).unwrap();
        assert_eq!(again.changes, Vec::<String>::new());
        assert_eq!(nft(&["list", "ruleset"]), listing);
    });
}

/// How many set elements a transaction's messages carry (`add elements 0..2 of …` is two).
fn elements(changes: &[String]) -> usize {
    changes
        .iter()
        .filter_map(|c| c.split_once(" elements ")?.1.split_once(' '))
        .filter_map(|(range, _)| {
            let (a, b) = range.split_once("..")?;
            Some(b.parse::<usize>().ok()? - a.parse::<usize>().ok()?)
        })
        .sum()
}

#[test]
fn one_backend_more_or_less_in_a_large_farm_is_a_small_transaction() {
    in_netns(|| {
        let mut farms = json!([farm("big", "192.0.2.1", 2000), farm("other", "192.0.2.2", 3)]);
        let mut e = KernelEngine::open().unwrap();
        let first = e.reconcile(config(farms.clone()), Allocation::default()).unwrap();
        assert!(first.messages > 5);
        farms[0]["backends"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "new", "ip-addr": "10.200.0.1"}));
        let add = e.apply(config(farms.clone())).unwrap();
        // The scheduling rule (new modulus) is replaced; one slot, one target, one masquerade entry.
        assert!(add.messages <= 12, "{:#?}", add.changes);
        assert!(
            add.changes.iter().all(|c| !c.contains("farm-other")),
            "{:#?}",
            add.changes
        );
        farms[0]["backends"].as_array_mut().unwrap().remove(7);
        let del = e.apply(config(farms.clone())).unwrap();
        assert!(del.messages <= 14, "{:#?}", del.changes);
        // A backend's state, weight and priority: O(change) messages whatever the farm's size
        // (a change that went back to re-sending the farm would be thousands).
        for (i, (key, value, most)) in [
            ("state", json!("drain"), 12),
            ("state", json!("up"), 12),
            ("weight", json!(3), 14),
            ("priority", json!(2), 14),
            ("priority", json!(1), 14),
        ]
        .into_iter()
        .enumerate()
        {
            farms[0]["backends"][20][key] = value;
            let o = e.apply(config(farms.clone())).unwrap();
            println!(
                "change {i}: {key}: {} messages, {} elements",
                o.messages,
                elements(&o.changes)
            );
            assert!(o.messages <= most, "{key}: {:#?}", o.changes);
            assert!(elements(&o.changes) <= 8, "{key}: {:#?}", o.changes);
            // The shard's chain binds the slot map; re-adding its rule would walk the map.
            assert!(
                o.changes.iter().all(|c| !c.contains("pick-")),
                "{key}: {:#?}",
                o.changes
            );
        }
        // The rules a backend change replaces bind no slot map (binding one walks all of it).
        let big = nft(&["list", "chain", "ip", "nftlbd", "farm-big"]);
        assert!(!big.contains("@slots-"), "{big}");
        assert!(big.contains("ct mark set numgen inc mod "), "{big}");
        assert!(big.contains(" offset 1048576 jump pick-0\n"), "{big}");
        let pick = nft(&["list", "chain", "ip", "nftlbd", "pick-0"]);
        assert!(
            pick.contains("\t\tct mark set ct mark map @slots-0 return\n\t\tdrop\n"),
            "{pick}"
        );
        // A batch of 100 state changes in one farm is one transaction of O(100) messages.
        for b in farms[0]["backends"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .skip(100)
            .take(100)
        {
            b["state"] = json!("down");
        }
        let batch = e.apply(config(farms.clone())).unwrap();
        println!(
            "batch of 100: {} messages, {} elements",
            batch.messages,
            elements(&batch.changes)
        );
        assert!(batch.messages <= 12, "{:#?}", batch.changes);
        assert!(elements(&batch.changes) <= 400, "{:#?}", batch.changes);
        let same = e.apply(config(farms)).unwrap();
        assert_eq!(same.generation, None, "no change, no transaction");
        // What the engine thinks it committed is what the kernel has.
        let alloc = e.allocation().clone();
        let cfg = e.config().clone();
        assert_eq!(e.reconcile(cfg, alloc).unwrap().changes, Vec::<String>::new());
    });
}

#[test]
fn a_refused_request_changes_nothing() {
    in_netns(|| {
        let farms = json!([farm("web", "192.0.2.1", 3)]);
        let mut e = KernelEngine::open().unwrap();
        e.reconcile(config(farms.clone()), Allocation::default()).unwrap();
        let before = nft(&["list", "ruleset"]);
        // Invalid: refused before the kernel sees anything.
        let mut bad = farms.clone();
        bad[0]["backends"][0]["ip-addr"] = json!("2001:db8::1");
        let err = parse_config(&json!({ "farms": bad }).to_string()).unwrap_err();
        assert!(
            err.to_string().contains("farms[web].backends[b0].ip-addr"),
            "{err}"
        );
        // Unsupported here: named.
        let mut q = farms.clone();
        q[0]["queue"] = json!(3);
        match e.apply(config(q)) {
            Err(EngineError::Unsupported { field, reason }) => {
                assert_eq!(field, "farms[web].queue");
                assert!(reason.contains("queue"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // A backend appended under a name the farm has (worked out for that backend alone).
        let mut dup = e.config().clone();
        let again = dup.farms[0].backends[1].clone();
        dup.farms[0].backends.push(again);
        match e.apply(dup) {
            Err(EngineError::Invalid(i)) => assert_eq!(
                i.to_string(),
                "farms[web].backends[b1].name: another backend of this farm has this name"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(nft(&["list", "ruleset"]), before);
        // Refused by the kernel: a foreign set where the engine needs to create its own.
        nft(&[
            "add",
            "map",
            "ip",
            "nftlbd",
            "slots-1",
            "{ type ipv4_addr : ipv4_addr; }",
        ]);
        let with_foreign = nft(&["list", "ruleset"]);
        let mut many = farms.clone();
        for i in 0..70 {
            many.as_array_mut()
                .unwrap()
                .push(farm(&format!("f{i}"), &format!("192.0.3.{i}"), 1));
        }
        let err = e.apply(config(many)).unwrap_err();
        assert!(matches!(err, EngineError::Kernel(_)), "{err}");
        assert!(
            err.to_string().contains("slots-1"),
            "the refusal names the object: {err}"
        );
        assert_eq!(
            nft(&["list", "ruleset"]),
            with_foreign,
            "nothing of the refused transaction remains"
        );
        assert_eq!(
            e.config(),
            &config(farms),
            "the engine keeps the committed configuration"
        );
        nft(&["delete", "map", "ip", "nftlbd", "slots-1"]);
        assert_eq!(nft(&["list", "ruleset"]), before);
    });
}

#[test]
fn only_our_tables_are_touched() {
    in_netns(|| {
        let other = "table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\ttcp dport 22 accept\n\t}\n}\ntable ip nat {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tmasquerade\n\t}\n}\n";
        nft_stdin(&[], other).unwrap();
        let mut e = KernelEngine::open().unwrap();
        e.reconcile(
            config(json!([farm("web", "192.0.2.1", 2)])),
            Allocation::default(),
        )
        .unwrap();
        e.apply(config(json!([]))).unwrap();
        assert_eq!(
            nft(&["list", "ruleset"]),
            other,
            "the other tables are untouched and ours are gone"
        );
    });
}

#[test]
fn every_persistence_and_hash_key_is_accepted_and_reads_back_identically() {
    in_netns(|| {
        let fields = ["srcip", "dstip", "srcport", "dstport", "srcmac", "dstmac"];
        let mut farms = Vec::new();
        for bits in 1u32..64 {
            let keys: Vec<&str> = fields
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, f)| *f)
                .collect();
            for v6 in [false, true] {
                let (vip, be) = if v6 {
                    (format!("2001:db8::{bits:x}"), "2001:db8:1::1".to_string())
                } else {
                    (format!("192.0.2.{bits}"), "10.0.0.1".to_string())
                };
                let persist = keys.clone();
                farms.push(json!({"name": format!("k{bits}-{v6}"), "family": if v6 { "ipv6" } else { "ipv4" },
                    "virtual-addresses": [vip], "scheduler": "hash", "sched-param": keys, "persistence": persist,
                    "backends": [{"name": "x", "ip-addr": be}]}));
            }
        }
        let c = config(Value::Array(farms));
        let mut e = KernelEngine::open().unwrap();
        e.reconcile(c.clone(), Allocation::default()).unwrap();
        let alloc = e.allocation().clone();
        assert_eq!(
            e.reconcile(c, alloc).unwrap().changes,
            Vec::<String>::new(),
            "what we wrote reads back equal"
        );
    });
}

#[test]
fn port_ranges_shared_by_farms_on_one_address_change_incrementally() {
    in_netns(|| {
        let f = |name: &str, ports: &str| {
            json!({"name": name, "virtual-addresses": ["192.0.2.1"], "virtual-ports": ports,
                   "backends": [{"name": "x", "ip-addr": "10.0.0.1"}]})
        };
        let mut e = KernelEngine::open().unwrap();
        e.reconcile(
            config(json!([f("a", "80,1000-1999"), f("b", "2000-2999,3005")])),
            Allocation::default(),
        )
        .unwrap();
        let chain = nft(&["list", "chain", "ip", "nftlbd", "ports-6-c0000201"]);
        assert!(
            chain.contains("th dport 1000-1999 goto farm-a")
                && chain.contains("th dport 2000-2999 goto farm-b"),
            "{chain}"
        );
        let steps: [Value; 4] = [
            json!([
                f("a", "80,1000-1999"),
                f("b", "2000-2500,3005"),
                f("c", "4000-4999")
            ]),
            json!([f("a", "80"), f("b", "2000-2500,3005"), f("c", "4000-4999")]),
            json!([f("b", "2000-2500"), f("c", "4000-4999,5005-5999")]),
            json!([f("b", "3000")]),
        ];
        for farms in steps {
            let o = e.apply(config(farms.clone())).unwrap();
            assert!(o.messages < 20, "{:#?}", o.changes);
            // What the engine committed is what a full read-back finds.
            let (cfg, alloc) = (e.config().clone(), e.allocation().clone());
            assert_eq!(
                e.reconcile(cfg, alloc).unwrap().changes,
                Vec::<String>::new(),
                "after {farms}"
            );
            nft_stdin(&["-c"], &nft(&["list", "ruleset"])).unwrap();
        }
        assert!(
            !nft(&["list", "table", "ip", "nftlbd"]).contains("ports-"),
            "no range left, no chain left"
        );
    });
}

#[test]
fn security_rules_list_reparse_and_read_back() {
    in_netns(|| {
        let c = parse_config(
            &json!({"farms": [{"name": "sec", "family": "dual", "virtual-addresses": ["192.0.2.1", "2001:db8::1"],
                "policies": ["bl", "wl6"], "new-rtlimit": "10/second", "new-rtlimit-burst": 20, "est-connlimit": 5,
                "limits-ttl": 30, "verdict": ["log", "drop"], "log-prefix": "lb1-", "helper": "sip", "protocol": "all", "tcp-strict": true, "rst-rtlimit": "5/second", "rst-rtlimit-burst": 10, "log": ["input", "forward"], "log-rtlimit": "10/minute",
                "backends": [{"name": "x", "ip-addr": "10.0.0.1"}, {"name": "y", "ip-addr": "2001:db8:1::1"}]}],
              "policies": [{"name": "bl", "elements": ["10.1.0.0/16", "10.2.0.1-10.2.0.9", "10.1.255.255", "10.3.0.1"]},
                           {"name": "wl6", "type": "whitelist", "family": "ipv6", "elements": ["2001:db8:ffff::/48"]}]})
            .to_string(),
        )
        .unwrap();
        let mut e = KernelEngine::open().unwrap();
        e.reconcile(c.clone(), Allocation::default()).unwrap();
        let listing = nft(&["list", "ruleset"]);
        nft_stdin(&["-c"], &listing).unwrap_or_else(|err| panic!("{err}\n{listing}"));
        for want in [
            "ip saddr @policy-bl jump refuse-sec-policy-BL-bl",
            "ip6 saddr != @policy-wl6 jump refuse-sec-policy-WL-wl6",
            "chain refuse-sec-policy-BL-bl {\n\t\tlimit rate 10/minute log prefix \"lb1-policy-BL-bl \"\n\t\tdrop",
            "ct mark & 0xffff0000 vmap @forward-log",
            "chain fwd-sec {\n\t\tlimit rate 10/minute log prefix \"lb1-FWD-sec \"",
            "add @new-rtlimit-10-second-20 { ct mark & 0xffff0000 . ip saddr timeout 30s limit rate over 10/second burst 20 packets }",
            "add @est-connlimit-5 { ct mark & 0xffff0000 . ip6 saddr ct count over 5 }",
            "elements = { 10.1.0.0/16 counter packets 0 bytes 0, 10.2.0.1-10.2.0.9 counter packets 0 bytes 0,",
            "ct helper helper-sip-udp {\n\t\ttype \"sip\" protocol udp\n\t\tl3proto ip6",
            "meta l4proto tcp ct helper set \"helper-sip-tcp\"",
            "limit rate 10/minute log prefix \"lb1-IN-sec \"",
            "add @rst-rtlimit-5-second-10-30 { ct mark & 0xffff0000 . ip saddr timeout 30s limit rate over 5/second burst 10 packets } drop",
            "meta l4proto . ip daddr . tcp dport @strict-services jump tcp-strict",
        ] {
            assert!(listing.contains(want), "missing {want:?} in\n{listing}");
        }
        let alloc = e.allocation().clone();
        assert_eq!(e.reconcile(c, alloc).unwrap().changes, Vec::<String>::new());
        let counters = e.policy_counters("bl").unwrap();
        assert_eq!(counters.len(), 3, "merged: {counters:?}");
        assert_eq!(counters[0].0, "10.1.0.0-10.1.255.255");
    });
}

#[test]
fn features_switched_on_and_off_change_only_what_they_need() {
    in_netns(|| {
        let mut e = KernelEngine::open().unwrap();
        let base = json!({"name": "web", "virtual-addresses": ["192.0.2.1"], "virtual-ports": "80",
                          "backends": [{"name": "a", "ip-addr": "10.0.0.1"}, {"name": "b", "ip-addr": "10.0.0.2"}]});
        let with = |extra: Value| {
            let mut f = base.clone();
            for (k, v) in extra.as_object().unwrap() {
                f[k] = v.clone();
            }
            config(json!([f]))
        };
        let steps = [
            json!({}),
            json!({"tcp-strict": true}),
            json!({"tcp-strict": true, "rst-rtlimit": "5/second", "mark": 7, "log": ["forward"]}),
            json!({"rst-rtlimit": "6/second", "mark": 8, "log": ["input"], "log-rtlimit": "1/second",
                   "new-rtlimit": "3/second", "est-connlimit": 4, "helper": "ftp", "intra-connect": true}),
            json!({"mode": "dsr", "scheduler": "symhash", "iface": "lo", "oface": "lo"}),
            json!({}),
        ];
        for (i, extra) in steps.into_iter().enumerate() {
            let mut c = with(extra.clone());
            if i == 4 {
                for b in &mut c.farms[0].backends {
                    b.ether_addr = Some("02:00:00:00:00:0a".parse().unwrap());
                }
            }
            e.apply(c).unwrap_or_else(|err| panic!("step {i} {extra}: {err}"));
            let (cfg, alloc) = (e.config().clone(), e.allocation().clone());
            let again = e.reconcile(cfg, alloc).unwrap();
            assert!(
                again.changes.is_empty(),
                "step {i} {extra}: read-back differs: {:#?}",
                again.changes
            );
            nft_stdin(&["-c"], &nft(&["list", "ruleset"])).unwrap_or_else(|err| panic!("step {i}: {err}"));
        }
        let listing = nft(&["list", "ruleset"]);
        assert!(
            !listing.contains("mangle") && !listing.contains("tcp-strict") && !listing.contains("netdev"),
            "{listing}"
        );
    });
}

#[test]
fn a_policy_made_before_its_family_had_a_farm_gets_its_elements() {
    in_netns(|| {
        let mut e = KernelEngine::open().unwrap();
        let policy = json!([{"name": "bad", "elements": ["198.51.100.7", "203.0.113.0/24"]}]);
        let doc =
            |farms: Value| parse_config(&json!({"farms": farms, "policies": policy}).to_string()).unwrap();
        // No farm yet: no table, so the policy has no set anywhere.
        e.apply(doc(json!([]))).unwrap();
        // The first farm creates the table; its policy's elements come with it, though the
        // policy itself did not change.
        let mut f = farm("web", "192.0.2.1", 2);
        f["policies"] = json!(["bad"]);
        e.apply(doc(json!([f]))).unwrap();
        let set = nft(&["list", "set", "ip", "nftlbd", "policy-bad"]);
        assert!(
            set.contains("198.51.100.7") && set.contains("203.0.113.0/24"),
            "{set}"
        );
        let (cfg, alloc) = (e.config().clone(), e.allocation().clone());
        assert!(
            e.reconcile(cfg, alloc).unwrap().changes.is_empty(),
            "reads back equal"
        );
    });
}

#[test]
fn a_large_farm_applied_whole_keeps_no_elements_and_changes_whole_again_in_few_messages() {
    in_netns(|| {
        let mut farms = json!([farm("big", "192.0.2.1", 6000), farm("small", "192.0.2.2", 3)]);
        let mut e = KernelEngine::open().unwrap();
        e.reconcile(
            config(json!([farm("small", "192.0.2.2", 3)])),
            Allocation::default(),
        )
        .unwrap();
        let created = e.apply(config(farms.clone())).unwrap();
        assert!(elements(&created.changes) > 10_000, "{}", created.messages);
        // The big farm's elements went; the small one's (under the limit) are kept.
        let kept = e.kept_elements();
        assert!(kept > 0 && kept < 100, "{kept}");
        // Its own keys change: the farm is worked out whole against elements rendered again,
        // so only the rules differ (with no elements known, all of them would be sent).
        for strict in [true, false] {
            farms[0]["tcp-strict"] = json!(strict);
            let o = e.apply(config(farms.clone())).unwrap();
            // Only the shared sets of tcp-strict (the farm's address and services) change.
            assert_eq!(elements(&o.changes), 3, "{:#?}", o.changes);
            assert!(
                o.changes
                    .iter()
                    .all(|c| !c.contains(" elements ") || c.contains(" strict-")),
                "{:#?}",
                o.changes
            );
            assert!(o.messages <= 12, "{:#?}", o.changes);
            assert_eq!(e.kept_elements(), kept);
        }
        let alloc = e.allocation().clone();
        let cfg = e.config().clone();
        assert_eq!(e.reconcile(cfg, alloc).unwrap().changes, Vec::<String>::new());
    });
}

/// Sets `key` of every `step`-th backend from `from` of farm `i` (a batch, as `SetBackends` makes).
fn set_many(farms: &mut Value, i: usize, from: usize, step: usize, key: &str, value: Value) -> usize {
    let mut n = 0;
    for b in farms[i]["backends"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .skip(from)
        .step_by(step)
    {
        b[key] = value.clone();
        n += 1;
    }
    n
}

#[test]
fn a_batch_of_backend_changes_across_farms_is_one_transaction_of_o_batch_messages() {
    in_netns(|| {
        let mut farms = json!([farm("a", "192.0.2.1", 3000), farm("b", "192.0.2.2", 2000)]);
        farms[1]["scheduler"] = json!("weight");
        let mut e = KernelEngine::open().unwrap();
        e.reconcile(config(farms.clone()), Allocation::default()).unwrap();
        for (value, weight) in [(json!("drain"), 3), (json!("up"), 1)] {
            let n = set_many(&mut farms, 0, 5, 30, "state", value.clone())
                + set_many(&mut farms, 1, 7, 20, "state", value)
                + set_many(&mut farms, 1, 9, 20, "weight", json!(weight));
            assert_eq!(n, 300);
            let want = config(farms.clone());
            let generation = e.apply(want.clone()).unwrap();
            println!(
                "batch of {n}: {} messages, {} elements",
                generation.messages,
                elements(&generation.changes)
            );
            // Per set, not per backend: a handful of messages; a few elements per backend.
            assert!(generation.messages <= 24, "{:#?}", generation.changes);
            assert!(
                elements(&generation.changes) <= 6 * n,
                "{}",
                elements(&generation.changes)
            );
            assert!(
                elements(&generation.changes) >= n,
                "{}",
                elements(&generation.changes)
            );
            // Each backend has as many slots as its weight when it takes new flows, else none.
            let alloc = e.allocation().clone();
            for f in &want.farms {
                let fa = &alloc.farms[&f.name];
                let mut count = std::collections::HashMap::new();
                for m in &fa.slots4 {
                    *count.entry(*m).or_insert(0u32) += 1;
                }
                for b in &f.backends {
                    let has = count.get(&fa.members[&b.name]).copied().unwrap_or(0);
                    let wants = if b.state == nftlbd::model::BackendState::Up {
                        b.weight
                    } else {
                        0
                    };
                    assert_eq!(has, wants, "{} {}", f.name, b.name);
                }
            }
            // The kernel has exactly what the configuration and allocation render to.
            assert_eq!(e.reconcile(want, alloc).unwrap().changes, Vec::<String>::new());
        }
    });
}

#[test]
fn a_batch_with_one_refused_backend_changes_nothing() {
    in_netns(|| {
        let farms = json!([farm("a", "192.0.2.1", 500), farm("b", "192.0.2.2", 400)]);
        let mut e = KernelEngine::open().unwrap();
        e.reconcile(config(farms.clone()), Allocation::default()).unwrap();
        let before = nft(&["list", "ruleset"]);
        let (cfg, alloc) = (e.config().clone(), e.allocation().clone());
        let mut bad = cfg.clone();
        for i in (0..400).step_by(7) {
            bad.farms[0].backends[i].state = nftlbd::model::BackendState::Down;
            bad.farms[1].backends[i].state = nftlbd::model::BackendState::Drain;
        }
        bad.farms[1].backends[333].weight = 0;
        match e.apply(bad) {
            Err(EngineError::Invalid(i)) => {
                assert_eq!(i.to_string(), "farms[b].backends[b333].weight: 0 is not 1-10000")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(nft(&["list", "ruleset"]), before);
        assert_eq!(e.config(), &cfg);
        assert_eq!(e.allocation(), &alloc);
        // The engine still changes from what it has.
        let mut good = cfg.clone();
        good.farms[1].backends[333].weight = 2;
        assert!(e.apply(good).unwrap().messages > 0);
    });
}

/// The slot map's entries: `slot : backend mark`.
fn slots() -> usize {
    nft(&["list", "map", "ip", "nftlbd", "slots-0"])
        .matches(" : ")
        .count()
}

#[test]
fn a_failing_backend_loses_its_slots_and_gets_them_back() {
    in_netns(|| {
        let mut farms = json!([farm("web", "192.0.2.1", 3)]);
        let mut e = KernelEngine::open().unwrap();
        e.reconcile(config(farms.clone()), Allocation::default()).unwrap();
        let all = slots();
        assert!(all >= 3, "{}", nft(&["list", "map", "ip", "nftlbd", "slots-0"]));
        farms[0]["backends"][1]["health"] = json!("failing");
        farms[0]["backends"][1]["health-reason"] = json!("connect: refused");
        let failing = e.apply(config(farms.clone())).unwrap();
        assert!(failing.messages <= 12, "{:#?}", failing.changes);
        assert_eq!(slots(), all - 1);
        // Drained, it stays out; its health no longer matters.
        farms[0]["backends"][1]["state"] = json!("drain");
        e.apply(config(farms.clone())).unwrap();
        assert_eq!(slots(), all - 1);
        farms[0]["backends"][1]["state"] = json!("up");
        farms[0]["backends"][1]["health"] = json!("healthy");
        e.apply(config(farms.clone())).unwrap();
        assert_eq!(slots(), all);
        let alloc = e.allocation().clone();
        let cfg = e.config().clone();
        assert_eq!(e.reconcile(cfg, alloc).unwrap().changes, Vec::<String>::new());
    });
}

#[test]
fn a_backend_change_among_many_farms_touches_its_farm_alone() {
    in_netns(|| {
        let farms: Vec<Value> = (0..200)
            .map(|i| {
                farm(
                    &format!("f{i}"),
                    &format!("192.0.{}.{}", 2 + i / 250, 1 + i % 250),
                    3,
                )
            })
            .collect();
        let mut e = KernelEngine::open().unwrap();
        e.reconcile(config(Value::Array(farms)), Allocation::default())
            .unwrap();
        // Changed as the service changes it: a copy sharing every other farm.
        let mut c = e.config().clone();
        if let Some(f) = c.farms.get_mut(150) {
            f.backends[1].state = nftlbd::model::BackendState::Drain;
        }
        let done = e.apply(c.clone()).unwrap();
        assert!(done.messages <= 12, "{:#?}", done.changes);
        assert!(
            done.changes
                .iter()
                .all(|m| !m.contains("f149") && !m.contains("f151")),
            "{:#?}",
            done.changes
        );
        let alloc = e.allocation().clone();
        assert_eq!(
            e.reconcile(c.clone(), alloc.clone()).unwrap().changes,
            Vec::<String>::new()
        );
    });
}

/// An edit that says what it touched (`Touched`, as the service's edits do) gives the very
/// transactions and ruleset that comparing the configurations gives.
#[test]
fn said_changes_commit_what_compared_changes_commit() {
    use nftlbd::model::Touched;
    let run = |said: bool| {
        in_netns(move || {
            let mut farms = json!([farm("big", "192.0.2.1", 300), farm("other", "192.0.2.2", 3)]);
            let mut e = KernelEngine::open().unwrap();
            e.reconcile(config(farms.clone()), Allocation::default()).unwrap();
            let mut changes = Vec::new();
            let mut step = |farms: &Value, touched: Touched| {
                let o = if said {
                    e.apply_touched(config(farms.clone()), &touched).unwrap()
                } else {
                    e.apply(config(farms.clone())).unwrap()
                };
                changes.push(o.changes);
            };
            farms[0]["backends"][20]["state"] = json!("drain");
            step(&farms, Touched::backend(0, 20));
            farms[0]["backends"][21]["weight"] = json!(4);
            farms[1]["backends"][1]["state"] = json!("off");
            step(&farms, Touched::backends(vec![(1, 1), (0, 21)]));
            // Replaced by an equal one: nothing to send.
            step(&farms, Touched::backend(0, 22));
            farms[0]["backends"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "new", "ip-addr": "10.200.0.1", "weight": 2}));
            step(&farms, Touched::Appended { farm: 0 });
            farms[0]["backends"].as_array_mut().unwrap().remove(7);
            step(&farms, Touched::Removed { farm: 0, at: 7 });
            // b20 drained makes the effective priority 2: priority 3 leaves the scheduler.
            farms[0]["backends"][30]["priority"] = json!(3);
            step(&farms, Touched::backend(0, 30));
            (changes, nft(&["list", "ruleset"]))
        })
    };
    let (said, said_ruleset) = run(true);
    let (compared, compared_ruleset) = run(false);
    assert_eq!(said, compared);
    assert!(said[2].is_empty(), "{:#?}", said[2]);
    let sizes: Vec<usize> = said.iter().map(Vec::len).collect();
    assert!(sizes.iter().filter(|n| **n > 0).count() == 5, "{sizes:?}");
    assert_eq!(said_ruleset, compared_ruleset);
}

/// The member id each slot of farm `farm`'s IPv4 slot map names, as the kernel lists it.
fn slot_members(e: &KernelEngine, farm: &str) -> Vec<u16> {
    let fa = &e.allocation().farms[farm];
    let listing = nft(&["list", "map", "ip", "nftlbd", "slots-0"]);
    let elements = listing
        .split_once("elements = {")
        .and_then(|(_, rest)| rest.split_once('}'))
        .map_or("", |(inside, _)| inside);
    elements
        .split(',')
        .map(|pair| {
            let word = pair.split_once(" : ").map_or("", |(_, v)| v.trim());
            let mark = u32::from_str_radix(word.trim_start_matches("0x"), 16)
                .unwrap_or_else(|_| panic!("{word:?} in {listing}"));
            assert_eq!(mark >> 16, u32::from(fa.id), "{listing}");
            (mark & 0xffff) as u16
        })
        .collect()
}

#[test]
fn below_the_quorum_the_ruleset_sends_new_flows_only_to_the_sorry_backend() {
    in_netns(|| {
        let mut farms = json!([{"name": "web", "virtual-addresses": ["192.0.2.1"], "virtual-ports": "80",
            "quorum": 2, "backends": [
                {"name": "a", "ip-addr": "10.0.0.1"}, {"name": "b", "ip-addr": "10.0.0.2"},
                {"name": "s", "ip-addr": "10.0.0.9", "weight": 3, "sorry": true,
                 "health-check": {"enabled": false}}]}]);
        let mut e = KernelEngine::open().unwrap();
        e.reconcile(config(farms.clone()), Allocation::default()).unwrap();
        // The in-memory engine of the service tests, fed the same: the same allocation each time.
        let mut memory = MemoryEngine::new();
        memory
            .reconcile(config(farms.clone()), Allocation::default())
            .unwrap();
        let mut both = |e: &mut KernelEngine, farms: &Value| {
            let outcome = e.apply(config(farms.clone())).unwrap();
            memory.apply(config(farms.clone())).unwrap();
            assert_eq!(memory.allocation(), e.allocation());
            outcome
        };
        let m = |name: &str| e.allocation().farms["web"].members[name];
        let (a, b, s) = (m("a"), m("b"), m("s"));
        let mut got = slot_members(&e, "web");
        got.sort();
        assert_eq!(got, [a, b]);
        // a fails: one regular backend left, below the quorum: the sorry backend's slots alone.
        farms[0]["backends"][0]["health"] = json!("failing");
        both(&mut e, &farms);
        assert_eq!(slot_members(&e, "web"), [s, s, s]);
        // A change below the quorum that does not cross it is the backend's own.
        farms[0]["backends"][1]["weight"] = json!(4);
        let quiet = both(&mut e, &farms);
        assert!(quiet.messages <= 6, "{:#?}", quiet.changes);
        assert_eq!(slot_members(&e, "web"), [s, s, s]);
        // a passes again: the regular backends take new flows back.
        farms[0]["backends"][0]["health"] = json!("healthy");
        both(&mut e, &farms);
        let mut got = slot_members(&e, "web");
        got.sort();
        assert_eq!(got, [a, b, b, b, b]);
        let alloc = e.allocation().clone();
        let cfg = e.config().clone();
        assert_eq!(e.reconcile(cfg, alloc).unwrap().changes, Vec::<String>::new());
    });
}
