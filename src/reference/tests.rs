use std::path::PathBuf;

use serde_json::{Value, json};

use super::json::{EXAMPLE, example, key_json_type, minimal, parses_as};
use super::sources::{actions, interfaces, varlink_errors};
use super::{errors, polkit, render};
use crate::model::validate_name;
use crate::schema::props;

fn docs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs")
}

#[test]
fn reference_in_docs_is_current() {
    let dir = docs_dir();
    let pages = render();
    if std::env::var_os("NFTLBD_WRITE_DOCS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in &pages {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }
    let regenerate = "the reference is rendered from the code; write it anew with \
                      `NFTLBD_WRITE_DOCS=1 cargo test --lib reference` and commit docs/";
    for (name, text) in &pages {
        let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        assert!(
            committed == *text,
            "docs/{name} differs from the code: {regenerate}"
        );
    }
    let mut stale: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !pages.iter().any(|(p, _)| p == n))
        .collect();
    stale.sort();
    assert!(stale.is_empty(), "docs/ holds pages nothing renders: {stale:?}");
}

#[test]
fn every_member_of_the_interface_files_is_documented() {
    let ifaces = interfaces();
    let names: Vec<&str> = ifaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "org.nftlbd1.Manager",
            "org.nftlbd1.Farm",
            "org.nftlbd1.Backend",
            "org.nftlbd1.Policy",
            "org.nftlbd1.Checkpoint"
        ]
    );
    for i in &ifaces {
        assert!(!i.doc.is_empty(), "{}", i.name);
        for m in i.methods.iter().chain(&i.signals) {
            assert!(!m.doc.is_empty(), "{}.{} has no doc string", i.name, m.name);
        }
        for p in &i.properties {
            assert!(!p.doc.is_empty(), "{}.{} has no doc string", i.name, p.name);
            assert!(!p.sig.is_empty() && !p.access.is_empty(), "{}.{}", i.name, p.name);
        }
    }
    let farm = ifaces.iter().find(|i| i.short() == "Farm").unwrap();
    let add = farm.methods.iter().find(|m| m.name == "AddBackend").unwrap();
    let args: Vec<(&str, &str, bool)> = add
        .args
        .iter()
        .map(|a| (a.name.as_str(), a.sig.as_str(), a.out))
        .collect();
    assert_eq!(
        args,
        [
            ("name", "s", false),
            ("settings", "a{sv}", false),
            ("backend", "o", true)
        ]
    );
    let backend = ifaces.iter().find(|i| i.short() == "Backend").unwrap();
    let packets = backend.properties.iter().find(|p| p.name == "Packets").unwrap();
    assert_eq!(packets.emits.as_deref(), Some("false"));
    assert_eq!(backend.signals[0].args.len(), 3);
}

#[test]
fn every_key_of_the_tables_has_its_property_and_its_json_type() {
    let ifaces = interfaces();
    // Every key set to a value of its type, as the model writes it back.
    let farm = r#"{"name": "a", "family": "ipv6", "virtual-addresses": ["2001:db8::1"],
        "virtual-ports": "80", "protocol": "udp", "mode": "dnat", "scheduler": "hash",
        "sched-param": ["srcip"], "persistence": ["srcip"], "persist-ttl": 5, "helper": "ftp",
        "log": ["input"], "log-prefix": "x", "log-rtlimit": "1/second", "mark": 7, "priority": 2,
        "state": "down", "source-addr": "2001:db8::2", "iface": "eth0", "oface": "eth1",
        "iether-addr": "02:00:00:00:00:01", "oether-addr": "02:00:00:00:00:02",
        "new-rtlimit": "5/second", "new-rtlimit-burst": 2, "rst-rtlimit": "5/second",
        "rst-rtlimit-burst": 2, "est-connlimit": 3, "tcp-strict": true, "queue": 1,
        "verdict": ["drop"], "intra-connect": true, "flow-offload": true, "limits-ttl": 9,
        "policies": ["p"], "health-check": {"type": "tcp"}, "health-start": "pessimistic", "quorum": 2,
        "backends": [{"name": "b", "ip-addr": "2001:db8::3", "port": 81, "weight": 2, "priority": 2,
            "mark": 3, "state": "drain", "source-addr": "2001:db8::4",
            "ether-addr": "02:00:00:00:00:03", "est-connlimit": 4,
            "health-check": {"port": 82}, "health": "failing", "health-reason": "x", "sorry": true,
            "health-drain": true, "health-weight": 50, "health-ramp": 9}]}"#;
    let policy = json!({"name": "p", "type": "whitelist", "family": "ipv6", "timeout": 5,
        "log-prefix": "x", "elements": ["2001:db8::5"]});
    let farm: crate::model::Farm = serde_json::from_str(farm).unwrap();
    let policy: crate::model::Policy = serde_json::from_value(policy).unwrap();
    let farm = serde_json::to_value(&farm).unwrap();
    let written = [
        ("Farm", props::FARM, farm.clone()),
        ("Backend", props::BACKEND, farm["backends"][0].clone()),
        ("Backend", props::BACKEND_HEALTH, farm["backends"][0].clone()),
        ("Policy", props::POLICY, serde_json::to_value(&policy).unwrap()),
    ];
    for (short, table, value) in written {
        let iface = ifaces.iter().find(|i| i.short() == short).unwrap();
        for k in table {
            let property = iface.properties.iter().find(|p| p.name == k.name);
            assert_eq!(
                property.map(|p| p.sig.as_str()),
                Some(k.sig),
                "{short}.{} is not a property of that type",
                k.name
            );
            let v = &value[k.key];
            let actual = match v {
                Value::String(_) => "string",
                Value::Bool(_) => "boolean",
                Value::Number(_) => "number",
                Value::Array(a) if a.iter().all(Value::is_string) => "array of strings",
                Value::Object(_) => "object (docs/health.md)",
                _ => "something else",
            };
            assert_eq!(
                actual,
                key_json_type(k),
                "{short} key {} is written as {v}",
                k.key
            );
        }
    }
}

