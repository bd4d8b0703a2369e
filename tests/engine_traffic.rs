//! Real traffic through the engine's rulesets: a client, a balancer and backends in network
//! namespaces (tests/common/topo.rs). Needs root.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use common::topo::*;
use nftlbd::engine::{Allocation, KernelEngine};
use nftlbd::model::{Config, parse_config};
use serde_json::{Value, json};

fn config(farms: Value) -> Config {
    parse_config(&json!({ "farms": farms }).to_string()).expect("valid test configuration")
}

fn backends(n: usize, v6: bool) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"name": format!("be{i}"), "ip-addr": backend_ip(i, v6)}))
            .collect(),
    )
}

/// An engine living in the balancer's namespace, with `farms` applied.
fn engine(t: &Topo, farms: Value) -> KernelEngine {
    let c = config(farms);
    run_in(&t.lb, move || {
        let mut e = KernelEngine::open().expect("open the engine");
        e.reconcile(c, Allocation::default()).expect("first commit");
        e
    })
}

fn apply(e: &mut KernelEngine, farms: Value) {
    e.apply(config(farms)).expect("apply");
}

fn names(answers: &[String]) -> Vec<String> {
    answers.iter().map(|a| who(a)).collect()
}

fn count(answers: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for a in answers {
        *m.entry(who(a)).or_default() += 1;
    }
    m
}

#[test]
fn snat_round_robin_alternates_over_tcp_and_udp_ipv4() {
    let t = Topo::new(3);
    let _e = engine(
        &t,
        json!([{"name": "web", "virtual-addresses": [vip4(10)], "virtual-ports": "80", "backends": backends(3, false)},
               {"name": "dns", "protocol": "udp", "virtual-addresses": [vip4(10)], "virtual-ports": "53", "backends": backends(3, false)}]),
    );
    let got = names(&t.tcp_n(vip4(10), 80, 9));
    let first = got.iter().position(|n| n == "be0").expect("be0 answered");
    for (i, n) in got.iter().enumerate() {
        assert_eq!(
            *n,
            format!("be{}", (i + 3 - first) % 3),
            "strict rotation: {got:?}"
        );
    }
    // snat: backends see the balancer, not the client.
    assert!(
        t.tcp(vip4(10), 80).ends_with("10.1.0.1") || t.tcp(vip4(10), 80).contains(" 10.1."),
        "masquerade"
    );
    let udp = count(&t.udp_n(vip4(10), 53, 9));
    assert_eq!(udp.len(), 3, "every backend answers udp: {udp:?}");
    assert!(udp.values().all(|n| *n == 3), "{udp:?}");
    // A port the farm does not serve is not balanced.
    assert!(t.tcp(vip4(10), 8080).starts_with("ERROR"));
}

#[test]
fn dnat_keeps_the_client_address_and_serves_ipv6_and_dual() {
    let t = Topo::new(2);
    let mut b = backends(2, false);
    b.as_array_mut()
        .unwrap()
        .extend(backends(2, true).as_array().unwrap().iter().map(|v| {
            let mut v = v.clone();
            v["name"] = json!(format!("{}-6", v["name"].as_str().unwrap()));
            v
        }));
    let _e = engine(
        &t,
        json!([{"name": "web", "family": "dual", "mode": "dnat", "virtual-addresses": [vip4(20), vip6(20)],
                "virtual-ports": "80", "backends": b}]),
    );
    let v4 = t.tcp_n(vip4(20), 80, 4);
    // Round robin over each family's two backends: exactly two each.
    let c4 = count(&v4);
    assert_eq!((c4.get("be0"), c4.get("be1")), (Some(&2), Some(&2)), "{v4:?}");
    assert!(
        v4.iter().all(|a| a.ends_with(" 10.8.0.2")),
        "dnat keeps the client address: {v4:?}"
    );
    let v6 = t.tcp_n(vip6(20), 80, 4);
    let c6 = count(&v6);
    assert_eq!((c6.get("be0"), c6.get("be1")), (Some(&2), Some(&2)), "{v6:?}");
    assert!(v6.iter().all(|a| a.ends_with(" fd08::2")), "{v6:?}");
}

#[test]
fn weights_give_three_to_one() {
    let t = Topo::new(2);
    let mut b = backends(2, false);
    b[0]["weight"] = json!(3);
    let _e = engine(
        &t,
        json!([{"name": "rr", "virtual-addresses": [vip4(30)], "virtual-ports": "80", "backends": b.clone()},
               {"name": "rand", "scheduler": "weight", "virtual-addresses": [vip4(31)], "virtual-ports": "80", "backends": b}]),
    );
    // Weighted round robin is exact: 3 then 1.
    let rr = count(&t.tcp_n(vip4(30), 80, 40));
    assert_eq!((rr["be0"], rr["be1"]), (30, 10));
    // Random by weight: 3:1 within a tolerance (binomial, p = 0.75, n = 400: sd ≈ 8.7; ±4 sd).
    let n = 400;
    let w = count(&t.tcp_n(vip4(31), 80, n));
    let be0 = w.get("be0").copied().unwrap_or(0);
    assert!((265..=335).contains(&be0), "be0 got {be0} of {n}: {w:?}");
    assert_eq!(w.values().sum::<usize>(), n);
}

