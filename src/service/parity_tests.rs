//! Both transports offer every operation of the table, and nothing beside it: the D-Bus
//! interface files (which tests/dbus_service.rs holds equal to what the daemon serves) and the
//! varlink interface file and dispatcher.

use super::operation::OPERATIONS;
use crate::schema::props;

const DBUS: &[(&str, &str)] = &[
    ("Manager", include_str!("../../dbus/org.nftlbd1.Manager.xml")),
    ("Farm", include_str!("../../dbus/org.nftlbd1.Farm.xml")),
    ("Backend", include_str!("../../dbus/org.nftlbd1.Backend.xml")),
    ("Policy", include_str!("../../dbus/org.nftlbd1.Policy.xml")),
    (
        "Checkpoint",
        include_str!("../../dbus/org.nftlbd1.Checkpoint.xml"),
    ),
];
const VARLINK: &str = include_str!("../../varlink/org.nftlbd1.varlink");

/// `(kind, name, access)` of every `<method>` and `<property>` of an interface file.
fn members(xml: &str) -> Vec<(&'static str, String, String)> {
    let attr = |line: &str, a: &str| -> String {
        let key = format!("{a}=\"");
        line.split_once(&key)
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(v, _)| v.to_string())
            .unwrap_or_default()
    };
    xml.lines()
        .map(str::trim)
        .filter_map(|l| {
            let kind = if l.starts_with("<method ") {
                "method"
            } else if l.starts_with("<property ") {
                "property"
            } else {
                return None;
            };
            Some((kind, attr(l, "name"), attr(l, "access")))
        })
        .collect()
}

fn dbus_has(iface: &str, member: &str) -> bool {
    let Some((_, xml)) = DBUS.iter().find(|(i, _)| *i == iface) else {
        return false;
    };
    let ms = members(xml);
    match member.strip_suffix('=') {
        // `*=`: every writable key of the interface's table is a writable property.
        Some("*") => {
            let table = match iface {
                "Farm" => props::FARM,
                "Backend" => props::BACKEND,
                _ => return false,
            };
            table.iter().all(|p| {
                ms.iter()
                    .any(|(k, n, a)| *k == "property" && n == p.name && a == "readwrite")
            })
        }
        Some(prop) => ms
            .iter()
            .any(|(k, n, a)| *k == "property" && n == prop && a == "readwrite"),
        None => ms.iter().any(|(_, n, _)| n == member),
    }
}

fn varlink_methods() -> Vec<&'static str> {
    VARLINK
        .lines()
        .filter_map(|l| l.strip_prefix("method "))
        .filter_map(|l| l.split_once('(').map(|(n, _)| n))
        .collect()
}

#[test]
fn every_operation_is_offered_by_both_transports() {
    let described = varlink_methods();
    for spec in OPERATIONS {
        for m in spec.dbus {
            let (iface, member) = m.split_once('.').unwrap_or(("", m));
            assert!(dbus_has(iface, member), "{}: D-Bus has no {m}", spec.name);
        }
        for m in spec.varlink_methods() {
            assert!(
                described.contains(&m),
                "{}: the varlink interface has no {m}",
                spec.name
            );
            let translated = crate::varlink::methods::translate(m, &serde_json::json!({}));
            // Without parameters a method that takes some is refused, but it is recognized.
            assert!(
                !matches!(translated, Ok(None)),
                "{}: the varlink front end does not serve {m}",
                spec.name
            );
        }
    }
}

#[test]
fn nothing_is_offered_beside_the_table() {
    for m in varlink_methods() {
        let known = m == "Monitor" || OPERATIONS.iter().any(|s| s.varlink_methods().contains(&m));
        assert!(known, "varlink method {m} is no operation");
    }
    for (iface, xml) in DBUS {
        for (kind, name, _) in members(xml) {
            if kind != "method" {
                continue;
            }
            let member = format!("{iface}.{name}");
            let known = OPERATIONS.iter().any(|s| s.dbus.contains(&member.as_str()));
            assert!(known, "D-Bus method {member} is no operation");
        }
    }
}
