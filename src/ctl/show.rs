//! What nftlbctl prints: aligned tables for people, JSON (`--json`) for scripts.

use std::collections::HashMap;

use serde_json::json;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

use super::CtlError;
use super::client::{BACKEND, Client, FARM, MANAGER, POLICY, ROOT};
use crate::schema::props;

/// A D-Bus value as JSON (numbers stay numbers, paths become strings).
pub fn to_json(v: &Value<'_>) -> serde_json::Value {
    match v {
        Value::U8(x) => json!(x),
        Value::Bool(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::F64(x) => json!(x),
        Value::Str(s) => json!(s.as_str()),
        Value::Signature(s) => json!(s.to_string()),
        Value::ObjectPath(p) => json!(p.as_str()),
        Value::Value(inner) => to_json(inner),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        Value::Dict(d) => {
            let mut m = serde_json::Map::new();
            for (k, v) in d.iter() {
                let key = match k {
                    Value::Str(s) => s.to_string(),
                    other => to_json(other).to_string(),
                };
                m.insert(key, to_json(v));
            }
            serde_json::Value::Object(m)
        }
        Value::Structure(s) => serde_json::Value::Array(s.fields().iter().map(to_json).collect()),
        #[allow(unreachable_patterns)]
        _ => serde_json::Value::Null,
    }
}

/// A property as text: lists joined with commas.
fn text(v: Option<&OwnedValue>) -> String {
    match v.map(|v| to_json(v)) {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn micros(v: Option<&OwnedValue>) -> u64 {
    v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0)
}

pub(super) fn now_us() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// How long ago a backend was last checked ("2.5s ago" as "2.5s"); "-": never.
fn checked_ago(at_us: u64, now_us: u64) -> String {
    if at_us == 0 {
        return "-".into();
    }
    format!("{:.1}s", now_us.saturating_sub(at_us) as f64 / 1e6)
}

/// How long a check took: "0.35ms"; "-": never checked.
fn took(at_us: u64, us: u64) -> String {
    if at_us == 0 {
        return "-".into();
    }
    format!("{:.2}ms", us as f64 / 1e3)
}

/// Rows under a header, columns padded to their widest cell.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = width[i]))
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out += &line(r.iter().map(String::as_str).collect());
    }
    out
}

/// JSON object keys: the canonical kebab-case names where the property is a key.
fn kebab(table: &[props::Prop], name: &str) -> String {
    table.iter().find(|p| p.name == name).map_or_else(
        || {
            let mut s = String::new();
            for (i, c) in name.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    s.push('-');
                }
                s.push(c.to_ascii_lowercase());
            }
            s
        },
        |p| p.key.to_string(),
    )
}

fn as_json(table: &[props::Prop], all: &HashMap<String, OwnedValue>) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (k, v) in all {
        m.insert(kebab(table, k), to_json(v));
    }
    serde_json::Value::Object(m)
}

pub async fn status(c: &Client, json_out: bool) -> Result<(), CtlError> {
    let all = c.all(ROOT, MANAGER).await?;
    if json_out {
        println!("{}", as_json(&[], &all));
        return Ok(());
    }
    let count = |k: &str| match all.get(k).map(|v| to_json(v)) {
        Some(serde_json::Value::Array(a)) => a.len(),
        _ => 0,
    };
    println!("version:          {}", text(all.get("Version")));
    println!("generation:       {}", text(all.get("Generation")));
    println!("farms:            {}", count("Farms"));
    println!("policies:         {}", count("Policies"));
    println!("kernel features:  {}", text(all.get("KernelFeatures")));
    Ok(())
}

