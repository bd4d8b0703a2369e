//! `GetFarm`'s reply, written as it is serialized: the farm and its status as one `Value` took
//! several times the farm's own size (a farm of 60,000 backends: some 300 MiB at the peak). The
//! bytes are those the `Value` gave: every object's keys in sorted order.

use std::collections::HashMap;

use serde::Serialize;
use serde::ser::{Error as _, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

use crate::engine::Traffic;
use crate::health::LastCheck;
use crate::model::{Backend, Farm, List, effective_priority, effective_weight, is_active, quorum_met};

/// The farm without its backends, as its canonical JSON, and the backends, each made JSON only
/// as it is written.
pub struct FarmReply {
    shell: serde_json::Map<String, Value>,
    backends: List<Backend>,
    status: Status,
}

struct Status {
    /// The farm file that declares it, or `runtime`.
    origin: String,
    effective_priority: u32,
    health_ready: bool,
    quorum_met: bool,
    packets: u64,
    bytes: u64,
    new_connections: u64,
    backends: Vec<BackendStatus>,
}

struct BackendStatus {
    name: String,
    active: bool,
    /// The weight the scheduler uses (the configured one scaled by the checks' shares).
    effective_weight: u32,
    packets: u64,
    bytes: u64,
    /// Connections given to it since it was created.
    new_connections: u64,
    /// The checker's last run (zeros: never checked).
    last_check: LastCheck,
    /// Established connections in conntrack now.
    connections: u64,
}

/// The key of the backends in a farm's JSON.
const BACKENDS: &str = "backends";

impl FarmReply {
    /// `farm` with what the kernel counted for the farm and per backend.
    pub fn new(mut farm: Farm, total: Traffic, each: Vec<(String, Traffic)>) -> Self {
        let prio = effective_priority(&farm);
        let active: HashMap<&str, (bool, u32)> = farm
            .backends
            .iter()
            .map(|b| (b.name.as_str(), (is_active(&farm, b, prio), effective_weight(b))))
            .collect();
        let backends = each
            .into_iter()
            .map(|(name, t)| {
                let (active, effective_weight) = active.get(name.as_str()).copied().unwrap_or((false, 0));
                BackendStatus {
                    active,
                    effective_weight,
                    name,
                    packets: t.packets,
                    bytes: t.bytes,
                    new_connections: t.new_connections,
                    last_check: LastCheck::default(),
                    connections: 0,
                }
            })
            .collect();
        drop(active);
        // Both read the backends, which leave the farm next.
        let health_ready = farm.health_ready();
        let quorum_met = quorum_met(&farm);
        let list = std::mem::take(&mut farm.backends);
        let mut shell = match serde_json::to_value(&farm) {
            Ok(Value::Object(m)) => m,
            // A model value always has an object as its JSON.
            _ => serde_json::Map::new(),
        };
        // Where the backends go, should an empty list ever be left out of a farm's JSON.
        if !list.is_empty() {
            shell.entry(BACKENDS).or_insert(Value::Array(Vec::new()));
        }
        FarmReply {
            shell,
            backends: list,
            status: Status {
                effective_priority: prio,
                origin: crate::farms_dir::RUNTIME.to_string(),
                health_ready,
                quorum_met,
                packets: total.packets,
                bytes: total.bytes,
                new_connections: total.new_connections,
                backends,
            },
        }
    }
}

impl FarmReply {
    /// Each backend's last health check, from the checker's runtime map.
    pub fn with_checks(mut self, checks: &HashMap<String, LastCheck>) -> Self {
        for b in &mut self.status.backends {
            if let Some(last) = checks.get(&b.name) {
                b.last_check = *last;
            }
        }
        self
    }

    /// Where the farm comes from: its file's path, or `runtime`.
    pub fn with_origin(mut self, origin: String) -> Self {
        self.status.origin = origin;
        self
    }

    /// Each backend's established connections.
    pub fn with_connections(mut self, connections: &HashMap<String, u64>) -> Self {
        for b in &mut self.status.backends {
            b.connections = connections.get(&b.name).copied().unwrap_or(0);
        }
        self
    }
}

impl Serialize for FarmReply {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("farm", &Shell(self))?;
        m.serialize_entry("status", &self.status)?;
        m.end()
    }
}

