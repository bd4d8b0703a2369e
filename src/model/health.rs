//! The `health-check` object (issue 11): how nftlbd probes a farm's backends, set per farm and
//! overridable per backend, and the `health` a backend gets from it. Health is separate from the
//! administrative `state`: checks set health, people set state, and a check never overrides either.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::seconds::Seconds;
use super::status_ranges::StatusRanges;

/// What a check does to find out whether a backend serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckType {
    /// A TCP connection is accepted.
    Tcp,
    /// An HTTP request is answered with an expected status (and body).
    Http,
    /// As `http`, over TLS.
    Https,
    /// A datagram is answered (with an expected pattern).
    Udp,
    /// A DNS query over UDP is answered with the expected response code.
    Dns,
    /// A command exits 0 (the Nagios plugin convention).
    Exec,
    /// The backend's agent says up, down, drain or a weight percentage (HAProxy's agent-check).
    Agent,
}

impl CheckType {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckType::Tcp => "tcp",
            CheckType::Http => "http",
            CheckType::Https => "https",
            CheckType::Udp => "udp",
            CheckType::Dns => "dns",
            CheckType::Exec => "exec",
            CheckType::Agent => "agent",
        }
    }
}

/// What a failing backend loses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// No new connections; established ones run on.
    #[default]
    StopNew,
    /// No new connections, and the established ones are deleted from conntrack.
    Cut,
}

/// The record types a `dns` check may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum QueryType {
    #[default]
    A,
    Ns,
    Cname,
    Soa,
    Ptr,
    Mx,
    Txt,
    Aaaa,
    Srv,
}

impl QueryType {
    /// The type's number on the wire (RFC 1035, 3596, 2782).
    pub fn code(self) -> u16 {
        match self {
            QueryType::A => 1,
            QueryType::Ns => 2,
            QueryType::Cname => 5,
            QueryType::Soa => 6,
            QueryType::Ptr => 12,
            QueryType::Mx => 15,
            QueryType::Txt => 16,
            QueryType::Aaaa => 28,
            QueryType::Srv => 33,
        }
    }
}

/// The DNS response codes a `dns` check may expect (RFC 1035 4.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rcode {
    #[default]
    Noerror,
    Formerr,
    Servfail,
    Nxdomain,
    Notimp,
    Refused,
}

impl Rcode {
    pub fn code(self) -> u8 {
        match self {
            Rcode::Noerror => 0,
            Rcode::Formerr => 1,
            Rcode::Servfail => 2,
            Rcode::Nxdomain => 3,
            Rcode::Notimp => 4,
            Rcode::Refused => 5,
        }
    }

    pub fn from_code(code: u8) -> Option<Rcode> {
        [
            Rcode::Noerror,
            Rcode::Formerr,
            Rcode::Servfail,
            Rcode::Nxdomain,
            Rcode::Notimp,
            Rcode::Refused,
        ]
        .into_iter()
        .find(|r| r.code() == code)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rcode::Noerror => "noerror",
            Rcode::Formerr => "formerr",
            Rcode::Servfail => "servfail",
            Rcode::Nxdomain => "nxdomain",
            Rcode::Notimp => "notimp",
            Rcode::Refused => "refused",
        }
    }
}

/// A backend's health as its checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// Not checked, or not checked yet.
    #[default]
    Unknown,
    Healthy,
    Failing,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Failing => "failing",
        }
    }

    pub fn parse(s: &str) -> Option<Health> {
        [Health::Unknown, Health::Healthy, Health::Failing]
            .into_iter()
            .find(|h| h.as_str() == s)
    }
}

/// How a farm treats a checked backend whose health is still `unknown` (farm key `health-start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthStart {
    /// Unknown counts as healthy: a new backend serves at once (keepalived's default).
    #[default]
    Optimistic,
    /// Unknown counts as failing until the first verdict: no new flows before a passing check.
    Pessimistic,
}

/// Whether a backend gets a check: its own enabled override with a type, or the farm's check
/// that it does not disable. O(1): the override is not merged.
pub fn is_checked(farm_has_check: bool, backend_check: Option<&HealthCheckOverride>) -> bool {
    match backend_check {
        None => farm_has_check,
        Some(o) => o.enabled && (farm_has_check || o.keys.contains_key("type")),
    }
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}
fn get() -> String {
    "GET".into()
}
fn is_get(v: &String) -> bool {
    v == "GET"
}
fn yes() -> bool {
    true
}
fn is_yes(v: &bool) -> bool {
    *v
}
fn interval_default() -> Seconds {
    Seconds::from_millis(2000)
}
fn is_interval_default(v: &Seconds) -> bool {
    *v == interval_default()
}
fn timeout_default() -> Seconds {
    Seconds::from_millis(1000)
}
fn is_timeout_default(v: &Seconds) -> bool {
    *v == timeout_default()
}
fn rise_default() -> u32 {
    2
}
fn is_rise_default(v: &u32) -> bool {
    *v == 2
}
fn fall_default() -> u32 {
    3
}
fn is_fall_default(v: &u32) -> bool {
    *v == 3
}

