//! A timed change against real traffic, in the testbed: a backend drained for 1 s takes no new
//! connections, is listed as pending over both front ends, then comes back by itself and the
//! round robin splits again.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::bus::*;
use common::topo::{Topo, backend_ip, count, vip4};
use serde_json::{Value, json};

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{args:?}: {text}");
    text
}

fn varlink(method: &str, params: Value) -> Value {
    let text = run(&[
        "nftlbctl",
        "varlink",
        &format!("org.nftlbd1.{method}"),
        &params.to_string(),
    ]);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{method}: {e}: {text}"))
}

#[test]
fn a_backend_drained_for_a_second_comes_back_by_itself() {
    if !in_testbed("a_backend_drained_for_a_second_comes_back_by_itself") {
        return;
    }
    let t = Topo::new(2);
    let dir = tempdir();
    let _daemon = Daemon::start(&t, &dir, false);
    let vip = vip4(8);
    let (b0, b1) = (backend_ip(0, false).to_string(), backend_ip(1, false).to_string());
    let web = json!({"name": "web", "virtual-addresses": [vip.to_string()], "virtual-ports": "80",
        "scheduler": "rr", "backends": [{"name": "be0", "ip-addr": b0}, {"name": "be1", "ip-addr": b1}]});
    varlink("CreateFarm", json!({ "farm": web }));
    let got = t.tcp_n(vip, 80, 4);
    assert_eq!((count(&got, "be0"), count(&got, "be1")), (2, 2), "{got:?}");

    let started = Instant::now();
    run(&["nftlbctl", "state", "web", "be1", "drain", "--for", "1"]);
    // Pending, over varlink and in `nftlbctl show`.
    let list = varlink("ListTimedChanges", json!({}));
    let pending = &list["changes"];
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(
        (
            &pending[0]["farm"],
            &pending[0]["backend"],
            &pending[0]["key"],
            &pending[0]["restore"],
            &pending[0]["set"]
        ),
        (
            &json!("web"),
            &json!("be1"),
            &json!("state"),
            &json!("up"),
            &json!("drain")
        )
    );
    let shown = run(&["nftlbctl", "show", "web"]);
    assert!(shown.contains("timed changes"), "{shown}");
    // New connections avoid it while it drains.
    let got = t.tcp_n(vip, 80, 4);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "too slow to see the drain: {:?}",
        started.elapsed()
    );
    assert_eq!(count(&got, "be0"), 4, "{got:?}");

    // Back by itself, within a bounded wait.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let f = varlink("GetFarm", json!({"name": "web"}));
        if f["farm"]["backends"][1].get("state").is_none_or(|s| s == "up") {
            break;
        }
        assert!(Instant::now() < deadline, "be1 not restored: {f}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(varlink("ListTimedChanges", json!({})), json!({"changes": []}));
    let got = t.tcp_n(vip, 80, 4);
    assert_eq!((count(&got, "be0"), count(&got, "be1")), (2, 2), "{got:?}");
}
