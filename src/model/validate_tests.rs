use super::*;
use serde_json::json;

fn check(doc: serde_json::Value) -> Result<Config, Invalid> {
    parse_config(&doc.to_string())
}

/// Asserts the document is refused, with an error on `field` whose reason contains `reason`.
fn refused(doc: serde_json::Value, field: &str, reason: &str) {
    let e = check(doc.clone()).expect_err(&format!("accepted: {doc}"));
    assert!(
        e.0.iter()
            .any(|fe| fe.field == field && fe.reason.contains(reason)),
        "wanted {field}: …{reason}…, got: {e}"
    );
}

fn web(extra: serde_json::Value) -> serde_json::Value {
    let mut f = json!({
        "name": "web", "virtual-addresses": ["192.0.2.10"], "virtual-ports": "80,443",
        "backends": [{"name": "b1", "ip-addr": "10.0.0.1"}, {"name": "b2", "ip-addr": "10.0.0.2", "port": 8080}]
    });
    for (k, v) in extra.as_object().unwrap() {
        f[k] = v.clone();
    }
    json!({ "farms": [f] })
}

#[test]
fn a_complete_farm_is_accepted_with_nftlb_defaults() {
    let c = check(web(json!({}))).unwrap();
    let f = &c.farms[0];
    assert_eq!(
        (f.family, f.protocol, f.mode, f.scheduler),
        (FarmFamily::Ipv4, Protocol::Tcp, Mode::Snat, Scheduler::Rr)
    );
    assert_eq!(
        (f.persist_ttl, f.limits_ttl, f.queue, f.priority),
        (60, 120, -1, 1)
    );
    assert_eq!(f.backends[0].weight, 1);
    assert_eq!(f.backends[1].port, Some(8080));
    assert_eq!(f.hash_fields(), vec![KeyField::Srcip]);
}

#[test]
fn canonical_json_round_trips() {
    let c = check(web(json!({"scheduler": "hash", "sched-param": ["srcip", "srcport"], "mark": "0x20",
        "persistence": ["srcip"], "persist-ttl": 30, "sessions": [{"client": "198.51.100.7", "backend": "b2"}]})))
    .unwrap();
    let text = serde_json::to_string(&c).unwrap();
    assert!(text.contains("\"mark\":32"), "{text}");
    assert!(text.contains("\"virtual-ports\":\"80,443\""), "{text}");
    assert_eq!(parse_config(&text).unwrap(), c);
}

#[test]
fn unknown_keys_and_values_are_refused_with_their_path() {
    refused(
        web(json!({"colour": "red"})),
        "farms[0].colour",
        "unknown field `colour`",
    );
    refused(
        web(json!({"scheduler": "leastconn"})),
        "farms[0].scheduler",
        "unknown variant `leastconn`",
    );
    refused(
        web(json!({"family": "inet"})),
        "farms[0].family",
        "unknown variant `inet`",
    );
    refused(
        json!({"farms": [], "addresses": []}),
        "addresses",
        "unknown field `addresses`",
    );
    refused(
        json!({"farms": [{"name": "x", "virtual-addresses": ["192.0.2.1"], "backends": [{"name": "b", "ip-addr": "10.0.0.1", "wieght": 2}]}]}),
        "farms[0].backends[0].wieght",
        "unknown field `wieght`",
    );
    refused(
        web(json!({"persist-ttl": "60"})),
        "farms[0].persist-ttl",
        "invalid type: string",
    );
    refused(
        web(json!({"virtual-addresses": ["300.1.1.1"]})),
        "farms[0].virtual-addresses[0]",
        "invalid IP address",
    );
}

#[test]
fn names_follow_the_api_syntax() {
    refused(
        web(json!({"name": "-web"})),
        "farms[-web].name",
        "must start with a letter or digit",
    );
    refused(
        web(json!({"name": "w/eb"})),
        "farms[w/eb].name",
        "may contain only",
    );
    let mut doc = web(json!({}));
    doc["farms"][0]["backends"][1]["name"] = json!("b1");
    refused(
        doc,
        "farms[web].backends[b1].name",
        "another backend of this farm has this name",
    );
    let doc = json!({"farms": [web(json!({}))["farms"][0], web(json!({"virtual-addresses": ["192.0.2.99"]}))["farms"][0]]});
    refused(doc, "farms[web].name", "another farm has this name");
}

