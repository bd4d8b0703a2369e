//! The README's demo, run as a test: the daemon on a system bus with polkit (in the testbed), a
//! farm created and changed live with busctl while real HTTP traffic goes from a client namespace
//! to three backends; a delegated operator and an unprivileged user; a daemon restart after
//! SIGKILL that changes nothing.

#[test]
fn demo_balances_real_traffic_and_changes_live() {
    assert!(nix::unistd::geteuid().is_root(), "the demo test needs root");
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(format!("{dir}/tools/demo.sh"))
        .env("NFTLBD_BIN", env!("CARGO_BIN_EXE_nftlbd"))
        .env("NFTLBCTL_BIN", env!("CARGO_BIN_EXE_nftlbctl"))
        .output()
        .expect("run tools/demo.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("client got:"))
        .map(str::trim)
        .collect();
    assert_eq!(
        got,
        [
            "client got: backend-1 backend-2 backend-1 backend-2 backend-1 backend-2",
            "client got: backend-1 backend-2 backend-3 backend-1 backend-2 backend-3",
            "client got: backend-1 backend-3 backend-1 backend-3",
            "client got: backend-1 backend-3 backend-3 backend-3 backend-1 backend-3 backend-3 backend-3",
            "client got: backend-1 backend-3 backend-3 backend-3 backend-2",
            "client got: backend-1 backend-3 backend-3 backend-3 backend-2",
        ],
        "{text}"
    );
    for want in [
        // Everything over D-Bus, each answered as it should be.
        "o \"/org/nftlbd1/farm/web\"",
        "o \"/org/nftlbd1/farm/web/backend/b3\"",
        // The delegated operator could drain and enable, not reweigh; bob could do nothing.
        "Failed to set property Weight on interface org.nftlbd1.Backend: Access denied",
        "Call failed: org.nftlbd1.backend.set-state needs authentication",
        "daemon says: nftlbd: running as root with CAP_NET_ADMIN only",
        "daemon says: nftlbd: the kernel matches the saved state",
        "`-/org/nftlbd1/farm/web/backend/b3",
        // nftlbctl shows the farm with its counters.
        "BACKEND  ADDRESS   PORT  WEIGHT  PRIORITY  STATE  ACTIVE  PACKETS  BYTES",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    // ... and the kernel counted the demo's traffic for the farm.
    let traffic = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("traffic"))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(traffic.is_some_and(|p| p > 0), "{text}");
}