#[test]
fn new_connections_are_counted_once_per_connection_per_backend() {
    let t = Topo::new(2);
    let farm = |weight: u32| {
        let mut b = backends(2, false);
        b[1]["weight"] = json!(weight);
        json!([{"name": "web", "virtual-addresses": [vip4(35)], "virtual-ports": "80", "backends": b}])
    };
    let mut e = engine(&t, farm(1));
    let n = 10;
    let got = count(&t.tcp_n(vip4(35), 80, n));
    assert_eq!((got["be0"], got["be1"]), (n / 2, n / 2), "{got:?}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let read = |e: &mut KernelEngine| {
        let (farm, each) = e.farm_traffic("web").unwrap();
        let each: Vec<(String, u64, u64)> = each
            .into_iter()
            .map(|(b, x)| (b, x.new_connections, x.packets))
            .collect();
        (farm, each)
    };
    let (total, each) = read(&mut e);
    assert_eq!(total.new_connections, n as u64, "{total:?}");
    for (b, new, packets) in &each {
        assert_eq!(*new, (n / 2) as u64, "{b}: {each:?}");
        // Once per connection, not per packet (each has at least SYN, ACK, FIN from the client).
        assert!(*packets >= 3 * new, "{b}: {each:?}");
    }
    // One lookup per key reads what the dump read.
    assert_eq!(
        e.traffic("web", Some("be1")).unwrap().new_connections,
        (n / 2) as u64
    );
    assert_eq!(e.traffic("web", None).unwrap(), total);
    // Changing the farm keeps the counts; new connections add to them (weight 3 to 1: 6 and 2).
    apply(&mut e, farm(3));
    let more = count(&t.tcp_n(vip4(35), 80, 8));
    assert_eq!((more["be0"], more["be1"]), (2, 6), "{more:?}");
    let (total, each) = read(&mut e);
    assert_eq!(total.new_connections, 18);
    let new: Vec<u64> = each.iter().map(|(_, k, _)| *k).collect();
    assert_eq!(new, [7, 11], "{each:?}");
}

#[test]
fn hash_sends_a_client_to_the_same_backend() {
    let t = Topo::new(3);
    let _e = engine(
        &t,
        json!([{"name": "h", "scheduler": "hash", "virtual-addresses": [vip4(40)], "virtual-ports": "80", "backends": backends(3, false)},
               {"name": "hp", "scheduler": "hash", "sched-param": ["srcip", "srcport"], "virtual-addresses": [vip4(41)], "virtual-ports": "80", "backends": backends(3, false)},
               {"name": "s", "scheduler": "symhash", "virtual-addresses": [vip4(42)], "virtual-ports": "80", "backends": backends(3, false)}]),
    );
    let h = count(&t.tcp_n(vip4(40), 80, 20));
    assert_eq!(h.len(), 1, "srcip hash: one client, one backend: {h:?}");
    // With the source port in the hash, one client's connections spread like dice over the
    // three backends: each gets at least 2 of 30 but for odds of 2.5e-4 (3 × P(Bin(30, 1/3) ≤ 1)),
    // and at most 20 (1e-5), while a hash that ignores the port sends all 30 to one backend and a
    // broken slot map leaves one out.
    for vip in [vip4(41), vip4(42)] {
        let spread = count(&t.tcp_n(vip, 80, 30));
        assert_eq!(spread.len(), 3, "{spread:?}");
        assert!(spread.values().all(|n| (2..=20).contains(n)), "{spread:?}");
    }
}

#[test]
fn local_farms_are_served_by_the_balancer_itself() {
    let t = Topo::new(1);
    t.serve_locally(vip4(50), "lb");
    t.serve_locally(vip6(50), "lb");
    let _e = engine(
        &t,
        json!([{"name": "loc", "mode": "local", "family": "dual", "virtual-addresses": [vip4(50), vip6(50)],
                "virtual-ports": "80", "backends": backends(1, false)}]),
    );
    assert_eq!(who(&t.tcp(vip4(50), 80)), "lb");
    assert_eq!(who(&t.tcp(vip6(50), 80)), "lb");
}