#[test]
fn addresses_must_fit_the_family_and_be_unicast() {
    refused(
        web(json!({"virtual-addresses": ["2001:db8::1"]})),
        "farms[web].virtual-addresses[0]",
        "is an IPv6 address but the farm's family is ipv4",
    );
    refused(
        web(json!({"virtual-addresses": []})),
        "farms[web].virtual-addresses",
        "at least one",
    );
    refused(
        web(json!({"virtual-addresses": ["224.0.0.1"]})),
        "farms[web].virtual-addresses[0]",
        "multicast",
    );
    refused(
        web(json!({"virtual-addresses": ["0.0.0.0"]})),
        "farms[web].virtual-addresses[0]",
        "unspecified",
    );
    refused(
        web(json!({"virtual-addresses": ["192.0.2.10", "192.0.2.10"]})),
        "farms[web].virtual-addresses[1]",
        "listed twice",
    );
    let mut doc = web(json!({}));
    doc["farms"][0]["backends"][0]["ip-addr"] = json!("2001:db8::5");
    refused(
        doc,
        "farms[web].backends[b1].ip-addr",
        "is an IPv6 address but the farm serves only IPv4",
    );
    // A dual farm takes both families, for VIPs and backends.
    let mut doc = web(json!({"family": "dual", "virtual-addresses": ["192.0.2.10", "2001:db8::10"]}));
    doc["farms"][0]["backends"][0]["ip-addr"] = json!("2001:db8::5");
    check(doc).unwrap();
}

#[test]
fn ports_weights_and_priorities_are_range_checked() {
    refused(
        web(json!({"virtual-ports": "80,0"})),
        "farms[web].virtual-ports",
        "item 1 (\"0\") is not a port",
    );
    refused(
        web(json!({"virtual-ports": "90-80"})),
        "farms[web].virtual-ports",
        "runs backwards",
    );
    // Ports are typed as the document is read; the error is still the farm's field and reason,
    // exactly, from a whole document and from one farm alone.
    assert_eq!(
        check(web(json!({"virtual-ports": "80,,90"}))).unwrap_err(),
        Invalid::one("farms[web].virtual-ports", "item 1 (\"\") is an empty list item")
    );
    assert_eq!(
        parse_farm_value(
            &web(json!({"virtual-ports": "80,,90"}))["farms"][0].clone(),
            "farms[web]"
        )
        .unwrap_err(),
        Invalid::one("farms[web].virtual-ports", "item 1 (\"\") is an empty list item")
    );
    // Without a name to give, the path says where it is.
    let mut doc = web(json!({"virtual-ports": "0"}));
    doc["farms"][0].as_object_mut().unwrap().remove("name");
    refused(doc, "farms[0].virtual-ports", "item 0 (\"0\") is not a port");
    let mut doc = web(json!({}));
    doc["farms"][0]["backends"][0]["weight"] = json!(0);
    refused(doc, "farms[web].backends[b1].weight", "is not 1-10000");
    let mut doc = web(json!({}));
    doc["farms"][0]["backends"][0]["port"] = json!(70000);
    refused(doc, "farms[0].backends[0].port", "invalid value");
    let mut doc = web(json!({}));
    doc["farms"][0]["backends"][0]["priority"] = json!(0);
    refused(doc, "farms[web].backends[b1].priority", "at least 1");
    refused(
        web(json!({"persist-ttl": 0})),
        "farms[web].persist-ttl",
        "at least 1 second",
    );
    refused(web(json!({"queue": -2})), "farms[web].queue", "is not -1");
}

#[test]
fn scheduler_keys_and_helpers_must_fit() {
    refused(
        web(json!({"sched-param": ["srcip"]})),
        "farms[web].sched-param",
        "scheduler does not use it",
    );
    refused(
        web(json!({"scheduler": "hash", "sched-param": ["srcip", "srcip"]})),
        "farms[web].sched-param",
        "listed twice",
    );
    refused(
        web(json!({"sched-param": ["srcaddr"]})),
        "farms[0].sched-param[0]",
        "unknown variant `srcaddr`",
    );
    refused(
        web(json!({"log": ["output"]})),
        "farms[web].log",
        "output is the log of layer-2 modes",
    );
    refused(
        web(json!({"mode": "dsr", "scheduler": "hash", "log": ["input"]})),
        "farms[web].log",
        "layer-2 modes log what they send out",
    );
    refused(
        web(json!({"helper": "tftp"})),
        "farms[web].helper",
        "helper tftp does not work with protocol tcp",
    );
    refused(
        web(json!({"helper": "ftp", "protocol": "all"})),
        "farms[web].helper",
        "does not work",
    );
    check(web(json!({"helper": "sip", "protocol": "udp"}))).unwrap();
}

