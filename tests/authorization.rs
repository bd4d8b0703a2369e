//! Authorization over both front ends, one table: every mutating D-Bus method, every writable
//! D-Bus property and every mutating varlink method is called
//! - by `bob` (no rule names him): refused with the transport's NotAuthorized (AccessDenied for a
//!   property), and nothing changes;
//! - by `carol`, whom tests/polkit/60-nftlbd-carol.rules lets do anything whose polkit details
//!   name farm "web" (policy "webpol"): refused on farm "db" (policy "dbpol") and for the whole
//!   configuration, with nothing changed; done on "web".
//!
//! "Nothing changes" is Manager.Generation and ExportConfig byte-identical before and after the
//! call. Each row starts from the same fixture (re-imported when a row changed it), so every
//! call's arguments are valid and only polkit can refuse it. Runs in the testbed, as root.

mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use common::bus::*;
use common::clients::{self, Outcome};
// The writable properties, from the crate's own tables (one place to change if they move).
use nftlbd::schema::props::{BACKEND as BACKEND_PROPS, FARM as FARM_PROPS};
use nftlbd::service::operation::OPERATIONS;

/// Where a check's polkit details point.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scope {
    /// Names a farm ({farm}): carol may on "web" only.
    Farm,
    /// Names a policy ({policy}): carol may on "webpol" only.
    Policy,
    /// The whole configuration, no farm: carol may not.
    Config,
    /// Checkpoints, delegated to carol whole (org.nftlbd1.checkpoint names no farm). Their rows
    /// name checkpoint 999, which does not exist: allowed, the answer is NotFound.
    Checkpoint,
}

/// One call. Strings may hold `{farm}`, `{policy}` and `{vip}`, filled per [`Target`].
#[derive(Debug, Clone, Copy)]
enum Call {
    /// `interface.Member` at a path; arguments as GVariant text.
    Dbus {
        path: &'static str,
        method: &'static str,
        args: &'static [&'static str],
    },
    /// `org.freedesktop.DBus.Properties.Set`; the value as GVariant text.
    SetProperty {
        path: &'static str,
        iface: &'static str,
        name: &'static str,
        value: &'static str,
    },
    /// `org.nftlbd1.<method>` over varlink; parameters as JSON.
    Varlink {
        method: &'static str,
        params: &'static str,
    },
}

/// One row: the service operation it exercises (named as the varlink method), the call, and a
/// root varlink call made first (on each target) so the call's arguments are valid, e.g.
/// deleting the farm it creates.
#[derive(Debug, Clone, Copy)]
struct Row {
    op: &'static str,
    scope: Scope,
    call: Call,
    prep: Option<(&'static str, &'static str)>,
}

const MANAGER_PATH: &str = "/org/nftlbd1";
const FARM_PATH: &str = "/org/nftlbd1/farm/{farm}";
const BACKEND_PATH: &str = "/org/nftlbd1/farm/{farm}/backend/a";
/// Backend "a" carries the fixture's static session, so it cannot go: removals take "b".
const SPARE_BACKEND_PATH: &str = "/org/nftlbd1/farm/{farm}/backend/b";
const POLICY_PATH: &str = "/org/nftlbd1/policy/{policy}";

const fn dbus(
    op: &'static str,
    scope: Scope,
    path: &'static str,
    method: &'static str,
    args: &'static [&'static str],
) -> Row {
    Row {
        op,
        scope,
        call: Call::Dbus { path, method, args },
        prep: None,
    }
}

const fn varlink(op: &'static str, scope: Scope, params: &'static str) -> Row {
    Row {
        op,
        scope,
        call: Call::Varlink { method: op, params },
        prep: None,
    }
}

const fn after(row: Row, prep: (&'static str, &'static str)) -> Row {
    Row {
        prep: Some(prep),
        ..row
    }
}

