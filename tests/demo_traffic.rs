//! The README's demo, run as a test: real TCP traffic from a client namespace through a balancer
//! whose ruleset the netlink layer writes, to three backends; round robin before and after a live
//! change.

#[test]
fn demo_balances_real_traffic_and_changes_live() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "the demo test needs root");
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(format!("{dir}/tools/demo.sh"))
        .output()
        .expect("run tools/demo.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<&str> = text.lines().filter(|l| l.contains("client got:")).collect();
    assert_eq!(got.len(), 2, "{text}");
    assert_eq!(
        got[0].trim(),
        "client got: backend-1 backend-2 backend-1 backend-2 backend-1 backend-2",
        "{text}"
    );
    assert_eq!(
        got[1].trim(),
        "client got: backend-1 backend-2 backend-3 backend-1 backend-2 backend-3",
        "{text}"
    );
    assert!(
        text.contains("changing live: -0 +1 backends, 2 messages in one transaction"),
        "{text}"
    );
}