#[test]
fn required_keys_are_those_without_a_default() {
    for short in ["Farm", "Backend", "Policy"] {
        assert!(parses_as(short, minimal(short)), "{short}");
    }
    let pages = render();
    let json = &pages.iter().find(|(n, _)| *n == "json.md").unwrap().1;
    let required: Vec<&str> = json
        .lines()
        .filter(|l| l.starts_with('|') && l.contains("*(required)*"))
        .filter_map(|l| l.split('`').nth(1))
        .collect();
    assert_eq!(required, ["name", "name", "ip-addr", "name"]);
}

#[test]
fn the_example_is_a_valid_document() {
    let text = example();
    assert!(text.starts_with('{'), "{text}");
    let reparsed: Value = serde_json::from_str(&text).unwrap();
    let given: Value = serde_json::from_str(EXAMPLE).unwrap();
    assert_eq!(
        reparsed["farms"][0]["backends"][1]["state"],
        given["farms"][0]["backends"][1]["state"]
    );
}

#[test]
fn names_follow_the_documented_pattern() {
    let longest = format!("a{}", "-".repeat(62));
    for ok in ["a", "0", "web-1", "a.b_c", longest.as_str()] {
        assert!(validate_name(ok).is_ok(), "{ok}");
    }
    let too_long = format!("{longest}x");
    for bad in ["", "-a", "_a", ".a", "a b", "a/b", "é", too_long.as_str()] {
        assert!(validate_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn every_detail_and_action_is_described() {
    let described: Vec<&str> = polkit::MEANINGS.iter().map(|(n, _)| *n).collect();
    assert_eq!(described, crate::polkit::DETAILS);
    let ids: Vec<String> = actions().into_iter().map(|a| a.id).collect();
    assert_eq!(ids, crate::polkit::ALL);
    for a in actions() {
        assert!(
            !a.description.is_empty() && a.defaults.iter().all(|d| !d.is_empty()),
            "{}",
            a.id
        );
    }
    let set_state = actions()
        .into_iter()
        .find(|a| a.id == crate::polkit::BACKEND_MANAGE)
        .unwrap();
    assert_eq!(set_state.implies, [crate::polkit::BACKEND_SET_STATE]);
}

#[test]
fn both_transports_name_the_same_errors() {
    let dbus: Vec<String> = errors::errors().iter().map(|(e, _)| errors::short(e)).collect();
    let varlink: Vec<&str> = varlink_errors().into_iter().map(|(n, _)| n).collect();
    assert_eq!(dbus, varlink);
    assert_eq!(
        dbus,
        [
            "InvalidArgument",
            "NotFound",
            "Exists",
            "NotAuthorized",
            "Kernel",
            "Unsupported",
            "LimitExceeded"
        ]
    );
}

#[test]
fn tables_keep_their_columns() {
    for (name, text) in render() {
        let mut columns = None;
        let mut in_block = false;
        for line in text.lines() {
            if line.starts_with("```") {
                in_block = !in_block;
            }
            if in_block || !line.starts_with('|') {
                columns = None;
                continue;
            }
            // Cells are split at pipes that are not escaped.
            let n = line.replace("\\|", "").matches('|').count();
            let expected = *columns.get_or_insert(n);
            assert_eq!(n, expected, "{name}: {line}");
        }
    }
}

#[test]
fn the_errors_page_gives_the_bounds_on_calls_in_flight() {
    use crate::dbus::limits::{PER_SENDER, TOTAL};
    let want = format!("{PER_SENDER} per sender, {TOTAL} in all");
    assert!(errors::render().contains(&want), "{want}");
}