#[test]
fn source_addresses_backend_ports_and_protocol_all() {
    let t = Topo::new(2);
    let mut b = backends(2, false);
    b[0]["port"] = json!(8080);
    b[0]["source-addr"] = json!("10.7.7.8");
    let _e = engine(
        &t,
        json!([{"name": "src", "source-addr": "10.7.7.7", "virtual-addresses": [vip4(130)], "virtual-ports": "80", "backends": b},
               {"name": "any", "protocol": "all", "virtual-addresses": [vip4(131)], "virtual-ports": "", "backends": backends(2, false)}]),
    );
    // The backend's own port and source address win over the farm's.
    let mut got = t.tcp_n(vip4(130), 80, 2);
    got.sort();
    assert_eq!(got, ["be0@8080 10.7.7.8", "be1@80 10.7.7.7"]);
    // Protocol all, every port: tcp on any port (kept, as backends have none) and udp.
    let tcp = count(&t.tcp_n(vip4(131), 8080, 4));
    assert_eq!((tcp.get("be0"), tcp.get("be1")), (Some(&2), Some(&2)), "{tcp:?}");
    assert!(t.tcp(vip4(131), 8080).starts_with("be") && t.tcp(vip4(131), 8080).contains("@8080 "));
    let udp = count(&t.udp_n(vip4(131), 53, 4));
    assert_eq!((udp.get("be0"), udp.get("be1")), (Some(&2), Some(&2)), "{udp:?}");
}

fn set_backend(farms: &mut Value, farm: usize, backend: usize, key: &str, v: Value) {
    farms[farm]["backends"][backend][key] = v;
}

#[test]
fn persistence_sticks_until_the_ttl_then_rebalances() {
    let t = Topo::new(3);
    let _e = engine(
        &t,
        json!([{"name": "p", "persistence": ["srcip"], "persist-ttl": 2, "virtual-addresses": [vip4(60)],
                "virtual-ports": "80", "backends": backends(3, false)},
               {"name": "s", "persistence": ["srcip"], "virtual-addresses": [vip4(61)], "virtual-ports": "80",
                "backends": backends(3, false), "sessions": [{"client": "10.8.0.2", "backend": "be2"}]}]),
    );
    let first = count(&t.tcp_n(vip4(60), 80, 10));
    assert_eq!(
        first.len(),
        1,
        "one client, one backend while it keeps coming: {first:?}"
    );
    let stuck = first.keys().next().unwrap().clone();
    std::thread::sleep(std::time::Duration::from_millis(2600));
    let after = who(&t.tcp(vip4(60), 80));
    assert_ne!(
        after, stuck,
        "after the ttl the client is scheduled again (round robin moves on)"
    );
    // A static session pins the client regardless of the scheduler, and has no expiry.
    let s = count(&t.tcp_n(vip4(61), 80, 6));
    assert_eq!(s.get("be2"), Some(&6), "{s:?}");
    let listing = t.nft(&["list", "map", "ip", "nftlbd", "persist-srcip"]);
    assert!(listing.contains(". 10.8.0.2 : 0x"), "{listing}");
}

#[test]
fn drain_keeps_established_and_persistent_clients_down_moves_them() {
    let t = Topo::new(2);
    let mut farms = json!([
        {"name": "web", "virtual-addresses": [vip4(70)], "virtual-ports": "80", "backends": backends(2, false)},
        {"name": "sticky", "persistence": ["srcip"], "virtual-addresses": [vip4(71)], "virtual-ports": "80",
         "backends": backends(2, false)}]);
    let mut e = engine(&t, farms.clone());
    let mut held: Vec<Held> = (0..2)
        .map(|_| Held::open(&t.client, SocketAddr::new(vip4(70), 80)))
        .collect();
    let on_be0 = held
        .iter()
        .position(|h| who(&h.greeting) == "be0")
        .expect("a connection to be0");
    let sticky = who(&t.tcp(vip4(71), 80));
    let sticky_i: usize = sticky[2..].parse().unwrap();
    set_backend(&mut farms, 0, 0, "state", json!("drain"));
    set_backend(&mut farms, 1, sticky_i, "state", json!("drain"));
    apply(&mut e, farms.clone());
    let new = count(&t.tcp_n(vip4(70), 80, 6));
    assert_eq!(
        new.get("be1"),
        Some(&6),
        "no new flows to a draining backend: {new:?}"
    );
    assert_eq!(held[on_be0].echo("still there").unwrap(), "still there");
    let s = count(&t.tcp_n(vip4(71), 80, 4));
    assert_eq!(
        s.get(&sticky),
        Some(&4),
        "a persistent client stays with its draining backend: {s:?}"
    );
    // Down: the persistent client moves to the other backend, and stays there.
    set_backend(&mut farms, 1, sticky_i, "state", json!("down"));
    apply(&mut e, farms.clone());
    let s = count(&t.tcp_n(vip4(71), 80, 4));
    assert_eq!(s.len(), 1, "{s:?}");
    assert!(!s.contains_key(&sticky), "{s:?}");
    // Off behaves like down for new flows.
    set_backend(&mut farms, 0, 0, "state", json!("off"));
    apply(&mut e, farms);
    assert_eq!(count(&t.tcp_n(vip4(70), 80, 4)).get("be1"), Some(&4));
}