/// The farm's object, its backends put back in their key's place.
struct Shell<'a>(&'a FarmReply);

impl Serialize for Shell<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut m = s.serialize_map(Some(r.shell.len()))?;
        for (k, v) in &r.shell {
            if k == BACKENDS {
                m.serialize_entry(k, &Backends(&r.backends))?;
            } else {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

struct Backends<'a>(&'a List<Backend>);

impl Serialize for Backends<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for b in self.0.iter() {
            // Through a Value, one backend at a time, for its keys in sorted order.
            let v = serde_json::to_value(b).map_err(S::Error::custom)?;
            seq.serialize_element(&v)?;
        }
        seq.end()
    }
}

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(7))?;
        m.serialize_entry("backends", &self.backends)?;
        m.serialize_entry("bytes", &self.bytes)?;
        m.serialize_entry("effectivePriority", &self.effective_priority)?;
        m.serialize_entry("healthReady", &self.health_ready)?;
        m.serialize_entry("newConnections", &self.new_connections)?;
        m.serialize_entry("origin", &self.origin)?;
        m.serialize_entry("packets", &self.packets)?;
        m.serialize_entry("quorumMet", &self.quorum_met)?;
        m.end()
    }
}

impl Serialize for BackendStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(8))?;
        m.serialize_entry("active", &self.active)?;
        m.serialize_entry("bytes", &self.bytes)?;
        m.serialize_entry("connections", &self.connections)?;
        m.serialize_entry("effectiveWeight", &self.effective_weight)?;
        m.serialize_entry("lastCheck", &self.last_check.at_us)?;
        m.serialize_entry("lastCheckDuration", &self.last_check.duration_us)?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("newConnections", &self.new_connections)?;
        m.serialize_entry("packets", &self.packets)?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_farm_value;
    use serde_json::json;

    #[test]
    fn writes_the_bytes_a_value_of_the_whole_reply_gave() {
        let farm = parse_farm_value(
            &json!({"name": "web", "virtual-addresses": ["192.0.2.10"], "virtual-ports": "80,443",
                "scheduler": "weight", "persistence": ["srcip"], "backends": [
                {"name": "a", "ip-addr": "10.0.0.1", "weight": 3},
                {"name": "b", "ip-addr": "10.0.0.2", "port": 8080, "state": "down"},
                {"name": "c", "ip-addr": "10.0.0.3", "priority": 2}]}),
            "farm",
        )
        .unwrap();
        let each = vec![
            ("a".to_string(), Traffic::new(5, 500, 3)),
            ("b".to_string(), Traffic::new(0, 0, 0)),
            ("c".to_string(), Traffic::new(u64::MAX, 7, u64::MAX)),
        ];
        let prio = effective_priority(&farm);
        let status: Vec<Value> = each
            .iter()
            .map(|(n, t)| {
                let x = farm.backends.iter().find(|x| &x.name == n);
                let a = x.is_some_and(|x| is_active(&farm, x, prio));
                let w = x.map_or(0, effective_weight);
                json!({ "name": n, "active": a, "effectiveWeight": w, "packets": t.packets, "bytes": t.bytes,
                    "newConnections": t.new_connections,
                    "lastCheck": 0, "lastCheckDuration": 0, "connections": 0 })
            })
            .collect();
        let want = json!({ "farm": serde_json::to_value(&farm).unwrap(), "status": {
            "effectivePriority": prio, "healthReady": true, "origin": "runtime", "packets": 9, "bytes": 900, "quorumMet": true,
            "newConnections": 4, "backends": status } })
        .to_string();
        let got = serde_json::to_string(&FarmReply::new(farm, Traffic::new(9, 900, 4), each)).unwrap();
        assert_eq!(got, want);
        assert!(
            got.contains(
                r#""active":true,"bytes":500,"connections":0,"effectiveWeight":3,"lastCheck":0,"lastCheckDuration":0,"name":"a","newConnections":3,"packets":5}"#
            ),
            "{got}"
        );
        assert!(
            got.contains(
                r#""active":false,"bytes":0,"connections":0,"effectiveWeight":1,"lastCheck":0,"lastCheckDuration":0,"name":"b""#
            ),
            "{got}"
        );
    }

    #[test]
    fn backends_carry_their_last_check() {
        let farm = parse_farm_value(
            &json!({"name": "web", "backends": [
                {"name": "a", "ip-addr": "10.0.0.1"}, {"name": "b", "ip-addr": "10.0.0.2"}]}),
            "farm",
        )
        .unwrap();
        let each = vec![
            ("a".to_string(), Traffic::new(1, 2, 0)),
            ("b".to_string(), Traffic::new(3, 4, 1)),
        ];
        let last = LastCheck {
            at_us: 1_700_000_000_000_001,
            duration_us: 250,
            ok: true,
        };
        let checks = HashMap::from([("b".to_string(), last)]);
        let got =
            serde_json::to_value(FarmReply::new(farm, Traffic::new(4, 6, 1), each).with_checks(&checks))
                .unwrap();
        let backends = &got["status"]["backends"];
        assert_eq!(backends[0]["lastCheck"], json!(0));
        assert_eq!(backends[0]["lastCheckDuration"], json!(0));
        assert_eq!(backends[1]["lastCheck"], json!(1_700_000_000_000_001u64));
        assert_eq!(backends[1]["lastCheckDuration"], json!(250));
    }

    #[test]
    fn a_farm_without_backends_has_an_empty_list() {
        let farm = parse_farm_value(&json!({"name": "web"}), "farm").unwrap();
        let want = json!({ "farm": serde_json::to_value(&farm).unwrap(), "status": {
            "effectivePriority": effective_priority(&farm), "healthReady": true, "origin": "runtime", "packets": 0, "bytes": 0, "quorumMet": true,
            "newConnections": 0, "backends": [] } })
        .to_string();
        let got = serde_json::to_string(&FarmReply::new(farm, Traffic::default(), Vec::new())).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn below_the_quorum_the_status_says_so_and_the_sorry_backend_is_the_active_one() {
        let farm = parse_farm_value(
            &json!({"name": "web", "quorum": 2, "health-check": {"type": "tcp"}, "backends": [
                {"name": "a", "ip-addr": "10.0.0.1", "health": "failing"},
                {"name": "b", "ip-addr": "10.0.0.2", "health": "healthy"},
                {"name": "s", "ip-addr": "10.0.0.9", "sorry": true, "health-check": {"enabled": false}}]}),
            "farm",
        )
        .unwrap();
        let each = ["a", "b", "s"]
            .map(|n| (n.to_string(), Traffic::new(0, 0, 0)))
            .to_vec();
        let got = serde_json::to_value(FarmReply::new(farm, Traffic::new(0, 0, 0), each)).unwrap();
        let status = &got["status"];
        assert_eq!(
            (
                &status["quorumMet"],
                &status["effectivePriority"],
                &status["healthReady"]
            ),
            (&json!(false), &json!(0), &json!(true))
        );
        let active: Vec<&Value> = status["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| &b["active"])
            .collect();
        assert_eq!(active, [&json!(false), &json!(false), &json!(true)]);
        assert_eq!(got["farm"]["quorum"], json!(2));
        assert_eq!(got["farm"]["backends"][2]["sorry"], json!(true));
    }

    #[test]
    fn health_ready_is_read_before_the_backends_leave_the_farm() {
        let farm = parse_farm_value(
            &json!({"name": "web", "health-check": {"type": "tcp"}, "backends": [
                {"name": "a", "ip-addr": "10.0.0.1"}]}),
            "farm",
        )
        .unwrap();
        let got = serde_json::to_value(FarmReply::new(farm, Traffic::new(0, 0, 0), Vec::new())).unwrap();
        assert_eq!(got["status"]["healthReady"], json!(false));
    }
}