pub async fn list(c: &Client, json_out: bool) -> Result<(), CtlError> {
    let objects = c.objects().await?;
    // path → interface → properties, looked up by name (thousands of objects).
    let by_path: HashMap<&str, HashMap<&str, &HashMap<String, OwnedValue>>> = objects
        .iter()
        .map(|(p, ifaces)| {
            let ifaces = ifaces.iter().map(|(i, props)| (i.as_str(), props)).collect();
            (p.as_str(), ifaces)
        })
        .collect();
    let prop = |path: &str, iface: &str, name: &str| {
        by_path
            .get(path)
            .and_then(|ifaces| ifaces.get(iface))
            .and_then(|props| props.get(name))
    };
    let farms: Vec<OwnedObjectPath> = c.property(ROOT, MANAGER, "Farms").await?;
    let mut rows = Vec::new();
    let mut out = Vec::new();
    for f in &farms {
        let f = f.as_str();
        let backends: Vec<String> = match prop(f, FARM, "Backends").map(|v| to_json(v)) {
            Some(serde_json::Value::Array(a)) => {
                a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()
            }
            _ => Vec::new(),
        };
        let active = backends
            .iter()
            .filter(|b| prop(b, BACKEND, "Active").map(|v| to_json(v)) == Some(json!(true)))
            .count();
        let name = text(prop(f, FARM, "Name"));
        let ports = text(prop(f, FARM, "VirtualPorts"));
        let service = format!(
            "{} {}:{}",
            text(prop(f, FARM, "Protocol")),
            text(prop(f, FARM, "VirtualAddresses")),
            if ports.is_empty() { "*".into() } else { ports }
        );
        out.push(json!({"name": name, "state": text(prop(f, FARM, "State")),
            "mode": text(prop(f, FARM, "Mode")), "scheduler": text(prop(f, FARM, "Scheduler")),
            "service": service, "backends": backends.len(), "active": active}));
        rows.push(vec![
            name,
            text(prop(f, FARM, "State")),
            text(prop(f, FARM, "Mode")),
            text(prop(f, FARM, "Scheduler")),
            service,
            format!("{active}/{}", backends.len()),
        ]);
    }
    if json_out {
        println!("{}", serde_json::Value::Array(out));
    } else {
        print!(
            "{}",
            table(
                &["FARM", "STATE", "MODE", "SCHEDULER", "SERVICE", "ACTIVE/BACKENDS"],
                &rows
            )
        );
    }
    Ok(())
}

