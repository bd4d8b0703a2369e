//! Checkpoints over a real system bus (tools/testbed.sh): CheckpointCreate gives an object whose
//! properties read back, the Manager lists it, a rollback restores the farm, and a destroyed
//! checkpoint's object is gone; the served Checkpoint interface is the documented one; a
//! rollback's signals put back what the changes since announced. Needs root.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::bus::*;
use common::introspect::members;

const IFACE: &str = "org.nftlbd1.Checkpoint";
const ROOT: &str = "/org/nftlbd1";
const WEB: &str = "/org/nftlbd1/farm/web";
const BE_A: &str = "/org/nftlbd1/farm/web/backend/a";
const BE_B: &str = "/org/nftlbd1/farm/web/backend/b";
const BACKEND: &str = "org.nftlbd1.Backend";

fn prop(path: &str, iface: &str, name: &str) -> String {
    ok(&["get-property", DEST, path, iface, name]).trim().to_string()
}

/// A `t` property as a number.
fn seconds(path: &str, name: &str) -> u64 {
    let text = prop(path, IFACE, name);
    text.strip_prefix("t ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{name}: {text}"))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn create(timeout: &str) -> String {
    call(
        ROOT,
        MANAGER,
        "CheckpointCreate",
        &["aouu", "1", WEB, timeout, "0"],
    )
    .trim()
    .to_string()
}

#[test]
fn checkpoints_over_the_bus() {
    if !in_testbed("checkpoints_over_the_bus") {
        return;
    }
    let dir = tempdir();
    let daemon = Daemon::start_here_unchecked(&dir);
    call(
        ROOT,
        MANAGER,
        "CreateFarm",
        &[
            "sa{sv}",
            "web",
            "3",
            "VirtualAddresses",
            "as",
            "1",
            "192.0.2.10",
            "VirtualPorts",
            "s",
            "80",
            "Backends",
            "aa{sv}",
            "1",
            "2",
            "Name",
            "s",
            "a",
            "IpAddr",
            "s",
            "10.0.0.1",
        ],
    );
    assert_eq!(prop(ROOT, MANAGER, "Checkpoints"), "ao 0");

    // Created: an object with its properties, listed by the Manager.
    let before = unix_now();
    assert_eq!(create("30"), "o \"/org/nftlbd1/checkpoint/1\"");
    let after = unix_now();
    let cp = "/org/nftlbd1/checkpoint/1";
    assert_eq!(prop(cp, IFACE, "Farms"), format!("ao 1 \"{WEB}\""));
    assert_eq!(prop(cp, IFACE, "RollbackTimeout"), "u 30");
    let created = seconds(cp, "Created");
    assert!((before..=after).contains(&created), "{before} {created} {after}");
    let deadline = seconds(cp, "Deadline");
    assert!(
        (before + 30..=after + 31).contains(&deadline),
        "{before} {deadline} {after}"
    );
    assert_eq!(prop(ROOT, MANAGER, "Checkpoints"), format!("ao 1 \"{cp}\""));

    // The interface served is exactly the documented one (the installed XML file).
    let file = format!("/usr/share/dbus-1/interfaces/{IFACE}.xml");
    let documented = std::fs::read_to_string(&file).unwrap_or_default();
    let want = members(&documented, IFACE);
    assert_eq!(
        want,
        [
            "property Created t read",
            "property Deadline t read",
            "property Farms ao read",
            "property RollbackTimeout u read",
        ],
        "{file}"
    );
    let live = ok(&["introspect", "--xml-interface", DEST, cp]);
    assert_eq!(members(&live, IFACE), want, "{IFACE} at {cp} differs from {file}");
    let docs = documented.matches("org.gtk.GDBus.DocString").count();
    assert!(
        docs > want.len(),
        "{file}: every member and the interface documented"
    );

    // A new timeout: from now, read back.
    call(
        ROOT,
        MANAGER,
        "CheckpointAdjustRollbackTimeout",
        &["ou", cp, "600"],
    );
    assert_eq!(prop(cp, IFACE, "RollbackTimeout"), "u 600");
    let moved = seconds(cp, "Deadline");
    assert!(moved >= deadline + 500, "{deadline} then {moved}");

    // Destroyed (confirmed): the object goes, and the Manager lists nothing.
    assert_eq!(call(ROOT, MANAGER, "CheckpointDestroy", &["o", cp]).trim(), "");
    let (found, out) = busctl(None, &["get-property", DEST, cp, IFACE, "Farms"]);
    assert!(!found, "{out}");
    assert_eq!(prop(ROOT, MANAGER, "Checkpoints"), "ao 0");
    let (found, out) = busctl(None, &["call", DEST, ROOT, MANAGER, "CheckpointDestroy", "o", cp]);
    assert!(!found && out.contains("no checkpoint 1"), "{out}");

    // Rolled back over the bus: the weight set since comes back, the object goes.
    assert_eq!(create("0"), "o \"/org/nftlbd1/checkpoint/2\"");
    let cp = "/org/nftlbd1/checkpoint/2";
    assert_eq!(seconds(cp, "Deadline"), 0);
    ok(&[
        "set-property",
        DEST,
        BE_A,
        "org.nftlbd1.Backend",
        "Weight",
        "u",
        "7",
    ]);
    assert_eq!(prop(BE_A, "org.nftlbd1.Backend", "Weight"), "u 7");
    assert_eq!(
        call(ROOT, MANAGER, "CheckpointRollback", &["o", cp]).trim(),
        "a{su} 1 \"web\" 0"
    );
    assert_eq!(prop(BE_A, "org.nftlbd1.Backend", "Weight"), "u 1");
    let (found, out) = busctl(None, &["get-property", DEST, cp, IFACE, "Farms"]);
    assert!(!found, "{out}");
    assert_eq!(prop(ROOT, MANAGER, "Checkpoints"), "ao 0");

    daemon.stop();
}