#[test]
fn source_addresses_fit_mode_and_family() {
    refused(
        web(json!({"mode": "dnat", "source-addr": "192.0.2.1"})),
        "farms[web].source-addr",
        "only by modes snat and local",
    );
    refused(
        web(json!({"source-addr": "2001:db8::1"})),
        "farms[web].source-addr",
        "not of the farm's family",
    );
    let mut doc = web(json!({}));
    doc["farms"][0]["backends"][0]["source-addr"] = json!("2001:db8::1");
    refused(
        doc,
        "farms[web].backends[b1].source-addr",
        "not of the backend's family",
    );
}

#[test]
fn two_farms_may_not_claim_the_same_service() {
    let a = web(json!({}))["farms"][0].clone();
    let mut b = web(json!({"virtual-ports": "440-450"}))["farms"][0].clone();
    b["name"] = json!("api");
    refused(
        json!({"farms": [a.clone(), b.clone()]}),
        "farms[api].virtual-ports",
        "overlap farm \"web\" (443-443)",
    );
    // Another protocol or address is another service.
    b["protocol"] = json!("udp");
    check(json!({"farms": [a.clone(), b.clone()]})).unwrap();
    b["protocol"] = json!("all");
    refused(
        json!({"farms": [a.clone(), b]}),
        "farms[api].virtual-ports",
        "overlap",
    );
    // An empty port list means every port.
    let mut c = web(json!({"virtual-ports": ""}))["farms"][0].clone();
    c["name"] = json!("all");
    refused(json!({"farms": [a, c]}), "farms[all].virtual-ports", "overlap");
}

#[test]
fn static_sessions_follow_the_persistence_key() {
    let s = |client: &str, backend: &str| json!([{"client": client, "backend": backend}]);
    refused(
        web(json!({"sessions": s("198.51.100.7", "b1")})),
        "farms[web].sessions[0]",
        "need the farm's persistence",
    );
    let p = json!(["srcip", "srcport"]);
    check(web(
        json!({"persistence": p, "sessions": s("198.51.100.7 . 4000", "b1")}),
    ))
    .unwrap();
    refused(
        web(json!({"persistence": p, "sessions": s("198.51.100.7", "b1")})),
        "farms[web].sessions[0].client",
        "has 1 part(s) but the persistence key is 2 (srcip . srcport)",
    );
    // A part that is no value at all is refused as the document is read, under the farm's name.
    assert_eq!(
        check(web(
            json!({"persistence": p, "sessions": s("198.51.100.7 . x", "b1")})
        ))
        .unwrap_err(),
        Invalid::one(
            "farms[web].sessions[0].client",
            "\"x\" is not an IP address, a port 1-65535 or a MAC address"
        )
    );
    assert_eq!(
        parse_farm_value(
            &web(json!({"persistence": p, "sessions": s("198.51.100.7 . 0", "b1")}))["farms"][0].clone(),
            "farms[web]"
        )
        .unwrap_err(),
        Invalid::one("farms[web].sessions[0].client", "\"0\" is not a port 1-65535")
    );
    // A value of the wrong kind for its field is validation's: it knows the persistence.
    assert_eq!(
        check(web(
            json!({"persistence": p, "sessions": s("198.51.100.7 . 02:00:00:00:00:01", "b1")})
        ))
        .unwrap_err(),
        Invalid::one(
            "farms[web].sessions[0].client",
            "\"02:00:00:00:00:01\" is not a port 1-65535 (srcport)"
        )
    );
    refused(
        web(json!({"persistence": p, "sessions": s("2001:db8::7 . 80", "b1")})),
        "farms[web].sessions[0].client",
        "2001:db8::7 is not of the farm's family",
    );
    let two = json!([{"client": "198.51.100.7 . 80", "backend": "b1"}, {"client": "198.51.100.7 . 080", "backend": "b2"}]);
    assert_eq!(
        check(web(json!({"persistence": p, "sessions": two}))).unwrap_err(),
        Invalid::one(
            "farms[web].sessions[1].client",
            "another static session has this client"
        )
    );
    refused(
        web(json!({"persistence": p, "sessions": s("198.51.100.7 . 1", "nobody")})),
        "farms[web].sessions[0].backend",
        "no backend of this farm is named \"nobody\"",
    );
}