#[test]
fn priority_tiers_fail_over_and_back() {
    let t = Topo::new(3);
    let mut farms = json!([{"name": "web", "virtual-addresses": [vip4(80)], "virtual-ports": "80", "backends": backends(3, false)}]);
    set_backend(&mut farms, 0, 1, "priority", json!(2));
    set_backend(&mut farms, 0, 2, "priority", json!(3));
    let mut e = engine(&t, farms.clone());
    assert_eq!(
        count(&t.tcp_n(vip4(80), 80, 4)).get("be0"),
        Some(&4),
        "only the first tier"
    );
    set_backend(&mut farms, 0, 0, "state", json!("down"));
    apply(&mut e, farms.clone());
    assert_eq!(
        count(&t.tcp_n(vip4(80), 80, 4)).get("be1"),
        Some(&4),
        "the standby tier takes over"
    );
    set_backend(&mut farms, 0, 1, "state", json!("off"));
    apply(&mut e, farms.clone());
    assert_eq!(
        count(&t.tcp_n(vip4(80), 80, 4)).get("be2"),
        Some(&4),
        "two failures bring in tier 3"
    );
    set_backend(&mut farms, 0, 0, "state", json!("up"));
    set_backend(&mut farms, 0, 1, "state", json!("up"));
    apply(&mut e, farms);
    assert_eq!(
        count(&t.tcp_n(vip4(80), 80, 4)).get("be0"),
        Some(&4),
        "back to the first tier"
    );
}

#[test]
fn ipv6_udp_and_farm_states() {
    let t = Topo::new(2);
    let mut farms = json!([{"name": "dns6", "family": "ipv6", "protocol": "udp", "virtual-addresses": [vip6(90)],
                            "virtual-ports": "53", "backends": backends(2, true)}]);
    let mut e = engine(&t, farms.clone());
    let got = count(&t.udp_n(vip6(90), 53, 6));
    assert_eq!((got.get("be0"), got.get("be1")), (Some(&3), Some(&3)), "{got:?}");
    farms[0]["state"] = json!("off");
    apply(&mut e, farms.clone());
    assert!(
        t.udp_n(vip6(90), 53, 1)[0].starts_with("ERROR"),
        "an off farm takes no traffic"
    );
    farms[0]["state"] = json!("up");
    apply(&mut e, farms);
    assert!(!t.udp_n(vip6(90), 53, 1)[0].starts_with("ERROR"));
}

#[test]
fn farm_changes_mid_traffic_break_no_connection() {
    let t = Topo::new(4);
    let three = |v: &Value| Value::Array(v.as_array().unwrap()[..3].to_vec());
    let all = backends(4, false);
    let mut farms = json!([{"name": "web", "virtual-addresses": [vip4(100)], "virtual-ports": "80", "backends": three(&all)}]);
    let mut e = engine(&t, farms.clone());
    let mut held: Vec<Held> = (0..3)
        .map(|_| Held::open(&t.client, SocketAddr::new(vip4(100), 80)))
        .collect();
    let (stop, answers) = load(&t, vip4(100), 80);
    // Add a backend, change weights, remove one, add a second VIP and port: each one transaction.
    farms[0]["backends"] = all.clone();
    apply(&mut e, farms.clone());
    set_backend(&mut farms, 0, 3, "weight", json!(5));
    apply(&mut e, farms.clone());
    farms[0]["backends"].as_array_mut().unwrap().remove(1);
    apply(&mut e, farms.clone());
    farms[0]["virtual-addresses"] = json!([vip4(100), vip4(101)]);
    farms[0]["virtual-ports"] = json!("80,8080");
    apply(&mut e, farms);
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_all_answered(&answers.join().unwrap());
    for (i, h) in held.iter_mut().enumerate() {
        assert_eq!(
            h.echo(&format!("ping {i}")).unwrap(),
            format!("ping {i}"),
            "{}",
            h.greeting
        );
    }
    // be1 is gone; weights 1, 1, 5 over two full rounds of 7 slots.
    let after = count(&t.tcp_n(vip4(101), 8080, 14));
    assert_eq!(
        (after.get("be0"), after.get("be2"), after.get("be3")),
        (Some(&2), Some(&2), Some(&10)),
        "{after:?}"
    );
}