pub async fn farm(c: &Client, name: &str, json_out: bool) -> Result<(), CtlError> {
    let path = c.farm_path(name).await?;
    let all = c.all(path.as_str(), FARM).await?;
    // The backends' properties in one call, and their counters in one more (a farm may have
    // thousands of backends: not a call each).
    let backends: Vec<OwnedObjectPath> = c.property(path.as_str(), FARM, "Backends").await?;
    let objects = c.objects().await?;
    let counters: Vec<(String, u64, u64, u64)> =
        c.read(path.as_str(), FARM, "GetBackendCounters", &()).await?;
    let counted: HashMap<&str, (u64, u64, u64)> = counters
        .iter()
        .map(|(n, p, b, k)| (n.as_str(), (*p, *b, *k)))
        .collect();
    let connections: Vec<(String, u64)> = c.read(path.as_str(), FARM, "GetBackendConnections", &()).await?;
    let established: HashMap<&str, u64> = connections.iter().map(|(n, k)| (n.as_str(), *k)).collect();
    let by_path: HashMap<&str, &HashMap<String, OwnedValue>> = objects
        .iter()
        .filter_map(|(p, ifaces)| {
            let props = ifaces.iter().find(|(i, _)| i.as_str() == BACKEND)?.1;
            Some((p.as_str(), props))
        })
        .collect();
    let mut bs = Vec::new();
    for b in &backends {
        let mut props = by_path.get(b.as_str()).map(|p| (*p).clone()).unwrap_or_default();
        let name = text(props.get("Name"));
        let (packets, bytes, new) = counted.get(name.as_str()).copied().unwrap_or((0, 0, 0));
        props.insert("Packets".into(), OwnedValue::from(packets));
        props.insert("Bytes".into(), OwnedValue::from(bytes));
        props.insert("NewConnections".into(), OwnedValue::from(new));
        let conns = established.get(name.as_str()).copied().unwrap_or(0);
        props.insert("Connections".into(), OwnedValue::from(conns));
        bs.push(props);
    }
    if json_out {
        let mut farm = as_json(props::FARM, &all);
        farm["origin"] = all.get("Origin").map(|v| to_json(v)).unwrap_or_default();
        farm["backends"] = serde_json::Value::Array(
            bs.iter()
                .map(|b| {
                    let mut j = as_json(props::BACKEND, b);
                    // The runtime weight beside the configured one (what the checks made of it).
                    j["effective-weight"] = b.get("EffectiveWeight").map(|v| to_json(v)).unwrap_or_default();
                    j
                })
                .collect(),
        );
        farm["timed"] = super::timed::as_json(&super::timed::fetch(c).await?, Some(name));
        println!("{farm}");
        return Ok(());
    }
    // The keys the farm sets (its canonical JSON leaves defaults out), and the essentials.
    let export: String = c.read(ROOT, MANAGER, "ExportConfig", &()).await?;
    let doc: serde_json::Value = serde_json::from_str(&export).unwrap_or_default();
    let set = doc["farms"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["name"] == name))
        .cloned()
        .unwrap_or_default();
    let essential = [
        "virtual-addresses",
        "virtual-ports",
        "protocol",
        "mode",
        "scheduler",
        "state",
    ];
    let mut keys: Vec<&props::Prop> = props::FARM
        .iter()
        .filter(|p| essential.contains(&p.key) || set.get(p.key).is_some())
        .collect();
    keys.sort_by_key(|p| p.key);
    println!("farm {name} ({})", path.as_str());
    for p in keys {
        println!("  {:<18} {}", p.key, text(all.get(p.name)));
    }
    println!(
        "  {:<18} {}",
        "effective-priority",
        text(all.get("EffectivePriority"))
    );
    println!("  {:<18} {}", "origin", text(all.get("Origin")));
    println!("  {:<18} {}", "health-ready", text(all.get("HealthReady")));
    println!("  {:<18} {}", "quorum-met", text(all.get("QuorumMet")));
    println!(
        "  {:<18} {} packets, {} bytes, {} new connections",
        "traffic",
        text(all.get("Packets")),
        text(all.get("Bytes")),
        text(all.get("NewConnections"))
    );
    let rows: Vec<Vec<String>> = bs
        .iter()
        .map(|b| {
            let port = text(b.get("Port"));
            vec![
                text(b.get("Name")),
                text(b.get("IpAddr")),
                if port == "0" { "-".into() } else { port },
                weight(&text(b.get("Weight")), &text(b.get("EffectiveWeight"))),
                // A sorry backend's priority is no tier: what it is, instead.
                if text(b.get("Sorry")) == "true" {
                    "sorry".into()
                } else {
                    text(b.get("Priority"))
                },
                text(b.get("State")),
                if text(b.get("Active")) == "true" {
                    "yes"
                } else {
                    "no"
                }
                .into(),
                text(b.get("Packets")),
                text(b.get("Bytes")),
                text(b.get("NewConnections")),
                text(b.get("Connections")),
                checked_ago(micros(b.get("LastCheck")), now_us()),
                took(micros(b.get("LastCheck")), micros(b.get("LastCheckDuration"))),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "BACKEND", "ADDRESS", "PORT", "WEIGHT", "PRIORITY", "STATE", "ACTIVE", "PACKETS", "BYTES",
                "NEW", "CONNS", "CHECKED", "TOOK"
            ],
            &rows
        )
    );
    // What will change back by itself, and when.
    let timed = super::timed::rows(&super::timed::fetch(c).await?, Some(name), now_us());
    if !timed.is_empty() {
        println!("timed changes");
        print!("{}", table(&["BACKEND", "KEY", "RESTORES", "IN"], &timed));
    }
    Ok(())
}

