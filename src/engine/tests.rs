//! Pure tests of rendering and diffing (no kernel): what a transaction contains and its order.

use serde_json::json;

use super::alloc::Allocation;
use super::render::{IpFamily, render_family, render_farm, skeleton};
use super::ruleset::{diff, diff_parts};
use crate::model::{Config, parse_config};
use crate::netlink::Batch;

fn config(n_backends: usize, extra: serde_json::Value) -> Config {
    let b: Vec<_> = (0..n_backends)
        .map(|i| json!({"name": format!("b{i}"), "ip-addr": format!("10.0.{}.{}", i / 256, i % 256)}))
        .collect();
    let mut f =
        json!({"name": "web", "virtual-addresses": ["192.0.2.1"], "virtual-ports": "80,443", "backends": b});
    for (k, v) in extra.as_object().unwrap() {
        f[k] = v.clone();
    }
    parse_config(
        &json!({"farms": [f, {"name": "other", "virtual-addresses": ["192.0.2.2"],
        "backends": [{"name": "x", "ip-addr": "10.9.9.9"}]}]})
        .to_string(),
    )
    .unwrap()
}

fn full(c: &Config, a: &Allocation) -> Vec<String> {
    let mut b = Batch::new();
    let s = render_family(IpFamily::V4, c, a, 0);
    diff(None, s.as_ref(), true, &mut b).unwrap();
    b.describe()
}

/// The messages that turn `old` into `new`, comparing only farm `web` (as `Engine::apply` does).
fn change(old: &Config, new: &Config) -> Vec<String> {
    let mut a = Allocation::default();
    a.update(old).unwrap();
    let before = render_family(IpFamily::V4, old, &a, 0);
    a.update(new).unwrap();
    let sk = skeleton(IpFamily::V4, new, &a, 0, &[]);
    let part = new
        .farm("web")
        .and_then(|f| render_farm(IpFamily::V4, f, &a, &new.policies));
    let old_part = before.as_ref().and_then(|s| s.farms.get("web"));
    let mut b = Batch::new();
    diff_parts(
        before.as_ref(),
        sk.as_ref(),
        [(old_part, part.as_ref())].into_iter(),
        false,
        &mut b,
    )
    .unwrap();
    b.describe()
}

fn position(msgs: &[String], what: &str) -> usize {
    msgs.iter()
        .position(|m| m.starts_with(what))
        .unwrap_or_else(|| panic!("no {what:?} in {msgs:#?}"))
}

#[test]
fn a_first_commit_creates_in_the_order_the_kernel_needs() {
    let c = config(3, json!({}));
    let mut a = Allocation::default();
    a.update(&c).unwrap();
    let m = full(&c, &a);
    assert_eq!(m[0], "add table ip nftlbd");
    // Sets before chains, chains before rules, rules (which bind maps) before elements.
    assert!(position(&m, "add map ip nftlbd slots-0") < position(&m, "add chain ip nftlbd farm-web"));
    assert!(position(&m, "add chain ip nftlbd farm-web") < position(&m, "add rule ip nftlbd farm-web"));
    // The shard's chain that binds the slot map is filled before the map's elements come.
    assert!(position(&m, "add chain ip nftlbd pick-0") < position(&m, "add rule ip nftlbd farm-web"));
    assert!(
        position(&m, "add rule ip nftlbd pick-0") < position(&m, "add elements 0..4 of ip nftlbd slots-0")
    );
    assert!(
        position(&m, "add rule ip nftlbd farm-web") < position(&m, "add elements 0..2 of ip nftlbd services")
    );
    // Single ports go to the hash map, "every port" to the interval map.
    assert!(
        position(&m, "add chain ip nftlbd farm-other") < position(&m, "add rule ip nftlbd ports-6-c0000202")
    );
    assert!(
        position(&m, "add rule ip nftlbd ports-6-c0000202")
            < position(&m, "add elements 0..1 of ip nftlbd service-addrs")
    );
    assert!(m.iter().all(|x| !x.starts_with("delete")), "{m:#?}");
}

#[test]
fn nothing_changed_means_an_empty_transaction() {
    let c = config(3, json!({}));
    assert_eq!(change(&c, &c), Vec::<String>::new());
}

