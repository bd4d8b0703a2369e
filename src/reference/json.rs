//! docs/json.md: the canonical JSON, every key of farms, backends and policies with its D-Bus
//! property, types and the property's doc string.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::markdown::{block, code, table};
use super::sources::{Interface, interfaces};
use super::{GENERATED, short_doc};
use crate::model::{Backend, Farm, Policy, parse_config};
use crate::schema::props::{self, Prop};

pub fn render() -> String {
    let ifaces = interfaces();
    let find = |short: &str| ifaces.iter().find(|i| i.short() == short);
    let mut out = format!("# Canonical JSON\n\n{GENERATED}\n");
    out.push_str(INTRO);
    let farm_extra = [
        Extra::prop("name", "Name"),
        Extra::prop("backends", "Backends").typed("array of backend objects"),
        Extra {
            key: "sessions",
            json: "array of `{\"client\": string, \"backend\": string}`",
            property: None,
            doc: "Static sessions: a client pinned to a backend by name. The client is the farm's \
                  persistence key, as `192.0.2.7 . 40000` when `persistence` is \
                  `[\"srcip\", \"srcport\"]`: IP addresses, ports and MAC addresses joined with \
                  ` . `, in the order of `persistence`. On D-Bus: `Farm.ListSessions()`, `Farm.AddSession()`, \
                  `Farm.DeleteSession()`.",
        },
    ];
    let tables: [(&str, &str, &[Prop], &[Extra]); 3] = [
        ("Farm", "A farm", props::FARM, &farm_extra),
        (
            "Backend",
            "A backend (in its farm's `backends`)",
            props::BACKEND,
            &[
                Extra::prop("name", "Name"),
                Extra::prop("health", "Health"),
                Extra::prop("health-reason", "HealthReason"),
                Extra::prop("health-drain", "HealthDrain").typed("boolean"),
                Extra::prop("health-weight", "HealthWeight").typed("number"),
                Extra::prop("health-ramp", "HealthRamp").typed("number"),
            ],
        ),
        (
            "Policy",
            "A policy",
            props::POLICY,
            &[Extra::prop("name", "Name")],
        ),
    ];
    for (short, title, keys, extra) in tables {
        let rows = rows(short, find(short), keys, extra);
        out.push_str(&format!(
            "## {title}\n\n{}\n",
            table(
                &["key", "JSON", "D-Bus property", "D-Bus type", "description"],
                &rows
            )
        ));
    }
    out.push_str(&format!("## Example\n\n{}", block("json", &example())));
    out
}

const INTRO: &str = "One document holds the whole configuration: `{\"farms\": [...], \"policies\": [...]}`. \
It is the state file, the argument of `Manager.ImportConfig` and the answer of `Manager.ExportConfig`, \
what varlink sends and receives (farms, backends and policies as objects of this form), and what \
`nftlbctl --json` prints. Keys are nftlb's names in kebab-case, with real JSON types (numbers are \
numbers, lists are arrays). A missing key takes its default; an unknown key or value is an error, \
never ignored or defaulted. Each key is also a D-Bus property, its name the CamelCase form of the \
key, and the same CamelCase names are the keys of the `a{sv}` settings of D-Bus methods.\n\n\
Required keys are marked *(required)*. The descriptions are the D-Bus properties' own; where one \
says that an empty string or 0 removes a key, in JSON the key is left out (or, in the `changes` of a \
varlink update, set to `null`). Object names (`name`) match `[A-Za-z0-9][A-Za-z0-9_.-]{0,62}`.\n\n";

/// A key that is no entry of the key tables: names, lists of objects.
struct Extra {
    key: &'static str,
    json: &'static str,
    property: Option<&'static str>,
    doc: &'static str,
}

impl Extra {
    const fn prop(key: &'static str, property: &'static str) -> Extra {
        Extra {
            key,
            json: "string",
            property: Some(property),
            doc: "",
        }
    }

    const fn typed(self, json: &'static str) -> Extra {
        Extra { json, ..self }
    }
}