#[test]
fn policies_are_checked_and_referenced_by_name() {
    refused(
        web(json!({"policies": ["nope"]})),
        "farms[web].policies",
        "no policy is named \"nope\"",
    );
    let doc = json!({"policies": [{"name": "bl", "elements": ["192.0.2.0/24", "10.0.0.1-10.0.0.9", "2001:db8::1", "10.0.0.2/8"]}]});
    let e = check(doc).unwrap_err();
    assert_eq!(
        e,
        Invalid::one(
            "policies[bl].elements[2]",
            "2001:db8::1 is not of the policy's family"
        )
    );
    // A range that runs backwards is refused as the document is read, under the policy's name,
    // from a whole document and from one policy alone.
    let doc = json!({"policies": [{"name": "bl", "elements": ["192.0.2.0/24", "10.0.0.9-10.0.0.1"]}]});
    assert_eq!(
        check(doc.clone()).unwrap_err(),
        Invalid::one(
            "policies[bl].elements[1]",
            "range \"10.0.0.9-10.0.0.1\" runs backwards"
        )
    );
    assert_eq!(
        parse_policy_value(doc["policies"][0].clone(), "policies[bl]").unwrap_err(),
        Invalid::one(
            "policies[bl].elements[1]",
            "range \"10.0.0.9-10.0.0.1\" runs backwards"
        )
    );
    refused(
        json!({"policies": [{"name": "bl", "elements": ["10.0.0.0/33"]}]}),
        "policies[bl].elements[0]",
        "\"10.0.0.0/33\": prefix length must be 0-32",
    );
    refused(
        json!({"policies": [{"name": "bl", "elements": ["nope"]}]}),
        "policies[bl].elements[0]",
        "\"nope\" is not an IP address",
    );
    // Read back in canonical form: prefixes without host bits.
    let c =
        check(json!({"policies": [{"name": "bl", "elements": ["192.0.2.77/24", "10.0.0.1 - 10.0.0.9"]}]}))
            .unwrap();
    assert_eq!(
        serde_json::to_value(&c.policies[0]).unwrap()["elements"],
        json!(["192.0.2.0/24", "10.0.0.1-10.0.0.9"])
    );
    assert_eq!(
        c.policies[0].elements[0].bounds(),
        ("192.0.2.0".parse().unwrap(), "192.0.2.255".parse().unwrap())
    );
}

#[test]
fn every_problem_of_a_document_is_reported_at_once() {
    let mut doc = web(json!({"helper": "tftp", "persist-ttl": 0}));
    doc["farms"][0]["backends"][0]["weight"] = json!(0);
    let e = check(doc).unwrap_err();
    assert_eq!(e.0.len(), 3, "{e}");
    assert!(e.to_string().contains("; "));
}

#[test]
fn a_layer2_farm_speaks_one_family_and_its_ipv6_persistence_key_fits() {
    let l2 = |extra: serde_json::Value| {
        let mut f = json!({"name": "d", "mode": "dsr", "family": "dual", "scheduler": "hash",
            "virtual-addresses": ["2001:db8::10"], "virtual-ports": "80", "iface": "eth0",
            "backends": [{"name": "b1", "ip-addr": "2001:db8::1"}]});
        for (k, v) in extra.as_object().unwrap() {
            f[k] = v.clone();
        }
        json!({ "farms": [f] })
    };
    check(l2(json!({"persistence": ["srcip", "dstip"]}))).unwrap();
    refused(
        l2(json!({"virtual-addresses": ["2001:db8::10", "192.0.2.10"]})),
        "farms[d].virtual-addresses",
        "192.0.2.10 is IPv4 but 2001:db8::10 is IPv6",
    );
    refused(
        l2(json!({"backends": [{"name": "b1", "ip-addr": "10.0.0.1"}]})),
        "farms[d].backends[b1].ip-addr",
        "a layer-2 farm speaks one family",
    );
    refused(
        l2(json!({"persistence": ["srcip", "dstip", "srcport"]})),
        "farms[d].persistence",
        "takes 52 bytes with the farm's IPv6 address",
    );
    // The same key fits an IPv4 farm (28 bytes).
    check(l2(
        json!({"virtual-addresses": ["192.0.2.10"], "backends": [{"name": "b1", "ip-addr": "10.0.0.1"}],
        "persistence": ["srcip", "dstip", "srcport"]}),
    ))
    .unwrap();
}