#[test]
fn sessions_are_listed_deleted_and_flushed() {
    let t = Topo::new(3);
    let mut e = engine(
        &t,
        json!([{"name": "p", "persistence": ["srcip"], "persist-ttl": 100, "virtual-addresses": [vip4(110)],
                "virtual-ports": "80", "backends": backends(3, false),
                "sessions": [{"client": "192.0.2.99", "backend": "be1"}]}]),
    );
    let first = who(&t.tcp(vip4(110), 80));
    let list = e.sessions("p").unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let learnt = list
        .iter()
        .find(|s| s.client == "10.8.0.2")
        .expect("the learnt session");
    assert_eq!(learnt.backend.as_deref(), Some(first.as_str()));
    assert!(
        learnt.expires_ms.is_some_and(|ms| ms > 90_000 && ms <= 100_000),
        "{learnt:?}"
    );
    let fixed = list
        .iter()
        .find(|s| s.client == "192.0.2.99")
        .expect("the static session");
    assert_eq!((fixed.backend.as_deref(), fixed.expires_ms), (Some("be1"), None));
    // Deleting the learnt session lets round robin choose again.
    e.delete_session("p", "10.8.0.2").unwrap();
    let second = who(&t.tcp(vip4(110), 80));
    assert_ne!(second, first);
    assert!(matches!(
        e.delete_session("p", "10.8.0.77"),
        Err(nftlbd::engine::EngineError::NotFound(_))
    ));
    assert!(matches!(
        e.delete_session("p", "not-an-ip"),
        Err(nftlbd::engine::EngineError::Invalid(_))
    ));
    // Flushing forgets learnt sessions only; deleting a static one changes the configuration.
    e.flush_sessions("p").unwrap();
    let list = e.sessions("p").unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    e.delete_session("p", "192.0.2.99").unwrap();
    assert!(e.sessions("p").unwrap().is_empty());
    assert!(e.config().farms[0].sessions.is_empty());
}

#[test]
fn user_marks_reach_the_packets_of_each_backend() {
    let t = Topo::new(2);
    let mut b = backends(2, false);
    b[0]["mark"] = json!("0x99");
    let _e = engine(
        &t,
        json!([{"name": "m", "mark": 32, "virtual-addresses": [vip4(120)], "virtual-ports": "80", "backends": b}]),
    );
    // Someone else's table on the same host counts packets by mark after routing.
    let counting = "table inet count {\n chain post {\n  type filter hook postrouting priority 0; policy accept;\n  meta mark 0x99 counter\n  meta mark 0x20 counter\n }\n}\n";
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &t.lb, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(counting.as_bytes())?;
            c.wait()
        })
        .unwrap();
    assert!(out.success());
    let got = count(&t.tcp_n(vip4(120), 80, 4));
    assert_eq!((got.get("be0"), got.get("be1")), (Some(&2), Some(&2)), "{got:?}");
    let listing = t.nft(&["list", "table", "inet", "count"]);
    let packets: Vec<u64> = listing
        .lines()
        .filter_map(|l| l.split("counter packets ").nth(1))
        .map(|r| r.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    // Each connection: SYN, ACK, data, FIN… in both directions, first packets included.
    assert!(packets.len() == 2 && packets.iter().all(|p| *p >= 8), "{listing}");
}

#[test]
fn persistence_on_every_key_field_works_and_lists() {
    let t = Topo::new(2);
    let all = json!(["srcip", "dstip", "srcport", "dstport", "srcmac", "dstmac"]);
    let mut e = engine(
        &t,
        json!([{"name": "six", "persistence": all, "virtual-addresses": [vip4(140)], "virtual-ports": "80",
                "backends": backends(2, false)}]),
    );
    let got = t.tcp_n(vip4(140), 80, 3);
    assert!(got.iter().all(|g| g.starts_with("be")), "{got:?}");
    let s = e.sessions("six").unwrap();
    assert_eq!(s.len(), 3, "one session per source port: {s:?}");
    for x in &s {
        let parts: Vec<&str> = x.client.split(" . ").collect();
        assert_eq!(
            (parts.len(), parts[0], parts[1], parts[3]),
            (6, "10.8.0.2", "10.9.0.140", "80"),
            "{x:?}"
        );
        assert!(x.backend.is_some() && x.expires_ms.is_some(), "{x:?}");
    }
}

fn policies_config(farms: Value, policies: Value) -> Config {
    parse_config(&json!({ "farms": farms, "policies": policies }).to_string())
        .expect("valid test configuration")
}

#[test]
fn blacklists_drop_and_count_whitelists_admit_only_listed_clients() {
    let t = Topo::new(1);
    let farm = |name: &str, vip: u8, policy: &str| {
        // Rate-limited logging must not let refused packets through.
        json!({"name": name, "virtual-addresses": [vip4(vip)], "virtual-ports": "80", "backends": backends(1, false),
               "policies": [policy], "log-rtlimit": "1/minute", "log": ["input", "forward"]})
    };
    let farms = json!([
        farm("bl", 150, "deny"),
        farm("wl", 151, "allow-other"),
        farm("ok", 152, "allow-client")
    ]);
    let mut policies = json!([
        {"name": "deny", "type": "blacklist", "elements": ["10.8.0.2", "198.51.100.0/24"]},
        {"name": "allow-other", "type": "whitelist", "elements": ["192.0.2.0/24"]},
        {"name": "allow-client", "type": "whitelist", "elements": ["10.8.0.0-10.8.0.9"]}]);
    let c = policies_config(farms.clone(), policies.clone());
    let mut e = run_in(&t.lb, move || {
        let mut e = KernelEngine::open().unwrap();
        e.reconcile(c, Allocation::default()).unwrap();
        e
    });
    assert!(
        t.tcp_tries(vip4(150), 80, 2)
            .iter()
            .all(|a| a.starts_with("ERROR")),
        "blacklisted"
    );
    assert!(
        t.tcp_tries(vip4(151), 80, 1)[0].starts_with("ERROR"),
        "not on the whitelist"
    );
    assert_eq!(who(&t.tcp(vip4(152), 80)), "be0", "on the whitelist");
    let counters = e.policy_counters("deny").unwrap();
    let client = counters
        .iter()
        .find(|c| c.0 == "10.8.0.2")
        .expect("the client's element");
    assert!(client.1 >= 2 && client.2 > 0, "{counters:?}");
    assert_eq!(
        counters
            .iter()
            .find(|c| c.0 == "198.51.100.0-198.51.100.255")
            .map(|c| c.1),
        Some(0)
    );
    // Replacing the elements (one transaction) lets the client in.
    policies[0]["elements"] = json!(["198.51.100.0/24"]);
    e.apply(policies_config(farms, policies)).unwrap();
    assert_eq!(who(&t.tcp(vip4(150), 80)), "be0");
    let (cfg, alloc) = (e.config().clone(), e.allocation().clone());
    let again = e.reconcile(cfg, alloc).unwrap().changes;
    assert!(again.is_empty(), "counters are not configuration: {again:?}");
}