pub async fn sessions(c: &Client, name: &str, json_out: bool) -> Result<(), CtlError> {
    let path = c.farm_path(name).await?;
    let list: Vec<HashMap<String, OwnedValue>> = c.read(path.as_str(), FARM, "ListSessions", &()).await?;
    if json_out {
        let out: Vec<serde_json::Value> = list.iter().map(|s| as_json(&[], s)).collect();
        println!("{}", serde_json::Value::Array(out));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let expires = if text(s.get("Static")) == "true" {
                "static".to_string()
            } else {
                let ms: u64 = text(s.get("ExpiresMs")).parse().unwrap_or(0);
                format!("{}s", ms.div_ceil(1000))
            };
            vec![text(s.get("Client")), text(s.get("Backend")), expires]
        })
        .collect();
    print!("{}", table(&["CLIENT", "BACKEND", "EXPIRES"], &rows));
    Ok(())
}

pub async fn permissions(c: &Client, json_out: bool) -> Result<(), CtlError> {
    let p: HashMap<String, String> = c.read(ROOT, MANAGER, "GetPermissions", &()).await?;
    let mut rows: Vec<Vec<String>> = p.into_iter().map(|(a, v)| vec![a, v]).collect();
    rows.sort();
    if json_out {
        let m: serde_json::Map<String, serde_json::Value> =
            rows.iter().map(|r| (r[0].clone(), json!(r[1]))).collect();
        println!("{}", serde_json::Value::Object(m));
    } else {
        print!("{}", table(&["ACTION", "ALLOWED"], &rows));
    }
    Ok(())
}

pub async fn policies(c: &Client, json_out: bool) -> Result<(), CtlError> {
    let paths: Vec<OwnedObjectPath> = c.property(ROOT, MANAGER, "Policies").await?;
    let mut all = Vec::new();
    for p in &paths {
        all.push(c.all(p.as_str(), POLICY).await?);
    }
    if json_out {
        let out: Vec<serde_json::Value> = all.iter().map(|p| as_json(props::POLICY, p)).collect();
        println!("{}", serde_json::Value::Array(out));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|p| {
            let n = match p.get("Elements").map(|v| to_json(v)) {
                Some(serde_json::Value::Array(a)) => a.len(),
                _ => 0,
            };
            vec![
                text(p.get("Name")),
                text(p.get("Type")),
                text(p.get("Family")),
                n.to_string(),
                text(p.get("Timeout")),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["POLICY", "TYPE", "FAMILY", "ELEMENTS", "TIMEOUT"], &rows)
    );
    Ok(())
}

pub async fn policy(c: &Client, name: &str, json_out: bool) -> Result<(), CtlError> {
    let path = c.policy_path(name).await?;
    let all = c.all(path.as_str(), POLICY).await?;
    let counters: Vec<(String, u64, u64)> = c.read(path.as_str(), POLICY, "GetCounters", &()).await?;
    if json_out {
        let mut p = as_json(props::POLICY, &all);
        p["counters"] = counters
            .iter()
            .map(|(e, packets, bytes)| json!({"element": e, "packets": packets, "bytes": bytes}))
            .collect();
        println!("{p}");
        return Ok(());
    }
    println!(
        "policy {name}: {} {}, timeout {}",
        text(all.get("Family")),
        text(all.get("Type")),
        text(all.get("Timeout"))
    );
    let rows: Vec<Vec<String>> = counters
        .iter()
        .map(|(e, p, b)| vec![e.clone(), p.to_string(), b.to_string()])
        .collect();
    print!("{}", table(&["ELEMENT", "PACKETS", "BYTES"], &rows));
    Ok(())
}

/// The configured weight, and the effective one when the checks (an agent, a slow start) make it
/// another: `4 (now 2)`.
fn weight(configured: &str, effective: &str) -> String {
    if effective.is_empty() || effective == configured {
        configured.to_string()
    } else {
        format!("{configured} (now {effective})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_checks_as_text() {
        assert_eq!(checked_ago(0, 5_000_000), "-");
        assert_eq!(checked_ago(1_000_000, 3_500_000), "2.5s");
        assert_eq!(checked_ago(4_000_000, 3_500_000), "0.0s");
        assert_eq!(took(0, 0), "-");
        assert_eq!(took(1, 350), "0.35ms");
        assert_eq!(took(1, 0), "0.00ms");
    }
}
