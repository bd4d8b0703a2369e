//! The README's demo, run as a test: real HTTP traffic from a client namespace through nftlbd to
//! three backends; round robin, a backend added and one drained live, and a daemon restart after
//! SIGKILL that changes nothing.

#[test]
fn demo_balances_real_traffic_and_changes_live() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "the demo test needs root");
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(format!("{dir}/tools/demo.sh"))
        .env("NFTLBD_BIN", env!("CARGO_BIN_EXE_nftlbd"))
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
            "client got: backend-1 backend-3",
        ],
        "{text}"
    );
    assert!(
        text.contains("daemon says: nftlbd: the kernel matches the saved state"),
        "{text}"
    );
    assert!(
        text.contains("applied: 7 message(s) in one transaction"),
        "{text}"
    );
}