/// The `STRING` values of a monitored message's body, in order.
fn strings(message: &str) -> Vec<&str> {
    message
        .split("STRING \"")
        .skip(1)
        .filter_map(|s| s.split_once("\";").map(|(v, _)| v))
        .collect()
}

/// A `PropertiesChanged` of `path` that sets `Weight` to `weight`.
fn weight_set(message: &str, path: &str, weight: u32) -> bool {
    message.contains("Member=PropertiesChanged")
        && message.contains(&format!("Path={path} "))
        && message
            .split_once("STRING \"Weight\";")
            .and_then(|(_, rest)| rest.split_once("UINT32 "))
            .and_then(|(_, n)| n.split_once(';'))
            .is_some_and(|(n, _)| n.trim() == weight.to_string())
}

/// A `PropertiesChanged` of `path` that sets `State` to `state`.
fn state_set(message: &str, path: &str, state: &str) -> bool {
    message.contains("Member=PropertiesChanged")
        && message.contains(&format!("Path={path} "))
        && strings(message).windows(2).any(|w| w == ["State", state])
}

/// A `StateChanged(old, new, reason)` of `path`.
fn state_changed(message: &str, path: &str, old: &str, new: &str, reason: &str) -> bool {
    message.contains("Member=StateChanged")
        && message.contains(&format!("Path={path} "))
        && strings(message) == [old, new, reason]
}

/// Every property of `iface` at `path`, by name (GetAll's dictionary comes in any order).
fn all_properties(path: &str, iface: &str) -> serde_json::Value {
    let out = ok(&[
        "--json=short",
        "call",
        DEST,
        path,
        "org.freedesktop.DBus.Properties",
        "GetAll",
        "s",
        iface,
    ]);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn a_rollback_signals_the_old_values_back() {
    if !in_testbed("a_rollback_signals_the_old_values_back") {
        return;
    }
    let dir = tempdir();
    let daemon = Daemon::start_here_unchecked(&dir);
    #[rustfmt::skip]
    call(ROOT, MANAGER, "CreateFarm", &[
        "sa{sv}", "web", "3",
        "VirtualAddresses", "as", "1", "192.0.2.10",
        "VirtualPorts", "s", "80",
        "Backends", "aa{sv}", "2",
        "2", "Name", "s", "a", "IpAddr", "s", "10.0.0.1",
        "2", "Name", "s", "b", "IpAddr", "s", "10.0.0.2",
    ]);
    let before = [
        all_properties(WEB, "org.nftlbd1.Farm"),
        all_properties(BE_A, BACKEND),
        all_properties(BE_B, BACKEND),
    ];
    assert_eq!(before[1]["data"][0]["Weight"]["data"], 1, "{}", before[1]);
    assert_eq!(before[2]["data"][0]["State"]["data"], "up", "{}", before[2]);
    assert_eq!(create("0"), "o \"/org/nftlbd1/checkpoint/1\"");

    let monitor = Monitor::start(&dir);
    ok(&["set-property", DEST, BE_A, BACKEND, "Weight", "u", "7"]);
    call(BE_B, BACKEND, "SetState", &["s", "drain"]);
    let changed = |t: &str| {
        let s = signals(t);
        s.iter().any(|m| weight_set(m, BE_A, 7))
            && s.iter().any(|m| state_set(m, BE_B, "drain"))
            && s.iter().any(|m| state_changed(m, BE_B, "up", "drain", "api"))
    };
    let seen = monitor.wait_until(changed);
    assert!(changed(&seen), "the changes announced:\n{seen}");
    drop(monitor);

    let monitor = Monitor::start(&dir);
    assert_eq!(
        call(
            ROOT,
            MANAGER,
            "CheckpointRollback",
            &["o", "/org/nftlbd1/checkpoint/1"]
        )
        .trim(),
        "a{su} 1 \"web\" 0"
    );
    let restored = |t: &str| {
        let s = signals(t);
        s.iter().any(|m| weight_set(m, BE_A, 1))
            && s.iter().any(|m| state_set(m, BE_B, "up"))
            && s.iter()
                .any(|m| state_changed(m, BE_B, "drain", "up", "checkpoint-rollback"))
    };
    let seen = monitor.wait_until(restored);
    assert!(restored(&seen), "the rollback announced the old values:\n{seen}");
    assert!(
        !signals(&seen)
            .iter()
            .any(|m| weight_set(m, BE_A, 7) || state_set(m, BE_B, "drain")),
        "nothing but the way back:\n{seen}"
    );
    drop(monitor);

    let after = [
        all_properties(WEB, "org.nftlbd1.Farm"),
        all_properties(BE_A, BACKEND),
        all_properties(BE_B, BACKEND),
    ];
    assert_eq!(after, before, "every property as before the checkpoint");
    daemon.stop();
}
