//! Pure tests of layer-2 rendering: facts made by hand, no kernel, no root.

use std::collections::BTreeSet;

use serde_json::json;

use super::*;
use crate::engine::alloc::Allocation;
use crate::engine::ruleset::FamilyState;
use crate::model::{Config, parse_config};
use crate::netlink::{Data, Expr, SetElem, Verdict};

const ETH0: Link = Link {
    index: 7,
    mac: [2, 0, 0, 0, 0, 7],
};
const ETH1: Link = Link {
    index: 8,
    mac: [2, 0, 0, 0, 0, 8],
};
const MAC_A: [u8; 6] = [4, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [4, 0, 0, 0, 0, 0xb];

fn config(farm: serde_json::Value) -> Config {
    parse_config(&json!({ "farms": [farm] }).to_string()).unwrap()
}

fn dsr_farm() -> serde_json::Value {
    json!({"name": "web", "mode": "dsr", "scheduler": "hash", "virtual-addresses": ["192.0.2.10"],
           "virtual-ports": "80", "protocol": "tcp",
           "backends": [{"name": "a", "ip-addr": "10.1.0.1"}, {"name": "b", "ip-addr": "10.1.0.2"}]})
}

/// eth0 has the VIP, the backends are reached by eth1 and both answered ARP there.
fn facts() -> HostFacts {
    let mut f = HostFacts::default();
    f.links.insert("eth0".into(), ETH0);
    f.links.insert("eth1".into(), ETH1);
    f.owners.insert("192.0.2.10".parse().unwrap(), "eth0".into());
    f.routes.insert("10.1.0.1".parse().unwrap(), "eth1".into());
    f.neighbours
        .insert(("eth1".into(), "10.1.0.1".parse().unwrap()), MAC_A);
    f.neighbours
        .insert(("eth1".into(), "10.1.0.2".parse().unwrap()), MAC_B);
    f
}

fn render_with(c: &Config, facts: &HostFacts) -> (Option<FamilyState>, BackendMacs) {
    let mut a = Allocation::default();
    a.update(c).unwrap();
    render(c, &a, facts)
}

fn chain_names(s: &FamilyState) -> BTreeSet<String> {
    let farms = s.farms.values().chain(s.shared.values());
    let parts = farms.flat_map(|p| p.chain.iter().chain(&p.extra));
    s.chains
        .iter()
        .chain(parts)
        .map(|c| c.chain.name.clone())
        .collect()
}

fn elems<'a>(s: &'a FamilyState, set: &str) -> Vec<&'a SetElem> {
    let parts = s.farms.values().chain(s.shared.values());
    parts
        .flat_map(|p| p.elems.get(set).into_iter().flatten())
        .collect()
}

fn names(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_dsr_farm_of_two_backends_sends_to_their_macs_out_of_oface() {
    let c = config(dsr_farm());
    let (state, macs) = render_with(&c, &facts());
    let s = state.unwrap();
    assert_eq!(chain_names(&s), names(&["ingress-eth0", "l2-web"]));
    let sets: BTreeSet<String> = s.sets.keys().cloned().collect();
    assert_eq!(
        sets,
        names(&[
            "backend-traffic-1",
            "l2-service-addrs",
            "l2-services",
            "l2slots-0"
        ])
    );
    assert_eq!(s.objs.keys().collect::<Vec<_>>(), ["traffic-1"]);
    // One slot each, the backend's MAC as data.
    let slots: Vec<(Vec<u8>, Option<Data>)> = elems(&s, "l2slots-0")
        .into_iter()
        .map(|e| (e.key.to_vec(), e.data.clone()))
        .collect();
    let base = crate::engine::layout::slot_base(1);
    assert_eq!(
        slots,
        [
            (
                base.to_ne_bytes().to_vec(),
                Some(Data::Value(MAC_A.to_vec().into()))
            ),
            (
                (base + 1).to_ne_bytes().to_vec(),
                Some(Data::Value(MAC_B.to_vec().into()))
            ),
        ]
    );
    // tcp . 192.0.2.10 . 80 → goto l2-web.
    let services: Vec<&SetElem> = elems(&s, "l2-services");
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].key, [6, 0, 0, 0, 192, 0, 2, 10, 0, 80, 0, 0]);
    assert_eq!(
        services[0].data,
        Some(Data::Verdict(Verdict::Goto("l2-web".into())))
    );
    // The ingress hook is on eth0 (the VIP's interface); frames leave by eth1 with its MAC.
    let ingress = &s.chains[0];
    assert_eq!(
        ingress.chain.hook.as_ref().unwrap().device.as_deref(),
        Some("eth0")
    );
    let farm = s.farms["web"].chain.as_ref().unwrap();
    assert_eq!(farm.rules.len(), 3, "count, choose, drop");
    let choose = &farm.rules[1].exprs;
    assert!(choose.contains(&Expr::immediate(
        crate::netlink::consts::reg::R1,
        ETH1.mac.to_vec()
    )));
    assert!(choose.contains(&Expr::immediate(
        crate::netlink::consts::reg::R2,
        ETH1.index.to_ne_bytes().to_vec()
    )));
    assert!(matches!(choose.last(), Some(Expr::Fwd { .. })));
    assert_eq!(farm.rules[2].exprs, [Expr::verdict(Verdict::Drop)]);
    // The MACs the table was made with, for reading the backends' counters later.
    assert_eq!(macs.len(), 2);
    assert_eq!(macs[&("web".to_string(), "b".to_string())], MAC_B);
}

