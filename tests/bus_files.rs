//! The project's D-Bus and polkit files, installed by the real install step and read by the real
//! `dbus-daemon --system` and `polkitd` in a private namespace (tools/testbed.sh). Needs root.

use std::process::Command;

/// Runs one check script in the testbed; its report is printed, a failed check fails the test.
fn testbed(script: &str) {
    let out = Command::new("tools/testbed.sh")
        .arg(script)
        .env("NFTLBD_BIN", env!("CARGO_BIN_EXE_nftlbd"))
        .env("NFTLBCTL_BIN", env!("CARGO_BIN_EXE_nftlbctl"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run tools/testbed.sh");
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "testbed failed:\n{report}");
    assert!(report.contains(" checks, 0 failed"), "{report}");
}

#[test]
fn polkit_actions_delegation_and_bus_policy() {
    assert!(nix::unistd::geteuid().is_root(), "needs root");
    testbed("tests/bus/polkit_actions.sh");
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    assert!(nix::unistd::geteuid().is_root(), "needs root");
    testbed("tests/bus/systemd_unit.sh");
}
