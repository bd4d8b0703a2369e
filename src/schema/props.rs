//! The keys of farms, backends and policies as the API shows them: each canonical JSON key
//! (kebab-case, as in files and varlink), its D-Bus property name (CamelCase) and D-Bus type.
//! The D-Bus front end, the command line and the generated reference all read these tables, so
//! none of them can drift from the others.

/// One key: its property name, its canonical JSON name and its D-Bus signature.
pub struct Prop {
    pub name: &'static str,
    pub key: &'static str,
    pub sig: &'static str,
}

const fn p(name: &'static str, key: &'static str, sig: &'static str) -> Prop {
    Prop { name, key, sig }
}

/// Writable farm keys (`Name` is read-only: `Rename`).
pub const FARM: &[Prop] = &[
    p("Family", "family", "s"),
    p("VirtualAddresses", "virtual-addresses", "as"),
    p("VirtualPorts", "virtual-ports", "s"),
    p("Protocol", "protocol", "s"),
    p("Mode", "mode", "s"),
    p("Scheduler", "scheduler", "s"),
    p("SchedParam", "sched-param", "as"),
    p("Persistence", "persistence", "as"),
    p("PersistTtl", "persist-ttl", "u"),
    p("Helper", "helper", "s"),
    p("Log", "log", "as"),
    p("LogPrefix", "log-prefix", "s"),
    p("LogRtLimit", "log-rtlimit", "s"),
    p("Mark", "mark", "u"),
    p("Priority", "priority", "u"),
    p("State", "state", "s"),
    p("SourceAddr", "source-addr", "s"),
    p("Iface", "iface", "s"),
    p("Oface", "oface", "s"),
    p("IetherAddr", "iether-addr", "s"),
    p("OetherAddr", "oether-addr", "s"),
    p("NewRtLimit", "new-rtlimit", "s"),
    p("NewRtLimitBurst", "new-rtlimit-burst", "u"),
    p("RstRtLimit", "rst-rtlimit", "s"),
    p("RstRtLimitBurst", "rst-rtlimit-burst", "u"),
    p("EstConnLimit", "est-connlimit", "u"),
    p("TcpStrict", "tcp-strict", "b"),
    p("Queue", "queue", "i"),
    p("Verdict", "verdict", "as"),
    p("IntraConnect", "intra-connect", "b"),
    p("FlowOffload", "flow-offload", "b"),
    p("LimitsTtl", "limits-ttl", "u"),
    p("Policies", "policies", "as"),
    p("HealthCheck", "health-check", "s"),
    p("HealthStart", "health-start", "s"),
    p("Quorum", "quorum", "u"),
];

/// Writable backend keys (`Name` is read-only).
pub const BACKEND: &[Prop] = &[
    p("IpAddr", "ip-addr", "s"),
    p("Port", "port", "q"),
    p("Weight", "weight", "u"),
    p("Priority", "priority", "u"),
    p("Mark", "mark", "u"),
    p("State", "state", "s"),
    p("SourceAddr", "source-addr", "s"),
    p("EtherAddr", "ether-addr", "s"),
    p("EstConnLimit", "est-connlimit", "u"),
    p("HealthCheck", "health-check", "s"),
    p("Sorry", "sorry", "b"),
];

/// Backend keys that are read-only on the bus (set by `SetHealth`), but canonical keys all the same.
pub const BACKEND_HEALTH: &[Prop] = &[
    p("Health", "health", "s"),
    p("HealthReason", "health-reason", "s"),
    p("HealthDrain", "health-drain", "b"),
    p("HealthWeight", "health-weight", "u"),
    p("HealthRamp", "health-ramp", "u"),
];

/// Backend keys whose change changes `EffectiveWeight`.
pub const EFFECTIVE_WEIGHT_KEYS: &[&str] = &["weight", "health-weight", "health-ramp"];

/// Keys whose D-Bus value is the JSON text of an object (`""`: not set).
pub fn is_json_object(key: &str) -> bool {
    key == "health-check"
}

/// Policy keys (`Name` is read-only).
pub const POLICY: &[Prop] = &[
    p("Type", "type", "s"),
    p("Family", "family", "s"),
    p("Timeout", "timeout", "u"),
    p("LogPrefix", "log-prefix", "s"),
    p("Elements", "elements", "as"),
];

/// The entry of `table` whose property name is `name`.
pub fn find(table: &'static [Prop], name: &str) -> Option<&'static Prop> {
    table.iter().find(|p| p.name == name)
}

/// The entry of `table` whose canonical JSON key is `key`.
pub fn by_key(table: &'static [Prop], key: &str) -> Option<&'static Prop> {
    table.iter().find(|p| p.key == key)
}