#[test]
fn health_checks_are_validated_with_the_farm() {
    // The farm's check, its backends' overrides and the written form.
    let doc = web(
        json!({"health-check": {"type": "tcp", "interval": 0.2, "timeout": 0.1, "fall": 2},
        "backends": [{"name": "b1", "ip-addr": "10.0.0.1", "health": "failing", "health-reason": "refused",
                      "health-check": {"enabled": false}},
                     {"name": "b2", "ip-addr": "10.0.0.2", "port": 8080}]}),
    );
    let c = check(doc).unwrap();
    let written = serde_json::to_value(&c).unwrap();
    assert_eq!(
        written["farms"][0]["health-check"],
        json!({"type": "tcp", "interval": 0.2, "timeout": 0.1, "fall": 2})
    );
    assert_eq!(
        written["farms"][0]["backends"][0],
        json!({"name": "b1", "ip-addr": "10.0.0.1", "weight": 1, "priority": 1, "state": "up",
               "health-check": {"enabled": false}, "health": "failing", "health-reason": "refused"})
    );
    // Unknown health and no reason are left out.
    assert_eq!(
        written["farms"][0]["backends"][1],
        json!({"name": "b2", "ip-addr": "10.0.0.2", "port": 8080, "weight": 1, "priority": 1, "state": "up"})
    );
    refused(
        web(json!({"health-check": {"type": "tcp", "rise": 0}})),
        "farms[web].health-check.rise",
        "not a count of checks",
    );
    refused(
        web(json!({"backends": [{"name": "b1", "ip-addr": "10.0.0.1", "health-check": {"timeout": 3}}]})),
        "farms[web].backends[b1].health-check.type",
        "required when the farm has no health-check",
    );
    refused(
        web(json!({"backends": [{"name": "b1", "ip-addr": "10.0.0.1", "health": "sick"}]})),
        "farms[0].backends[0].health",
        "unknown variant `sick`",
    );
}

#[test]
fn a_check_needs_a_port_to_probe() {
    // Every port and a backend that keeps the client's: the check's own port is required.
    let every = json!({"virtual-ports": "", "health-check": {"type": "tcp"}});
    let e = check(web(every.clone())).unwrap_err();
    assert_eq!(
        e.to_string(),
        "farms[web].backends[b1].health-check.port: required: the backend has no port and the farm serves every port"
    );
    let mut with_port = every;
    with_port["health-check"]["port"] = json!(81);
    check(web(with_port)).unwrap();
    // The farm's first virtual port serves too.
    check(web(json!({"health-check": {"type": "tcp"}}))).unwrap();
}

#[test]
fn a_quorum_past_any_farm_is_refused_and_one_above_its_backends_is_not() {
    assert_eq!(
        check(web(json!({"quorum": 65_536}))).unwrap_err(),
        Invalid::one(
            "farms[web].quorum",
            "65536 is past 65535 (the most backends a farm can have)"
        )
    );
    refused(web(json!({"quorum": -1})), "farms[0].quorum", "invalid value");
    // Backends come and go: two today, a quorum of 5 and one of 65,535 are kept as said.
    let mut doc = web(json!({"quorum": 5}));
    doc["farms"][0]["backends"][1]["sorry"] = json!(true);
    let c = check(doc).unwrap();
    assert_eq!((c.farms[0].quorum, c.farms[0].backends[1].sorry), (5, true));
    let text = serde_json::to_string(&c).unwrap();
    assert!(
        text.contains("\"quorum\":5") && text.contains("\"sorry\":true"),
        "{text}"
    );
    assert_eq!(
        check(web(json!({"quorum": 65_535}))).unwrap().farms[0].quorum,
        65_535
    );
    // Defaults are left out of the canonical text.
    let text = serde_json::to_string(&check(web(json!({}))).unwrap()).unwrap();
    assert!(!text.contains("quorum") && !text.contains("sorry"), "{text}");
}