#[test]
fn new_connection_rate_and_established_connection_limits() {
    let t = Topo::new(1);
    let _e = engine(
        &t,
        json!([{"name": "rate", "virtual-addresses": [vip4(160)], "virtual-ports": "80", "backends": backends(1, false),
                "new-rtlimit": "1/second", "new-rtlimit-burst": 3},
               {"name": "conns", "virtual-addresses": [vip4(161)], "virtual-ports": "80", "backends": backends(1, false),
                "est-connlimit": 2}]),
    );
    let got = t.tcp_tries(vip4(160), 80, 8);
    let ok = got.iter().filter(|a| a.starts_with("be0")).count();
    assert!(
        (3..=6).contains(&ok) && got.len() - ok >= 2,
        "burst 3, then 1/s: {got:?}"
    );
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(who(&t.tcp(vip4(160), 80)), "be0", "the rate recovers");
    // Two established connections are allowed, the third is refused, and a closed one frees a place.
    let mut held: Vec<Held> = (0..2)
        .map(|_| Held::open(&t.client, SocketAddr::new(vip4(161), 80)))
        .collect();
    assert!(t.tcp_tries(vip4(161), 80, 1)[0].starts_with("ERROR"));
    assert_eq!(held[0].echo("alive").unwrap(), "alive");
    held.pop();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let after: Vec<String> = t.tcp_tries(vip4(161), 80, 1);
    assert!(after[0].starts_with("be0"), "{after:?}");
}

#[test]
fn a_backend_at_its_connection_limit_refuses_new_ones() {
    let t = Topo::new(1);
    let mut farms = json!([{"name": "lim", "virtual-addresses": [vip4(170)], "virtual-ports": "80", "backends": backends(1, false)}]);
    farms[0]["backends"][0]["est-connlimit"] = json!(1);
    let mut e = engine(&t, farms.clone());
    let held = Held::open(&t.client, SocketAddr::new(vip4(170), 80));
    assert!(
        t.tcp_tries(vip4(170), 80, 1)[0].starts_with("ERROR"),
        "the second connection is refused"
    );
    drop(held);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(t.tcp_tries(vip4(170), 80, 1)[0].starts_with("be0"));
    // Raising the limit is one element and one new chain; the old chain goes.
    farms[0]["backends"][0]["est-connlimit"] = json!(3);
    let o = e.apply(config(farms)).unwrap();
    assert!(
        o.changes.iter().any(|c| c == "add chain ip nftlbd climit-3"),
        "{:#?}",
        o.changes
    );
    assert!(
        o.changes.iter().any(|c| c == "delete chain ip nftlbd climit-1"),
        "{:#?}",
        o.changes
    );
    let (cfg, alloc) = (e.config().clone(), e.allocation().clone());
    assert!(e.reconcile(cfg, alloc).unwrap().changes.is_empty());
    // Closed connections stop counting once conntrack sees them closed.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let held: Vec<Held> = (0..3)
        .map(|_| Held::open(&t.client, SocketAddr::new(vip4(170), 80)))
        .collect();
    assert!(t.tcp_tries(vip4(170), 80, 1)[0].starts_with("ERROR"));
    drop(held);
}