/// A farm's `health-check`. Keys that do not belong to its `type` are refused by validation, so
/// a definition says only what it means.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(rename = "type")]
    pub kind: CheckType,
    /// The port probed; none: the backend's port, else the farm's first virtual port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default = "interval_default", skip_serializing_if = "is_interval_default")]
    pub interval: Seconds,
    /// The wait while a backend is between states (some successes or failures counted, not
    /// enough to turn); none: `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_interval: Option<Seconds>,
    /// The wait while a backend is failing; none: `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_interval: Option<Seconds>,
    #[serde(default = "timeout_default", skip_serializing_if = "is_timeout_default")]
    pub timeout: Seconds,
    /// Consecutive successes that make a failing backend healthy.
    #[serde(default = "rise_default", skip_serializing_if = "is_rise_default")]
    pub rise: u32,
    /// Consecutive failures that make a healthy backend failing.
    #[serde(default = "fall_default", skip_serializing_if = "is_fall_default")]
    pub fall: u32,
    /// Up to this much is added at random to every wait, the first one included; none: a tenth
    /// of `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Seconds>,
    /// After recovery the backend's weight ramps up over this long; 0: at once.
    #[serde(default, skip_serializing_if = "is_default")]
    pub slow_start: Seconds,
    #[serde(default, skip_serializing_if = "is_default")]
    pub on_failure: OnFailure,
    /// Probes leave from this address (as the farm's traffic does with its `source-addr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_addr: Option<IpAddr>,
    /// Probes leave through this interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    /// Probes carry this packet mark, so they follow the policy routes the traffic does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<u32>,

    // http and https
    #[serde(default = "get", skip_serializing_if = "is_get")]
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The Host header (and the TLS server name); none: the backend's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub expect_status: StatusRanges,
    /// A pattern the body must match (see `Pattern` for the syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_body: Option<String>,
    /// The body must not match `expect-body` (an error page's words, say).
    #[serde(default, skip_serializing_if = "is_default")]
    pub expect_body_absent: bool,
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub tls_verify: bool,

    // udp
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// A pattern the reply must match; none: any reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,

    // dns
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_name: Option<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub query_type: QueryType,
    #[serde(default, skip_serializing_if = "is_default")]
    pub expect_rcode: Rcode,

    // exec
    /// The program (an absolute path) and its arguments; an argument `HOST` or `PORT` is replaced
    /// by the backend's address or the probed port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// The user the command runs as when nftlbd runs as root; none: `nobody`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,

    // agent
    /// The port the agent answers on; none: the probed port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_port: Option<u16>,
}

impl HealthCheck {
    /// A check of this type with every default, for building configurations in code.
    pub fn new(kind: CheckType) -> HealthCheck {
        serde_json::from_value(serde_json::json!({ "type": kind.as_str() }))
            .expect("a type alone is a complete health check")
    }

    /// The TLS server name of an https check: `host` without a port ("web.example:8443" →
    /// "web.example", "[2001:db8::1]:443" → "2001:db8::1"); none without `host`.
    pub fn server_name(&self) -> Option<&str> {
        let host = self.host.as_deref()?;
        if let Some(rest) = host.strip_prefix('[') {
            return Some(rest.split_once(']').map_or(rest, |(name, _)| name));
        }
        Some(match host.rsplit_once(':') {
            Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        })
    }

    pub fn fast_interval(&self) -> Seconds {
        self.fast_interval.unwrap_or(self.interval)
    }

    pub fn down_interval(&self) -> Seconds {
        self.down_interval.unwrap_or(self.interval)
    }

    pub fn jitter(&self) -> Seconds {
        self.jitter
            .unwrap_or(Seconds::from_millis(self.interval.millis() / 10))
    }

    /// The port to probe for a backend with `backend_port`, in a farm whose first virtual port is
    /// `farm_port`: the check's own, the backend's, the farm's. None when none of them is set (a farm
    /// of every port with backends that keep the client's port needs the check's `port`).
    pub fn probe_port(&self, backend_port: Option<u16>, farm_port: Option<u16>) -> Option<u16> {
        self.port.or(backend_port).or(farm_port)
    }
}

/// A backend's `health-check`: any key of the farm's, each replacing the farm's. A different `type`
/// starts from that type's defaults (the farm's type-specific keys belong to another probe); the
/// common keys (times, counts, source) are still taken from the farm unless given here. The values
/// are checked when merged ([`effective`]), where the type they belong to is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
#[serde(into = "serde_json::Map<String, serde_json::Value>")]
pub struct HealthCheckOverride {
    /// `false` leaves the backend unchecked (a sorry server, say), whatever the farm's check.
    pub enabled: bool,
    pub keys: serde_json::Map<String, serde_json::Value>,
}