#[test]
fn one_backend_more_is_its_elements_and_the_farm_rules() {
    let m = change(&config(100, json!({})), &config(101, json!({})));
    // slots, targets, masquerade, traffic and new-connection counters: one element each; the
    // scheduling rule gets its new modulus. The shard's `pick-0`, which binds the slot map, is left alone.
    assert_eq!(
        m,
        [
            "flush chain ip nftlbd farm-web",
            "add rule ip nftlbd farm-web",
            "add rule ip nftlbd farm-web",
            "add rule ip nftlbd farm-web",
            "add rule ip nftlbd farm-web",
            "add elements 0..1 of ip nftlbd masq",
            "add elements 0..1 of ip nftlbd new-conns",
            "add elements 0..1 of ip nftlbd slots-0",
            "add elements 0..1 of ip nftlbd targets-a",
            "add elements 0..1 of ip nftlbd traffic",
        ]
    );
}

#[test]
fn only_the_shard_chain_binds_a_slot_map() {
    // A farm's rules are replaced whenever N changes; one binding a slot map there would make
    // the kernel walk the whole map on each such change.
    for extra in [
        json!({"scheduler": "rr"}),
        json!({"scheduler": "weight", "persistence": ["srcip"]}),
        json!({"scheduler": "hash", "sched-param": ["srcip", "srcport"]}),
        json!({"scheduler": "symhash"}),
    ] {
        let c = config(5, extra.clone());
        let mut a = Allocation::default();
        a.update(&c).unwrap();
        let s = render_family(IpFamily::V4, &c, &a, 0).unwrap();
        let binders: Vec<String> = s
            .chains
            .iter()
            .chain(s.farms.values().filter_map(|p| p.chain.as_ref()))
            .flat_map(|c| &c.rules)
            .filter(|r| {
                r.exprs.iter().any(
                    |e| matches!(e, crate::netlink::Expr::Lookup { set, .. } if set.starts_with("slots-")),
                )
            })
            .map(|r| r.chain.clone())
            .collect();
        assert_eq!(binders, ["pick-0"], "{extra}");
    }
}

#[test]
fn a_state_change_touches_only_slots_and_rules() {
    let old = config(10, json!({}));
    let mut new = old.clone();
    new.farms[0].backends[4].state = crate::model::BackendState::Drain;
    let m = change(&old, &new);
    // The drained backend's slot is refilled from the end: delete 2 slots, add 1; nothing else.
    assert!(
        m.iter().all(|x| x.contains("farm-web") || x.contains("slots-0")),
        "{m:#?}"
    );
    assert!(
        m.contains(&"delete elements 0..2 of ip nftlbd slots-0".to_string()),
        "{m:#?}"
    );
    assert!(
        m.contains(&"add elements 0..1 of ip nftlbd slots-0".to_string()),
        "{m:#?}"
    );
}

#[test]
fn removing_the_last_farm_of_a_family_drops_its_table() {
    let c = config(2, json!({}));
    let mut a = Allocation::default();
    a.update(&c).unwrap();
    let s = render_family(IpFamily::V4, &c, &a, 0);
    let mut b = Batch::new();
    diff(s.as_ref(), None, true, &mut b).unwrap();
    assert_eq!(b.describe(), ["delete table ip nftlbd"]);
    // And an IPv4-only configuration has no IPv6 table at all.
    assert!(render_family(IpFamily::V6, &c, &a, 0).is_none());
}

#[test]
fn a_changed_set_definition_rebuilds_only_when_the_whole_table_is_known() {
    let c = config(2, json!({}));
    let mut a = Allocation::default();
    a.update(&c).unwrap();
    let want = render_family(IpFamily::V4, &c, &a, 0).unwrap();
    let mut have = want.clone();
    have.sets.get_mut("masq").unwrap().flags |= crate::netlink::sys::NFT_SET_TIMEOUT;
    let mut b = Batch::new();
    diff(Some(&have), Some(&want), true, &mut b).unwrap();
    let m = b.describe();
    assert_eq!(m[0], "delete table ip nftlbd");
    assert_eq!(m[1], "add table ip nftlbd");
    let mut b = Batch::new();
    assert!(diff(Some(&have), Some(&want), false, &mut b).is_err());
}