/// A minimal FTP server (PASV + RETR) on the backend's address, port 21.
fn ftp_server(t: &Topo, backend: usize) {
    let ip = backend_ip(backend, false);
    let (ready, bound) = std::sync::mpsc::channel();
    in_ns(&t.backends[backend], move || {
        use std::io::{BufRead, BufReader, Write};
        let l = std::net::TcpListener::bind((ip, 21)).expect("bind ftp");
        ready.send(()).unwrap();
        for c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = c.try_clone().unwrap();
                let mut r = BufReader::new(c);
                let _ = w.write_all(b"220 ready\r\n");
                let mut data: Option<std::net::TcpListener> = None;
                let mut line = String::new();
                while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    let cmd = line.trim().to_string();
                    line.clear();
                    if cmd == "PASV" {
                        let d = std::net::TcpListener::bind((ip, 0)).unwrap();
                        let p = d.local_addr().unwrap().port();
                        let IpAddr::V4(a) = ip else { unreachable!() };
                        let o = a.octets();
                        // One write, as real servers do: the kernel's helper reads a reply only
                        // when the whole line is in one packet.
                        let reply = format!(
                            "227 Entering Passive Mode ({},{},{},{},{},{}).\r\n",
                            o[0],
                            o[1],
                            o[2],
                            o[3],
                            p >> 8,
                            p & 255
                        );
                        let _ = w.write_all(reply.as_bytes());
                        data = Some(d);
                    } else if cmd.starts_with("RETR") {
                        let _ = w.write_all(b"150 sending\r\n");
                        if let Some(d) = data.take()
                            && let Ok((mut s, _)) = d.accept()
                        {
                            let _ = s.write_all(b"hello over ftp\n");
                        }
                        let _ = w.write_all(b"226 done\r\n");
                    } else {
                        let _ = w.write_all(b"221 bye\r\n");
                        return;
                    }
                }
            });
        }
    });
    bound
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("ftp server up");
}

/// PASV through the balancer: (address:port the server announced, the file's content).
fn ftp_fetch(t: &Topo, vip: IpAddr) -> (SocketAddr, String) {
    run_in(&t.client, move || {
        use std::io::{BufRead, BufReader, Read, Write};
        let c = std::net::TcpStream::connect_timeout(
            &SocketAddr::new(vip, 21),
            std::time::Duration::from_secs(2),
        )
        .unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(3))).ok();
        let mut w = c.try_clone().unwrap();
        let mut r = BufReader::new(c);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        w.write_all(b"PASV\r\n").unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        let inner = line
            .split('(')
            .nth(1)
            .and_then(|x| x.split(')').next())
            .unwrap_or("")
            .to_string();
        let n: Vec<u16> = inner.split(',').filter_map(|x| x.trim().parse().ok()).collect();
        assert_eq!(n.len(), 6, "{line}");
        let at = SocketAddr::new(
            IpAddr::from([n[0] as u8, n[1] as u8, n[2] as u8, n[3] as u8]),
            n[4] * 256 + n[5],
        );
        let mut data = String::new();
        if let Ok(mut d) = std::net::TcpStream::connect_timeout(&at, std::time::Duration::from_secs(2)) {
            w.write_all(b"RETR file\r\n").unwrap();
            d.set_read_timeout(Some(std::time::Duration::from_secs(3))).ok();
            let _ = d.read_to_string(&mut data);
        }
        let _ = w.write_all(b"QUIT\r\n");
        (at, data)
    })
}

#[test]
fn an_ftp_transfer_works_through_a_helper_farm() {
    let t = Topo::new(1);
    ftp_server(&t, 0);
    let b = backends(1, false);
    let _e = engine(
        &t,
        json!([{"name": "ftp", "helper": "ftp", "virtual-addresses": [vip4(180)], "virtual-ports": "21", "backends": b.clone()},
               {"name": "plain", "virtual-addresses": [vip4(181)], "virtual-ports": "21", "backends": b}]),
    );
    // With the helper the server's passive address is rewritten to the VIP and the data
    // connection follows the control connection's NAT.
    let (at, data) = ftp_fetch(&t, vip4(180));
    assert_eq!(at.ip(), vip4(180), "the PASV reply names the VIP");
    assert_eq!(data, "hello over ftp\n");
    // Without it the client is told the backend's own address.
    let (at, _) = ftp_fetch(&t, vip4(181));
    assert_eq!(at.ip(), backend_ip(0, false));
}