fn rows(short: &str, iface: Option<&Interface>, keys: &[Prop], extra: &[Extra]) -> Vec<Vec<String>> {
    let property = |name: &str| iface.and_then(|i| i.properties.iter().find(|p| p.name == name));
    let key_cell = |key: &str| {
        if required(short, key) {
            format!("{} *(required)*", code(key))
        } else {
            code(key)
        }
    };
    let mut out = Vec::new();
    for e in extra.iter().filter(|e| e.key == "name") {
        out.push(extra_row(
            e,
            property(e.property.unwrap_or_default()),
            &key_cell,
            short,
        ));
    }
    for k in keys {
        let p = property(k.name);
        out.push(vec![
            key_cell(k.key),
            key_json_type(k).into(),
            code(k.name),
            code(k.sig),
            p.map(|p| short_doc(short, p)).unwrap_or_default(),
        ]);
    }
    for e in extra.iter().filter(|e| e.key != "name") {
        out.push(extra_row(e, e.property.and_then(property), &key_cell, short));
    }
    out
}

fn extra_row(
    e: &Extra,
    p: Option<&super::sources::Property>,
    key_cell: &dyn Fn(&str) -> String,
    short: &str,
) -> Vec<String> {
    let doc = match p {
        Some(p) if e.doc.is_empty() => format!("{} Read-only on D-Bus.", short_doc(short, p)),
        _ => e.doc.to_string(),
    };
    vec![
        key_cell(e.key),
        e.json.into(),
        p.map(|p| code(&p.name)).unwrap_or_else(|| "none".into()),
        p.map(|p| code(&p.sig)).unwrap_or_else(|| "none".into()),
        doc,
    ]
}

/// The JSON type of a key of the tables.
pub fn key_json_type(k: &Prop) -> &'static str {
    if props::is_json_object(k.key) {
        "object (docs/health.md)"
    } else {
        json_type(k.sig)
    }
}

/// The JSON type of a key whose D-Bus type is `sig`.
pub fn json_type(sig: &str) -> &'static str {
    match sig {
        "s" => "string",
        "as" => "array of strings",
        "b" => "boolean",
        "y" | "n" | "q" | "i" | "u" | "x" | "t" => "number",
        _ => "see description",
    }
}

/// The smallest complete object of each kind: a key is required when leaving it out of this
/// object makes it invalid.
pub fn minimal(short: &str) -> Map<String, Value> {
    let v = match short {
        "Backend" => json!({"name": "a", "ip-addr": "192.0.2.1"}),
        _ => json!({"name": "a"}),
    };
    v.as_object().cloned().unwrap_or_default()
}

fn parses<T: DeserializeOwned>(m: Map<String, Value>) -> bool {
    serde_json::from_value::<T>(Value::Object(m)).is_ok()
}

pub fn parses_as(short: &str, m: Map<String, Value>) -> bool {
    match short {
        "Farm" => parses::<Farm>(m),
        "Backend" => parses::<Backend>(m),
        _ => parses::<Policy>(m),
    }
}

fn required(short: &str, key: &str) -> bool {
    let mut m = minimal(short);
    m.remove(key).is_some() && !parses_as(short, m)
}

pub const EXAMPLE: &str = r#"{"farms": [{"name": "web", "family": "dual",
  "virtual-addresses": ["192.0.2.10", "2001:db8::10"], "virtual-ports": "80,443,8000-8010",
  "protocol": "tcp", "mode": "snat", "scheduler": "weight", "persistence": ["srcip"],
  "persist-ttl": 300, "policies": ["blocked"],
  "backends": [{"name": "a", "ip-addr": "10.0.0.1", "port": 8080, "weight": 3},
               {"name": "b", "ip-addr": "2001:db8:1::1", "priority": 2, "state": "drain"}]}],
  "policies": [{"name": "blocked", "type": "blacklist", "elements": ["198.51.100.0/24"]}]}"#;

/// The example, validated and printed as the daemon writes it (a failure shows in the page,
/// and a test insists there is none).
pub fn example() -> String {
    match parse_config(EXAMPLE).map(|c| serde_json::to_string_pretty(&c)) {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => format!("example does not print: {e}"),
        Err(e) => format!("example is invalid: {e}"),
    }
}
