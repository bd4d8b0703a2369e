//! The canonical configuration document (docs/json.md): `{"farms":[...], "policies":[...]}` with nftlb's
//! key names in kebab-case and real JSON types. Unknown keys are refused (`deny_unknown_fields`);
//! defaults are nftlb's.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::health::{Health, HealthCheck, HealthCheckOverride, HealthStart};
use super::list::List;
use super::policy_element::PolicyElement;
use super::ports::Ports;
use super::session_client::SessionClient;
use super::values::*;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub farms: List<Farm>,
    #[serde(default)]
    pub policies: List<Policy>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn one() -> u32 {
    1
}
fn is_one(v: &u32) -> bool {
    *v == 1
}
fn sixty() -> u32 {
    60
}
fn is_sixty(v: &u32) -> bool {
    *v == 60
}
fn limits_ttl_default() -> u32 {
    120
}
fn is_limits_ttl_default(v: &u32) -> bool {
    *v == 120
}
fn queue_off() -> i32 {
    -1
}
fn is_queue_off(v: &i32) -> bool {
    *v == -1
}
fn verdict_default() -> Vec<VerdictAction> {
    vec![VerdictAction::Log, VerdictAction::Drop, VerdictAction::Accept]
}
fn is_verdict_default(v: &Vec<VerdictAction>) -> bool {
    *v == verdict_default()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Farm {
    pub name: String,
    #[serde(default)]
    pub family: FarmFamily,
    #[serde(default)]
    pub virtual_addresses: Vec<IpAddr>,
    /// `"80,443,8000-8010"`; empty means every port.
    #[serde(default)]
    pub virtual_ports: Ports,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub scheduler: Scheduler,
    /// Hash input of the `hash` scheduler; empty means `srcip`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sched_param: Vec<KeyField>,
    /// Stickiness key; empty means no persistence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub persistence: Vec<KeyField>,
    /// Seconds a client stays with its backend after its last new connection.
    #[serde(default = "sixty", skip_serializing_if = "is_sixty")]
    pub persist_ttl: u32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub helper: Helper,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<LogPoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_rtlimit: Option<Rate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<Mark>,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub priority: u32,
    #[serde(default)]
    pub state: FarmState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_addr: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iether_addr: Option<EtherAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oether_addr: Option<EtherAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_rtlimit: Option<Rate>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub new_rtlimit_burst: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rst_rtlimit: Option<Rate>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub rst_rtlimit_burst: u32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub est_connlimit: u32,
    #[serde(default, skip_serializing_if = "is_default")]
    pub tcp_strict: bool,
    /// NFQUEUE number for new connections, -1 = off.
    #[serde(default = "queue_off", skip_serializing_if = "is_queue_off")]
    pub queue: i32,
    #[serde(default = "verdict_default", skip_serializing_if = "is_verdict_default")]
    pub verdict: Vec<VerdictAction>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub intra_connect: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    pub flow_offload: bool,
    #[serde(default = "limits_ttl_default", skip_serializing_if = "is_limits_ttl_default")]
    pub limits_ttl: u32,
    /// Names of attached policies, in evaluation order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// How nftlbd probes the backends (docs/health.md); none: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Whether a checked backend serves before its first verdict (docs/health.md).
    #[serde(default, skip_serializing_if = "is_default")]
    pub health_start: HealthStart,
    /// The fewest regular backends that must take new flows; below it the `sorry` backends
    /// serve (docs/json.md). 0: off.
    #[serde(default, skip_serializing_if = "is_default")]
    pub quorum: u32,
    #[serde(default)]
    pub backends: List<Backend>,
    /// Static sessions: a client key (in the farm's persistence format) pinned to a backend.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<Session>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Backend {
    pub name: String,
    pub ip_addr: IpAddr,
    /// Destination port on the backend; none keeps the client's destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default = "one")]
    pub priority: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<Mark>,
    #[serde(default)]
    pub state: BackendState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_addr: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ether_addr: Option<EtherAddr>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub est_connlimit: u32,
    /// The farm's `health-check` changed for this backend (or `{"enabled": false}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckOverride>,
    /// What the checks (nftlbd's or an outside checker's) last said. Saved like any key, so a
    /// restart neither flaps nor forgets an outside verdict.
    #[serde(default, skip_serializing_if = "is_default")]
    pub health: Health,
    /// Why, in the checker's words (`connect: connection refused`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub health_reason: String,
    /// Serves only while its farm is below its `quorum` (keepalived's sorry server).
    #[serde(default, skip_serializing_if = "is_default")]
    pub sorry: bool,
    /// An agent check asks that the backend take no new flows (its health advice, not the
    /// administrative `state`, which always wins).
    #[serde(default, skip_serializing_if = "is_default")]
    pub health_drain: bool,
    /// The share of `weight` an agent check asks for, 0-100; none: all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_weight: Option<u8>,
    /// The share of its weight a backend recovering under `slow-start` has reached, 1-100;
    /// none: all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_ramp: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Session {
    /// The persistence key's values joined with `" . "`, e.g. `"192.0.2.7 . 40000"`.
    pub client: SessionClient,
    pub backend: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: PolicyType,
    #[serde(default)]
    pub family: PolicyFamily,
    #[serde(default, skip_serializing_if = "is_default")]
    pub timeout: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_prefix: Option<String>,
    /// Addresses, CIDRs and `a-b` ranges.
    #[serde(default)]
    pub elements: Vec<PolicyElement>,
}

impl Farm {
    /// A farm with nftlb's defaults, for building configurations in code.
    pub fn new(name: &str) -> Farm {
        serde_json::from_value(serde_json::json!({ "name": name })).expect("a name alone is a complete farm")
    }

    /// The hash input actually used: `sched-param`, or `srcip` when it is empty.
    pub fn hash_fields(&self) -> Vec<KeyField> {
        if self.sched_param.is_empty() {
            vec![KeyField::Srcip]
        } else {
            self.sched_param.clone()
        }
    }

    /// The farm's own keys: a copy without its backends, in O(1) of the backends (an update of
    /// one backend must not copy thousands). The destructuring makes a new field a compile error
    /// here rather than a key left out.
    #[allow(clippy::clone_on_copy)] // every field alike: the list is checked, not tuned
    pub fn without_backends(&self) -> Farm {
        let Farm {
            name,
            family,
            virtual_addresses,
            virtual_ports,
            protocol,
            mode,
            scheduler,
            sched_param,
            persistence,
            persist_ttl,
            helper,
            log,
            log_prefix,
            log_rtlimit,
            mark,
            priority,
            state,
            source_addr,
            iface,
            oface,
            iether_addr,
            oether_addr,
            new_rtlimit,
            new_rtlimit_burst,
            rst_rtlimit,
            rst_rtlimit_burst,
            est_connlimit,
            tcp_strict,
            queue,
            verdict,
            intra_connect,
            flow_offload,
            limits_ttl,
            policies,
            health_check,
            health_start,
            quorum,
            sessions,
            backends: _,
        } = self;
        Farm {
            name: name.clone(),
            family: family.clone(),
            virtual_addresses: virtual_addresses.clone(),
            virtual_ports: virtual_ports.clone(),
            protocol: protocol.clone(),
            mode: mode.clone(),
            scheduler: scheduler.clone(),
            sched_param: sched_param.clone(),
            persistence: persistence.clone(),
            persist_ttl: persist_ttl.clone(),
            helper: helper.clone(),
            log: log.clone(),
            log_prefix: log_prefix.clone(),
            log_rtlimit: log_rtlimit.clone(),
            mark: mark.clone(),
            priority: priority.clone(),
            state: state.clone(),
            source_addr: source_addr.clone(),
            iface: iface.clone(),
            oface: oface.clone(),
            iether_addr: iether_addr.clone(),
            oether_addr: oether_addr.clone(),
            new_rtlimit: new_rtlimit.clone(),
            new_rtlimit_burst: new_rtlimit_burst.clone(),
            rst_rtlimit: rst_rtlimit.clone(),
            rst_rtlimit_burst: rst_rtlimit_burst.clone(),
            est_connlimit: est_connlimit.clone(),
            tcp_strict: tcp_strict.clone(),
            queue: queue.clone(),
            verdict: verdict.clone(),
            intra_connect: intra_connect.clone(),
            flow_offload: flow_offload.clone(),
            limits_ttl: limits_ttl.clone(),
            policies: policies.clone(),
            health_check: health_check.clone(),
            health_start: health_start.clone(),
            quorum: quorum.clone(),
            sessions: sessions.clone(),
            backends: List::new(),
        }
    }

    /// `HealthReady`: every checked backend has a verdict (healthy or failing), so the farm
    /// schedules on what its checks said rather than on its start mode. O(backends).
    pub fn health_ready(&self) -> bool {
        let farm_check = self.health_check.is_some();
        self.backends.iter().all(|b| {
            b.health != Health::Unknown || !super::health::is_checked(farm_check, b.health_check.as_ref())
        })
    }

    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.name == name)
    }
}

impl Backend {
    pub fn new(name: &str, ip: IpAddr) -> Backend {
        serde_json::from_value(serde_json::json!({ "name": name, "ip-addr": ip }))
            .expect("a name and an address make a complete backend")
    }
}

impl Config {
    pub fn farm(&self, name: &str) -> Option<&Farm> {
        self.farms.iter().find(|f| f.name == name)
    }
}