#[test]
fn round_robin_remembers_flows() {
    let mut f = dsr_farm();
    f["scheduler"] = json!("rr");
    let (state, _) = render_with(&config(f), &facts());
    let s = state.unwrap();
    assert!(s.sets.contains_key("l2-flows"));
    let farm = s.farms["web"].chain.as_ref().unwrap();
    assert_eq!(farm.rules.len(), 4, "count, known flow, choose, drop");
}

#[test]
fn a_missing_mac_names_the_backend_field_and_leaves_the_farm_out() {
    let c = config(dsr_farm());
    let mut f = facts();
    f.neighbours
        .remove(&("eth1".to_string(), "10.1.0.2".parse().unwrap()));
    let err = check(&c, &f).unwrap_err();
    assert_eq!(err.field, "farms[web].backends[b].ether-addr");
    assert_eq!(
        err.to_string(),
        "farms[web].backends[b].ether-addr: 10.1.0.2 does not answer ARP on eth1; set ether-addr"
    );
    let (state, macs) = render_with(&c, &f);
    assert_eq!(state, None);
    assert!(macs.is_empty());
}

#[test]
fn a_given_mac_and_interfaces_need_no_discovery() {
    let mut farm = dsr_farm();
    farm["iface"] = json!("eth0");
    farm["oface"] = json!("eth0");
    farm["backends"][0]["ether-addr"] = json!("04:00:00:00:00:0a");
    farm["backends"][1]["ether-addr"] = json!("04:00:00:00:00:0b");
    let mut f = HostFacts::default();
    f.links.insert("eth0".into(), ETH0);
    let r = resolve(&config(farm).farms[0], &f).unwrap();
    assert_eq!((r.iface.as_str(), r.oface.as_str()), ("eth0", "eth0"));
    assert_eq!((r.input, r.output), (ETH0, ETH0));
    assert_eq!(r.macs.values().copied().collect::<Vec<_>>(), [MAC_A, MAC_B]);
}

#[test]
fn unresolved_interfaces_name_their_field() {
    let c = config(dsr_farm());
    let mut f = facts();
    f.owners.clear();
    assert_eq!(
        check(&c, &f).unwrap_err().to_string(),
        "farms[web].iface: no interface of this host has 192.0.2.10; set iface"
    );
    let mut f = facts();
    f.links.remove("eth1");
    assert_eq!(
        check(&c, &f).unwrap_err().to_string(),
        "farms[web].oface: no interface named \"eth1\" on this host"
    );
    let mut f = facts();
    f.routes.clear();
    assert_eq!(
        check(&c, &f).unwrap_err().to_string(),
        "farms[web].oface: no route to backend 10.1.0.1 from this host; set oface"
    );
}

#[test]
fn stateless_dnat_rewrites_replies_back_on_oface() {
    let mut farm = dsr_farm();
    farm["mode"] = json!("stlsdnat");
    farm["backends"][0]["port"] = json!(8080);
    let (state, _) = render_with(&config(farm), &facts());
    let s = state.unwrap();
    assert_eq!(
        chain_names(&s),
        names(&["ingress-eth0", "ingress-eth1", "l2-web", "l2-web-back"])
    );
    for set in [
        "stl-slots-0",
        "stl-macs",
        "stl-clients",
        "stl-ports",
        "l2-returns",
    ] {
        assert!(s.sets.contains_key(set), "{set}");
    }
    let macs: Vec<(Vec<u8>, Option<Data>)> = elems(&s, "stl-macs")
        .into_iter()
        .map(|e| (e.key.to_vec(), e.data.clone()))
        .collect();
    assert_eq!(
        macs,
        [
            (vec![10, 1, 0, 1], Some(Data::Value(MAC_A.to_vec().into()))),
            (vec![10, 1, 0, 2], Some(Data::Value(MAC_B.to_vec().into()))),
        ]
    );
    // Backend a answers from its own port 8080, b from the virtual port 80.
    let ports: Vec<Option<Data>> = elems(&s, "stl-ports")
        .into_iter()
        .map(|e| e.data.clone())
        .collect();
    assert_eq!(
        ports,
        [
            Some(Data::Value(8080u16.to_be_bytes().to_vec().into())),
            Some(Data::Value(80u16.to_be_bytes().to_vec().into()))
        ]
    );
    let back = &s.farms["web"].extra[0];
    let reply = &back.rules[1].exprs;
    assert!(matches!(reply.last(), Some(Expr::Fwd { .. })));
    assert!(reply.contains(&Expr::immediate(
        crate::netlink::consts::reg::R2,
        ETH0.index.to_ne_bytes().to_vec()
    )));
}