#[test]
fn intra_connect_balances_connections_from_the_balancer_itself() {
    let t = Topo::new(2);
    // The balancer needs a route to the VIPs for its own connections; NAT then re-routes them.
    let out = std::process::Command::new("ip")
        .args(["-n", &t.lb, "route", "add", "10.9.0.0/24", "dev", "l0"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let _e = engine(
        &t,
        json!([{"name": "in", "intra-connect": true, "virtual-addresses": [vip4(190)], "virtual-ports": "80,8000-8100",
                "backends": backends(2, false)},
               {"name": "out", "virtual-addresses": [vip4(191)], "virtual-ports": "80", "backends": backends(2, false)}]),
    );
    let from_lb = |vip: IpAddr, port: u16, n: usize| {
        run_in(&t.lb, move || {
            (0..n)
                .map(|_| tcp_hello_within(SocketAddr::new(vip, port), std::time::Duration::from_millis(500)))
                .collect::<Vec<_>>()
        })
    };
    let got = count(&from_lb(vip4(190), 80, 4));
    assert_eq!((got.get("be0"), got.get("be1")), (Some(&2), Some(&2)), "{got:?}");
    assert_eq!(
        count(&from_lb(vip4(190), 8080, 2)).len(),
        2,
        "ports in a range too"
    );
    assert!(
        from_lb(vip4(191), 80, 1)[0].starts_with("ERROR"),
        "a farm without intra-connect"
    );
    // The client is balanced as before.
    assert_eq!(count(&t.tcp_n(vip4(191), 80, 2)).len(), 2);
}

/// Loads a table of someone else's into the balancer (to count what got past us).
fn foreign_table(t: &Topo, text: &str) {
    use std::io::Write;
    let mut c = std::process::Command::new("ip")
        .args(["netns", "exec", &t.lb, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    assert!(common::wait_within(&mut c, std::time::Duration::from_secs(30)).success());
}

/// The packet counts of a foreign table's counters, in order.
fn counters(t: &Topo, table: &str) -> Vec<u64> {
    t.nft(&["list", "table", "inet", table])
        .lines()
        .filter_map(|l| l.split("counter packets ").nth(1))
        .map(|r| r.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

/// Sends one bare TCP segment with `flags` from the client to `dst` (a raw socket).
fn send_tcp_flags(t: &Topo, dst: std::net::Ipv4Addr, port: u16, flags: u8) {
    run_in(&t.client, move || {
        let src = std::net::Ipv4Addr::new(10, 8, 0, 2);
        let mut seg = [0u8; 20];
        seg[0..2].copy_from_slice(&40000u16.to_be_bytes());
        seg[2..4].copy_from_slice(&port.to_be_bytes());
        seg[4..8].copy_from_slice(&12345u32.to_be_bytes());
        seg[12] = 5 << 4;
        seg[13] = flags;
        seg[14..16].copy_from_slice(&1024u16.to_be_bytes());
        let mut sum: u32 = 0;
        let mut add = |b: &[u8]| {
            for c in b.chunks(2) {
                sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
        };
        add(&src.octets());
        add(&dst.octets());
        add(&[0, 6, 0, 20]);
        add(&seg);
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        seg[16..18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn};
        let fd = nix::sys::socket::socket(
            AddressFamily::Inet,
            SockType::Raw,
            SockFlag::empty(),
            SockProtocol::Tcp,
        )
        .expect("raw socket");
        let to = SockaddrIn::from(std::net::SocketAddrV4::new(dst, 0));
        let n = nix::sys::socket::sendto(std::os::fd::AsRawFd::as_raw_fd(&fd), &seg, &to, MsgFlags::empty());
        assert_eq!(n, Ok(20));
    });
}

#[test]
fn tcp_strict_drops_bogus_segments_and_rst_rtlimit_limits_resets() {
    let t = Topo::new(1);
    let _e = engine(
        &t,
        json!([{"name": "strict", "tcp-strict": true, "virtual-addresses": [vip4(200)], "virtual-ports": "80",
                "backends": backends(1, false)},
               {"name": "lax", "virtual-addresses": [vip4(201)], "virtual-ports": "80", "backends": backends(1, false)},
               {"name": "rst", "rst-rtlimit": "1/minute", "rst-rtlimit-burst": 1, "virtual-addresses": [vip4(202)],
                "virtual-ports": "80", "backends": backends(1, false)}]),
    );
    // Someone else's counters, just after our mangle chain.
    foreign_table(
        &t,
        "table inet seen {\n chain pre {\n  type filter hook prerouting priority -140; policy accept;\n\
         ip daddr 10.9.0.200 tcp flags & (syn|fin) == syn|fin counter\n\
         ip daddr 10.9.0.201 tcp flags & (syn|fin) == syn|fin counter\n\
         ip saddr 10.8.0.2 tcp flags rst counter\n }\n}\n",
    );
    for vip in [200u8, 201] {
        send_tcp_flags(&t, std::net::Ipv4Addr::new(10, 9, 0, vip), 80, 0x03);
    }
    // Normal traffic to the strict farm still flows.
    assert_eq!(who(&t.tcp(vip4(200), 80)), "be0");
    // Five connections closed with a reset each: one reset per minute (burst 1) gets through.
    run_in(&t.client, || {
        for _ in 0..5 {
            let s = std::net::TcpStream::connect((std::net::Ipv4Addr::new(10, 9, 0, 202), 80)).unwrap();
            // Linger 0: closing sends a reset.
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Linger, &linger).expect("SO_LINGER");
            let mut b = [0u8; 64];
            let _ = std::io::Read::read(&mut &s, &mut b);
            drop(s);
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    let c = counters(&t, "seen");
    assert_eq!(
        c[0], 0,
        "the strict farm dropped the SYN+FIN segment first: {c:?}"
    );
    assert_eq!(c[1], 1, "the lax farm let it through: {c:?}");
    assert!(
        (1..=2).contains(&c[2]),
        "resets past the limit were dropped: {c:?}"
    );
}