const DELETE_FARM: (&str, &str) = ("DeleteFarm", r#"{"name": "{farm}"}"#);
const DELETE_POLICY: (&str, &str) = ("DeletePolicy", r#"{"name": "{policy}"}"#);
/// A pending timed change for a cancel to end.
const TIMED_DRAIN: (&str, &str) = (
    "SetBackendState",
    r#"{"farm": "{farm}", "backend": "a", "state": "drain", "for": 600}"#,
);

/// Every mutating method of both front ends. (The property sets are rows made from the crate's
/// tables, [`property_rows`]: UpdateFarm, UpdateBackend and SetBackendState.)
const ROWS: &[Row] = &[
    // D-Bus: Manager.
    after(
        dbus(
            "CreateFarm",
            Scope::Farm,
            MANAGER_PATH,
            "org.nftlbd1.Manager.CreateFarm",
            &[
                "'{farm}'",
                "{'VirtualAddresses': <['{vip}']>, 'VirtualPorts': <'80'>, \
                 'Backends': <[{'Name': <'a'>, 'IpAddr': <'10.0.0.1'>}]>}",
            ],
        ),
        DELETE_FARM,
    ),
    dbus(
        "DeleteFarm",
        Scope::Farm,
        MANAGER_PATH,
        "org.nftlbd1.Manager.DeleteFarm",
        &["'{farm}'"],
    ),
    after(
        dbus(
            "CreatePolicy",
            Scope::Policy,
            MANAGER_PATH,
            "org.nftlbd1.Manager.CreatePolicy",
            &[
                "'{policy}'",
                "{'Type': <'blacklist'>, 'Elements': <['203.0.113.1']>}",
            ],
        ),
        DELETE_POLICY,
    ),
    dbus(
        "DeletePolicy",
        Scope::Policy,
        MANAGER_PATH,
        "org.nftlbd1.Manager.DeletePolicy",
        &["'{policy}'"],
    ),
    dbus(
        "ImportConfig",
        Scope::Config,
        MANAGER_PATH,
        "org.nftlbd1.Manager.ImportConfig",
        &[
            r#"'{"farms": [{"name": "extra", "virtual-addresses": ["192.0.2.30"], "virtual-ports": "80"}]}'"#,
            "'merge'",
        ],
    ),
    dbus(
        "Reload",
        Scope::Config,
        MANAGER_PATH,
        "org.nftlbd1.Manager.Reload",
        &[],
    ),
    // Its details name the farm, but the fixture's farms are runtime ones (no file to write
    // them to): only the refusals are checked, as for the configuration's rows.
    dbus(
        "RuntimeToPersistent",
        Scope::Config,
        MANAGER_PATH,
        "org.nftlbd1.Manager.RuntimeToPersistent",
        &["'{farm}'"],
    ),
    // D-Bus: Farm.
    dbus(
        "UpdateFarm",
        Scope::Farm,
        FARM_PATH,
        "org.nftlbd1.Farm.Update",
        &["{'Scheduler': <'weight'>}"],
    ),
    dbus(
        "AddBackend",
        Scope::Farm,
        FARM_PATH,
        "org.nftlbd1.Farm.AddBackend",
        &["'c'", "{'IpAddr': <'10.0.0.3'>}"],
    ),
    dbus(
        "RemoveBackend",
        Scope::Farm,
        FARM_PATH,
        "org.nftlbd1.Farm.RemoveBackend",
        &["'b'"],
    ),
    dbus(
        "RenameFarm",
        Scope::Farm,
        FARM_PATH,
        "org.nftlbd1.Farm.Rename",
        &["'{farm}2'"],
    ),
    dbus(
        "DeleteFarm",
        Scope::Farm,
        FARM_PATH,
        "org.nftlbd1.Farm.Delete",
        &[],
    ),
    dbus(
        "AddSession",
        Scope::Farm,
        FARM_PATH,
        "org.nftlbd1.Farm.AddSession",
        &["'198.51.100.9'", "'b'"],
    ),
    dbus(
        "DeleteSession",
        Scope::Farm,
        FARM_PATH,
        "org.nftlbd1.Farm.DeleteSession",
        &["'198.51.100.7'"],
    ),
    dbus(
        "FlushSessions",
        Scope::Farm,
        FARM_PATH,
        "org.nftlbd1.Farm.FlushSessions",
        &[],
    ),
    // D-Bus: Backend.
    dbus(
        "UpdateBackend",
        Scope::Farm,
        BACKEND_PATH,
        "org.nftlbd1.Backend.Update",
        &["{'Weight': <uint32 2>}"],
    ),
    dbus(
        "SetBackendState",
        Scope::Farm,
        BACKEND_PATH,
        "org.nftlbd1.Backend.SetState",
        &["'drain'"],
    ),
    dbus(
        "SetBackendState",
        Scope::Farm,
        BACKEND_PATH,
        "org.nftlbd1.Backend.SetStateFor",
        &["'drain'", "uint32 600"],
    ),
    dbus(
        "UpdateBackend",
        Scope::Farm,
        BACKEND_PATH,
        "org.nftlbd1.Backend.UpdateFor",
        &["{'Weight': <uint32 2>}", "uint32 600"],
    ),
    after(
        dbus(
            "CancelTimedChange",
            Scope::Farm,
            MANAGER_PATH,
            "org.nftlbd1.Manager.CancelTimedChange",
            &["'{farm}'", "'a'", "'state'"],
        ),
        TIMED_DRAIN,
    ),
    dbus(
        "SetBackendHealth",
        Scope::Farm,
        BACKEND_PATH,
        "org.nftlbd1.Backend.SetHealth",
        &["'failing'", "'http: 503'"],
    ),
    dbus(
        "RemoveBackend",
        Scope::Farm,
        SPARE_BACKEND_PATH,
        "org.nftlbd1.Backend.Remove",
        &[],
    ),
    // A batch: one state and one weight, so both actions are asked (for the one farm).
    dbus(
        "SetBackends",
        Scope::Farm,
        MANAGER_PATH,
        "org.nftlbd1.Manager.SetBackends",
        &["[('{farm}', 'a', {'State': <'drain'>}), ('{farm}', 'b', {'Weight': <uint32 3>})]"],
    ),
    // D-Bus: Policy.
    dbus(
        "EditPolicyElements",
        Scope::Policy,
        POLICY_PATH,
        "org.nftlbd1.Policy.AddElements",
        &["['203.0.113.2']"],
    ),
    dbus(
        "EditPolicyElements",
        Scope::Policy,
        POLICY_PATH,
        "org.nftlbd1.Policy.RemoveElements",
        &["['203.0.113.1']"],
    ),
    dbus(
        "EditPolicyElements",
        Scope::Policy,
        POLICY_PATH,
        "org.nftlbd1.Policy.ReplaceElements",
        &["['203.0.113.3']"],
    ),
    dbus(
        "DeletePolicy",
        Scope::Policy,
        POLICY_PATH,
        "org.nftlbd1.Policy.Delete",
        &[],
    ),
    // varlink.
    after(
        varlink(
            "CreateFarm",
            Scope::Farm,
            r#"{"farm": {"name": "{farm}", "virtual-addresses": ["{vip}"], "virtual-ports": "80",
                "backends": [{"name": "a", "ip-addr": "10.0.0.1"}]}}"#,
        ),
        DELETE_FARM,
    ),
    varlink(
        "UpdateFarm",
        Scope::Farm,
        r#"{"name": "{farm}", "changes": {"scheduler": "weight"}}"#,
    ),
    varlink(
        "RenameFarm",
        Scope::Farm,
        r#"{"name": "{farm}", "newName": "{farm}2"}"#,
    ),
    varlink("DeleteFarm", Scope::Farm, r#"{"name": "{farm}"}"#),
    varlink(
        "AddBackend",
        Scope::Farm,
        r#"{"farm": "{farm}", "backend": {"name": "c", "ip-addr": "10.0.0.3"}}"#,
    ),
    varlink(
        "UpdateBackend",
        Scope::Farm,
        r#"{"farm": "{farm}", "backend": "a", "changes": {"weight": 2}}"#,
    ),
    varlink(
        "RemoveBackend",
        Scope::Farm,
        r#"{"farm": "{farm}", "backend": "b"}"#,
    ),
    varlink(
        "SetBackendState",
        Scope::Farm,
        r#"{"farm": "{farm}", "backend": "a", "state": "drain"}"#,
    ),
    after(
        varlink(
            "CancelTimedChange",
            Scope::Farm,
            r#"{"farm": "{farm}", "backend": "a", "key": "state"}"#,
        ),
        TIMED_DRAIN,
    ),
    varlink(
        "SetBackendHealth",
        Scope::Farm,
        r#"{"farm": "{farm}", "backend": "a", "health": "failing", "reason": "http: 503"}"#,
    ),
    varlink(
        "SetBackends",
        Scope::Farm,
        r#"{"changes": [{"farm": "{farm}", "backend": "a", "state": "drain"},
                        {"farm": "{farm}", "backend": "b", "weight": 3}]}"#,
    ),
    varlink(
        "AddSession",
        Scope::Farm,
        r#"{"farm": "{farm}", "client": "198.51.100.9", "backend": "b"}"#,
    ),
    varlink(
        "DeleteSession",
        Scope::Farm,
        r#"{"farm": "{farm}", "client": "198.51.100.7"}"#,
    ),
    varlink("FlushSessions", Scope::Farm, r#"{"farm": "{farm}"}"#),
    after(
        varlink(
            "CreatePolicy",
            Scope::Policy,
            r#"{"policy": {"name": "{policy}", "type": "blacklist", "elements": ["203.0.113.1"]}}"#,
        ),
        DELETE_POLICY,
    ),
    varlink("DeletePolicy", Scope::Policy, r#"{"name": "{policy}"}"#),
    varlink(
        "EditPolicyElements",
        Scope::Policy,
        r#"{"name": "{policy}", "add": ["203.0.113.2"], "remove": ["203.0.113.1"]}"#,
    ),
    varlink(
        "ImportConfig",
        Scope::Config,
        r#"{"config": {"farms": [{"name": "extra", "virtual-addresses": ["192.0.2.30"], "virtual-ports": "80"}]},
            "mode": "merge"}"#,
    ),
    varlink("Reload", Scope::Config, "{}"),
    // Checkpoints: created overlapping (flag 8), so each one is allowed again.
    dbus(
        "CheckpointCreate",
        Scope::Checkpoint,
        MANAGER_PATH,
        "org.nftlbd1.Manager.CheckpointCreate",
        &["@ao []", "uint32 0", "uint32 8"],
    ),
    dbus(
        "CheckpointRollback",
        Scope::Checkpoint,
        MANAGER_PATH,
        "org.nftlbd1.Manager.CheckpointRollback",
        &["objectpath '/org/nftlbd1/checkpoint/999'"],
    ),
    dbus(
        "CheckpointDestroy",
        Scope::Checkpoint,
        MANAGER_PATH,
        "org.nftlbd1.Manager.CheckpointDestroy",
        &["objectpath '/org/nftlbd1/checkpoint/999'"],
    ),
    dbus(
        "CheckpointAdjustRollbackTimeout",
        Scope::Checkpoint,
        MANAGER_PATH,
        "org.nftlbd1.Manager.CheckpointAdjustRollbackTimeout",
        &["objectpath '/org/nftlbd1/checkpoint/999'", "uint32 5"],
    ),
    varlink("CheckpointCreate", Scope::Checkpoint, r#"{"flags": 8}"#),
    varlink("CheckpointRollback", Scope::Checkpoint, r#"{"checkpoint": 999}"#),
    varlink("CheckpointDestroy", Scope::Checkpoint, r#"{"checkpoint": 999}"#),
    varlink(
        "CheckpointAdjustRollbackTimeout",
        Scope::Checkpoint,
        r#"{"checkpoint": 999, "addTimeout": 5}"#,
    ),
    varlink("RuntimeToPersistent", Scope::Config, r#"{"name": "{farm}"}"#),
];

/// A valid new value (GVariant text) for every writable farm property, on the fixture's farms.
const FARM_VALUES: &[(&str, &str)] = &[
    ("Family", "'ipv4'"),
    ("VirtualAddresses", "['{vip}', '198.18.0.1']"),
    ("VirtualPorts", "'8080'"),
    ("Protocol", "'udp'"),
    ("Mode", "'dnat'"),
    ("Scheduler", "'weight'"),
    ("SchedParam", "['srcip', 'srcport']"),
    ("Persistence", "['srcip']"),
    ("PersistTtl", "uint32 120"),
    ("Quorum", "uint32 1"),
    ("Helper", "'ftp'"),
    ("Log", "['input']"),
    ("LogPrefix", "'{farm}-'"),
    ("LogRtLimit", "'10/second'"),
    ("Mark", "uint32 256"),
    ("Priority", "uint32 2"),
    ("State", "'off'"),
    ("SourceAddr", "'192.0.2.1'"),
    ("Iface", "'lo'"),
    ("Oface", "'lo'"),
    ("IetherAddr", "'02:00:00:00:00:01'"),
    ("OetherAddr", "'02:00:00:00:00:02'"),
    ("NewRtLimit", "'10/second'"),
    ("NewRtLimitBurst", "uint32 5"),
    ("RstRtLimit", "'10/second'"),
    ("RstRtLimitBurst", "uint32 5"),
    ("EstConnLimit", "uint32 100"),
    ("HealthCheck", r#"'{"type": "tcp", "interval": 5}'"#),
    ("HealthStart", "'pessimistic'"),
    ("Quorum", "uint32 1"),
    ("TcpStrict", "true"),
    ("Queue", "0"),
    ("Verdict", "['log', 'drop']"),
    ("IntraConnect", "true"),
    ("FlowOffload", "true"),
    ("LimitsTtl", "uint32 60"),
    ("Policies", "['{policy}']"),
];

/// Root changes that make a farm property's value valid (sched-param is for the hash
/// scheduler only), as [`Row::prep`].
const FARM_PREP: &[(&str, (&str, &str))] = &[(
    "SchedParam",
    (
        "UpdateFarm",
        r#"{"name": "{farm}", "changes": {"scheduler": "hash", "sched-param": ["srcip"]}}"#,
    ),
)];

/// Farm properties whose feature this kernel may lack: setting them may fail for that reason
/// (and for no other).
const KERNEL_FEATURES: &[&str] = &["Queue", "FlowOffload"];

/// The same for backend "a".
const BACKEND_VALUES: &[(&str, &str)] = &[
    ("IpAddr", "'10.0.0.9'"),
    ("Port", "uint16 8080"),
    ("Weight", "uint32 3"),
    ("Priority", "uint32 2"),
    ("Mark", "uint32 512"),
    ("State", "'drain'"),
    ("SourceAddr", "'10.0.0.254'"),
    ("EtherAddr", "'02:00:00:00:00:03'"),
    ("EstConnLimit", "uint32 10"),
    ("Sorry", "true"),
    ("HealthCheck", r#"'{"type": "tcp", "port": 81}'"#),
    ("Sorry", "true"),
];

/// Setting each writable property (the crate's tables), with its operation.
fn property_rows() -> Vec<Row> {
    let value = |values: &[(&'static str, &'static str)], name: &str| {
        values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no test value for the writable property {name}: add one"))
    };
    let mut rows = Vec::new();
    for p in FARM_PROPS {
        rows.push(Row {
            op: "UpdateFarm",
            scope: Scope::Farm,
            call: Call::SetProperty {
                path: FARM_PATH,
                iface: "org.nftlbd1.Farm",
                name: p.name,
                value: value(FARM_VALUES, p.name),
            },
            prep: FARM_PREP
                .iter()
                .find(|(n, _)| *n == p.name)
                .map(|(_, prep)| *prep),
        });
    }
    for p in BACKEND_PROPS {
        rows.push(Row {
            // Setting State is SetState (polkit's narrower backend.set-state).
            op: if p.name == "State" {
                "SetBackendState"
            } else {
                "UpdateBackend"
            },
            scope: Scope::Farm,
            call: Call::SetProperty {
                path: BACKEND_PATH,
                iface: "org.nftlbd1.Backend",
                name: p.name,
                value: value(BACKEND_VALUES, p.name),
            },
            prep: None,
        });
    }
    rows
}

/// What the placeholders stand for.
#[derive(Debug, Clone, Copy)]
struct Target {
    farm: &'static str,
    policy: &'static str,
    vip: &'static str,
}

const WEB: Target = Target {
    farm: "web",
    policy: "webpol",
    vip: "192.0.2.10",
};
const DB: Target = Target {
    farm: "db",
    policy: "dbpol",
    vip: "192.0.2.20",
};

fn fill(s: &str, t: Target) -> String {
    s.replace("{farm}", t.farm)
        .replace("{policy}", t.policy)
        .replace("{vip}", t.vip)
}

/// Two farms alike, with backends, persistence and a static session, and a policy each.
fn fixture() -> String {
    let farm = |t: Target| {
        fill(
            r#"{"name": "{farm}", "virtual-addresses": ["{vip}"], "virtual-ports": "80",
                "persistence": ["srcip"], "persist-ttl": 60,
                "backends": [{"name": "a", "ip-addr": "10.0.0.1"}, {"name": "b", "ip-addr": "10.0.0.2"}],
                "sessions": [{"client": "198.51.100.7", "backend": "a"}]}"#,
            t,
        )
    };
    let policy = |t: Target| {
        fill(
            r#"{"name": "{policy}", "type": "blacklist", "elements": ["203.0.113.1"]}"#,
            t,
        )
    };
    format!(
        r#"{{"farms": [{}, {}], "policies": [{}, {}]}}"#,
        farm(WEB),
        farm(DB),
        policy(WEB),
        policy(DB)
    )
}

/// What a row's call is, for messages.
fn describe(row: &Row) -> String {
    match row.call {
        Call::Dbus { method, .. } => format!("D-Bus {method}"),
        Call::SetProperty { iface, name, .. } => format!("D-Bus set {iface}.{name}"),
        Call::Varlink { method, .. } => format!("varlink {method}"),
    }
}

/// The row's call as `user` on `t`.
fn run(row: &Row, user: &str, t: Target) -> Outcome {
    match row.call {
        Call::Dbus { path, method, args } => {
            let args: Vec<String> = args.iter().map(|a| fill(a, t)).collect();
            clients::dbus(Some(user), &fill(path, t), method, &args)
        }
        Call::SetProperty {
            path,
            iface,
            name,
            value,
        } => clients::dbus_set(Some(user), &fill(path, t), iface, name, &fill(value, t)),
        Call::Varlink { method, params } => clients::varlink(Some(user), method, &fill(params, t)),
    }
}

/// The error name a refusal of this row's call must carry.
fn refusal(row: &Row) -> &'static str {
    match row.call {
        Call::Dbus { .. } => "org.nftlbd1.Error.NotAuthorized",
        Call::SetProperty { .. } => "org.freedesktop.DBus.Error.AccessDenied",
        Call::Varlink { .. } => "org.nftlbd1.NotAuthorized",
    }
}

/// Generation and the exported configuration: equal before and after means nothing changed.
fn snapshot() -> (u64, String) {
    (generation(), export())
}

fn root_varlink(method: &str, params: &str) {
    let out = clients::varlink(None, method, params);
    assert!(out.ok(), "root {method} {params}: {}", out.text);
}

/// At most 200 characters of a command's output, for the list of failures.
fn short(text: &str) -> &str {
    let text = text.trim();
    let end = text.char_indices().nth(200).map_or(text.len(), |(i, _)| i);
    &text[..end]
}

/// Refusal checks: `out` must carry the row's refusal and leave `before` as it was.
fn expect_refused(row: &Row, who: &str, out: &Outcome, before: &(u64, String), failures: &mut Vec<String>) {
    let want = refusal(row);
    let code_ok = match row.call {
        Call::Varlink { .. } => out.code == 77,
        _ => out.code == 1,
    };
    if out.error.as_deref() != Some(want) || !code_ok {
        failures.push(format!(
            "{} ({}) as {who}: want {want}, got exit {} {:?}: {}",
            describe(row),
            row.op,
            out.code,
            out.error,
            short(&out.text)
        ));
    }
    let now = snapshot();
    if now != *before {
        failures.push(format!(
            "{} ({}) as {who} changed something: generation {} -> {}",
            describe(row),
            row.op,
            before.0,
            now.0
        ));
    }
}

#[test]
fn every_mutation_is_authorized_with_its_details_over_both_transports() {
    if !in_testbed_with_rules(
        "every_mutation_is_authorized_with_its_details_over_both_transports",
        &["tests/polkit/60-nftlbd-carol.rules"],
    ) {
        return;
    }
    let started = Instant::now();
    let dir = tempdir();
    let _daemon = Daemon::start_here_unchecked(&dir);
    let fixture = fixture();
    root_varlink(
        "ImportConfig",
        &format!(r#"{{"config": {fixture}, "mode": "replace"}}"#),
    );
    let pristine = export();

    let rows: Vec<Row> = ROWS.iter().copied().chain(property_rows()).collect();
    let mut failures = Vec::new();
    let (mut done_on_web, mut lacked) = (0, 0);
    for row in &rows {
        if export() != pristine {
            root_varlink(
                "ImportConfig",
                &format!(r#"{{"config": {fixture}, "mode": "replace"}}"#),
            );
            assert_eq!(export(), pristine, "the fixture came back");
        }
        if let Some((method, params)) = row.prep {
            for t in [WEB, DB] {
                root_varlink(method, &fill(params, t));
            }
        }
        let before = snapshot();

        // A: bob may do nothing.
        let out = run(row, "bob", WEB);
        expect_refused(row, "bob", &out, &before, &mut failures);

        // B: carol may on web (webpol) only; the configuration is no farm's; checkpoints are
        // hers whole.
        if row.scope != Scope::Checkpoint {
            let out = run(row, "carol", DB);
            expect_refused(row, "carol on db", &out, &before, &mut failures);
        }
        if row.scope == Scope::Config {
            continue;
        }
        let out = run(row, "carol", WEB);
        if row.scope == Scope::Checkpoint {
            let dbus_missing = out.error.as_deref() == Some("org.nftlbd1.Error.NotFound");
            let varlink_missing = out.error.as_deref() == Some("org.nftlbd1.NotFound");
            if out.ok() || dbus_missing || varlink_missing {
                done_on_web += 1;
            } else {
                failures.push(format!(
                    "{} ({}) as carol: want it authorized, got exit {} {:?}: {}",
                    describe(row),
                    row.op,
                    out.code,
                    out.error,
                    short(&out.text)
                ));
            }
            continue;
        }
        let missing_feature = matches!(row.call, Call::SetProperty { name, .. } if KERNEL_FEATURES.contains(&name))
            && out.text.contains("this kernel has no");
        if !out.ok() && !missing_feature {
            failures.push(format!(
                "{} ({}) as carol on web: want success, got exit {} {:?}: {}",
                describe(row),
                row.op,
                out.code,
                out.error,
                short(&out.text)
            ));
        } else if out.ok() {
            done_on_web += 1;
        } else {
            lacked += 1;
        }
    }
    println!(
        "{} rows, {done_on_web} done by carol on web ({lacked} not: this kernel lacks the feature), {} failures, {:.1} s",
        rows.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Both front ends reach the same operations, and every row names one.
#[test]
fn rows_cover_the_same_operations_on_each_front_end() {
    let ops = |varlink: bool| -> BTreeSet<&str> {
        ROWS.iter()
            .filter(|r| matches!(r.call, Call::Varlink { .. }) == varlink)
            .map(|r| r.op)
            .collect()
    };
    assert_eq!(ops(false), ops(true));
    assert_eq!(ops(true).len(), 24);
    let names: BTreeSet<&str> = ROWS
        .iter()
        .filter_map(|r| match r.call {
            Call::Varlink { method, .. } => Some(method),
            _ => None,
        })
        .collect();
    assert_eq!(names, ops(true), "a varlink row's operation is its method");
    for r in property_rows() {
        assert!(ops(true).contains(r.op), "{r:?}");
    }
    // Every change of the service's operation table has rows, and every D-Bus member that
    // offers one is called (property sets by `property_rows`).
    let changes: BTreeSet<&str> = OPERATIONS.iter().filter(|s| s.changes).map(|s| s.name).collect();
    assert_eq!(ops(true), changes, "the rows and the operation table");
    let called: BTreeSet<String> = ROWS
        .iter()
        .filter_map(|r| match r.call {
            Call::Dbus { method, .. } => method.strip_prefix("org.nftlbd1.").map(str::to_string),
            _ => None,
        })
        .collect();
    for spec in OPERATIONS.iter().filter(|s| s.changes) {
        for member in spec.dbus.iter().filter(|m| !m.ends_with('=')) {
            assert!(called.contains(*member), "{}: no row calls {member}", spec.name);
        }
    }
    // No test value for a property that is gone (or was renamed).
    for (values, props) in [(FARM_VALUES, FARM_PROPS), (BACKEND_VALUES, BACKEND_PROPS)] {
        for (name, _) in values {
            assert!(
                props.iter().any(|p| p.name == *name),
                "{name} is no writable property"
            );
        }
    }
}