impl Default for HealthCheckOverride {
    fn default() -> Self {
        HealthCheckOverride {
            enabled: true,
            keys: serde_json::Map::new(),
        }
    }
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for HealthCheckOverride {
    type Error = String;

    fn try_from(mut keys: serde_json::Map<String, serde_json::Value>) -> Result<Self, String> {
        let enabled = match keys.remove("enabled") {
            None => true,
            Some(serde_json::Value::Bool(b)) => b,
            Some(other) => return Err(format!("enabled: {other} is not a boolean")),
        };
        if let Some(unknown) = keys.keys().find(|k| !is_key(k)) {
            return Err(format!("unknown field `{unknown}`"));
        }
        Ok(HealthCheckOverride { enabled, keys })
    }
}

impl From<HealthCheckOverride> for serde_json::Map<String, serde_json::Value> {
    fn from(o: HealthCheckOverride) -> Self {
        let mut keys = o.keys;
        if !o.enabled {
            keys.insert("enabled".into(), serde_json::Value::Bool(false));
        }
        keys
    }
}

fn is_key(key: &str) -> bool {
    key == "type" || COMMON_KEYS.contains(&key) || ALL_TYPES.iter().any(|&t| type_keys(t).contains(&key))
}

/// A key a merge refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// The key within the `health-check` object (`type`, `timeout`), empty for the object itself.
    pub key: String,
    pub reason: String,
}

/// The check a backend gets: its own override merged over its farm's check. None when neither
/// has one, or the backend's override disables it.
pub fn effective(
    farm_check: Option<&HealthCheck>,
    backend_check: Option<&HealthCheckOverride>,
) -> Result<Option<HealthCheck>, KeyError> {
    let Some(over) = backend_check else {
        return Ok(farm_check.cloned());
    };
    if !over.enabled {
        return Ok(None);
    }
    let mut merged = serde_json::Map::new();
    if let Some(farm) = farm_check {
        let given: Option<CheckType> = match over.keys.get("type") {
            Some(v) => Some(serde_json::from_value(v.clone()).map_err(|e| KeyError {
                key: "type".into(),
                reason: e.to_string(),
            })?),
            None => None,
        };
        let same_type = given.is_none_or(|t| t == farm.kind);
        for (key, value) in to_map(farm) {
            if same_type || COMMON_KEYS.contains(&key.as_str()) {
                merged.insert(key, value);
            }
        }
    } else if !over.keys.contains_key("type") {
        return Err(KeyError {
            key: "type".into(),
            reason: "required when the farm has no health-check".into(),
        });
    }
    for (key, value) in &over.keys {
        merged.insert(key.clone(), value.clone());
    }
    serde_path_to_error::deserialize(serde_json::Value::Object(merged))
        .map(Some)
        .map_err(|e| {
            let key = e.path().to_string();
            KeyError {
                key: if key == "." { String::new() } else { key },
                reason: e.into_inner().to_string(),
            }
        })
}

/// The keys a check sets (those at their defaults left out), as the canonical JSON writes them.
pub(super) fn to_map(check: &HealthCheck) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(check) {
        Ok(serde_json::Value::Object(map)) => map,
        // A struct of plain fields always serializes to an object.
        _ => serde_json::Map::new(),
    }
}

pub const ALL_TYPES: [CheckType; 7] = [
    CheckType::Tcp,
    CheckType::Http,
    CheckType::Https,
    CheckType::Udp,
    CheckType::Dns,
    CheckType::Exec,
    CheckType::Agent,
];

/// The keys every type has; the others belong to one or two types (see `TYPE_KEYS`).
pub const COMMON_KEYS: &[&str] = &[
    "port",
    "interval",
    "fast-interval",
    "down-interval",
    "timeout",
    "rise",
    "fall",
    "jitter",
    "slow-start",
    "on-failure",
    "source-addr",
    "iface",
    "mark",
];

/// The keys of each type beyond the common ones.
pub fn type_keys(kind: CheckType) -> &'static [&'static str] {
    match kind {
        CheckType::Tcp => &[],
        CheckType::Http => &[
            "method",
            "path",
            "host",
            "headers",
            "expect-status",
            "expect-body",
            "expect-body-absent",
        ],
        CheckType::Https => &[
            "method",
            "path",
            "host",
            "headers",
            "expect-status",
            "expect-body",
            "expect-body-absent",
            "tls-verify",
        ],
        CheckType::Udp => &["send", "expect"],
        CheckType::Dns => &["query-name", "query-type", "expect-rcode"],
        CheckType::Exec => &["command", "user"],
        CheckType::Agent => &["agent-port"],
    }
}
