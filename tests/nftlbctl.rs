//! nftlbctl, the administrators' command line, against the daemon on the testbed's system bus
//! (tools/testbed.sh) with real traffic: every command, its output for people and for scripts,
//! its errors and exit statuses, delegation, and polkit's agent when a person is at a terminal.

mod common;

use std::process::Command;

use common::bus::*;
use common::topo::{Topo, backend_ip, count, vip4, who};

/// nftlbctl as `user` (root when `None`): (exit status, stdout, stderr).
fn ctl(user: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new("setpriv");
    let u = user.unwrap_or("root");
    c.args([
        &format!("--reuid={u}"),
        &format!("--regid={u}"),
        "--init-groups",
        "--",
        "nftlbctl",
    ]);
    let out = c.args(args).output().expect("run nftlbctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn done(args: &[&str]) -> String {
    let (code, out, err) = ctl(None, args);
    assert_eq!(code, 0, "nftlbctl {args:?}: {out}{err}");
    out
}

#[test]
fn nftlbctl_manages_farms_with_traffic() {
    if !in_testbed("nftlbctl_manages_farms_with_traffic") {
        return;
    }
    let t = Topo::new(2);
    let dir = tempdir();
    let _daemon = Daemon::start(&t, &dir, false);
    let vip = vip4(7);
    let (b0, b1) = (backend_ip(0, false).to_string(), backend_ip(1, false).to_string());

    // A farm with its backends in one command (one transaction), balancing real traffic.
    let out = done(&[
        "create",
        "web",
        &format!("virtual-addresses={vip}"),
        "virtual-ports=80",
        "scheduler=rr",
        "--backend",
        "be0",
        &format!("ip-addr={b0}"),
        "--backend",
        "be1",
        &format!("ip-addr={b1}"),
    ]);
    assert_eq!(out.trim(), "/org/nftlbd1/farm/web");
    let got = t.tcp_n(vip, 80, 4);
    assert_eq!((count(&got, "be0"), count(&got, "be1")), (2, 2), "{got:?}");
    let list = done(&["list"]);
    let row = list.lines().find(|l| l.starts_with("web ")).unwrap_or_default();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        ["web", "up", "snat", "rr", "tcp", &format!("{vip}:80"), "2/2"],
        "{list}"
    );

    // monitor: anyone may follow the changes, one line each.
    let mut mon = Command::new("setpriv")
        .args([
            "--reuid=bob",
            "--regid=bob",
            "--init-groups",
            "--",
            "nftlbctl",
            "monitor",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("nftlbctl monitor");
    let lines = Lines::of(mon.stdout.take().unwrap());
    assert_eq!(lines.next().trim(), "monitoring org.nftlbd1");
    done(&["state", "web", "be1", "off"]);
    done(&["add-backend", "web", "be2", &format!("ip-addr={b1}"), "port=8080"]);
    done(&["remove-backend", "web", "be2"]);
    done(&["state", "web", "be1", "up"]);
    let mut seen: Vec<String> = Vec::new();
    while !seen.iter().any(|l| l == "backend web/be1: state off -> up (api)") {
        seen.push(lines.next().trim_end().to_string());
    }
    let _ = mon.kill();
    let _ = mon.wait();
    for want in [
        "backend web/be1: state up -> off (api)",
        "backend web/be1: Active=false State=\"off\"",
        "added backend web/be2",
        "removed backend web/be2",
        "backend web/be1: state off -> up (api)",
    ] {
        assert!(seen.iter().any(|l| l == want), "{want:?} in {seen:#?}");
    }

    // show: keys, backends and their counters; --json the same for scripts.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let show = done(&["show", "web"]);
    assert!(show.contains("  virtual-ports      80\n"), "{show}");
    let be0_row: Vec<&str> = show
        .lines()
        .find(|l| l.starts_with("be0 "))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(be0_row[..7], ["be0", &b0, "-", "1", "1", "up", "yes"], "{show}");
    assert!(be0_row[7].parse::<u64>().unwrap() >= 2 * 6, "{show}");
    // Four connections round robin: two given to each (NEW); they were closed: none is
    // established (CONNS, GetBackendConnections).
    assert!(show.contains(" PACKETS  BYTES  NEW  CONNS  CHECKED"), "{show}");
    assert!(show.contains("4 new connections"), "{show}");
    let be1_row: Vec<&str> = show
        .lines()
        .find(|l| l.starts_with("be1 "))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!((be0_row[9], be1_row[9]), ("2", "2"), "{show}");
    assert_eq!(be0_row[10], "0", "{show}");
    let json: serde_json::Value = serde_json::from_str(&done(&["--json", "show", "web"])).unwrap();
    let backends = json["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2, "{json}");
    assert_eq!(backends[1]["ip-addr"], b1.as_str());
    let new: Vec<u64> = backends
        .iter()
        .map(|b| b["new-connections"].as_u64().unwrap())
        .collect();
    assert_eq!(
        (new, &json["new-connections"]),
        (vec![2, 2], &serde_json::json!(4)),
        "{json}"
    );
    let sum: u64 = backends.iter().map(|b| b["packets"].as_u64().unwrap()).sum();
    assert!(json["packets"].as_u64().unwrap() >= sum && sum >= 4 * 6, "{json}");
    let listed: serde_json::Value = serde_json::from_str(&done(&["--json", "list"])).unwrap();
    assert_eq!(listed[0]["name"], "web");
    assert_eq!(listed[0]["active"], 2);

    // Changes: one transaction each, and the traffic follows.
    done(&["state", "web", "be1", "drain"]);
    let got = t.tcp_n(vip, 80, 4);
    assert_eq!(count(&got, "be0"), 4, "{got:?}");
    assert!(done(&["list"]).contains(" 1/2"));
    done(&["set-backend", "web", "be1", "state=up", "weight=3"]);
    let got = t.tcp_n(vip, 80, 8);
    assert_eq!((count(&got, "be0"), count(&got, "be1")), (2, 6), "{got:?}");
    done(&["set", "web", "scheduler=hash", "sched-param=srcip"]);
    let got = t.tcp_n(vip, 80, 6);
    assert!(count(&got, "be0") == 6 || count(&got, "be1") == 6, "{got:?}");
    assert!(done(&["show", "web"]).contains("  sched-param        srcip\n"));

    // Errors: named, with their exit status, and nothing changes.
    let before = done(&["export"]);
    for (args, code, want) in [
        (vec!["set", "web", "colour=red"], 65, "unknown key \"colour\""),
        (
            vec!["set", "web", "virtual-addresses=10.0.0.300"],
            65,
            "farms[web].virtual-addresses[0]: invalid IP address",
        ),
        (
            vec!["set-backend", "web", "be0", "port=99999"],
            65,
            "port: \"99999\" is not a port",
        ),
        (vec!["show", "nope"], 1, "no farm is named \"nope\""),
        (
            vec!["state", "web", "nope", "up"],
            1,
            "farm \"web\" has no backend \"nope\"",
        ),
        (vec!["frobnicate"], 2, "unknown command \"frobnicate\""),
    ] {
        let (c, out, err) = ctl(None, &args);
        assert_eq!(c, code, "{args:?}: {out}{err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // Delegation: opsalice (webops) may drain web's backends; bob may not (77), and without a
    // terminal nobody is asked for a password.
    let (c, out, err) = ctl(Some("opsalice"), &["state", "web", "be1", "drain"]);
    assert_eq!(c, 0, "{out}{err}");
    let (c, _, err) = ctl(Some("bob"), &["state", "web", "be1", "up"]);
    assert_eq!(c, 77, "{err}");
    let (c, _, err) = ctl(Some("opsalice"), &["set-backend", "web", "be1", "weight=1"]);
    assert_eq!(c, 77, "{err}");
    let after: serde_json::Value = serde_json::from_str(&done(&["export"])).unwrap();
    assert_eq!(after["farms"][0]["backends"][1]["state"], "drain");
    assert_eq!(after["farms"][0]["backends"][1]["weight"], 3);
    // A batch: opsalice may set states of web's backends in one call, not weights; a bad
    // change refuses the whole batch.
    let (c, out, err) = ctl(
        Some("opsalice"),
        &["set-backends", "state=up", "web/be1", "web/be0"],
    );
    assert_eq!(c, 0, "{out}{err}");
    let (c, _, err) = ctl(Some("opsalice"), &["set-backends", "weight=2", "web/be1"]);
    assert_eq!(c, 77, "{err}");
    let (c, _, err) = ctl(None, &["set-backends", "state=down", "web/be1", "web/nope"]);
    assert_eq!(c, 1, "{err}");
    assert!(
        err.contains("changes[1]: farm \"web\" has no backend named \"nope\""),
        "{err}"
    );
    assert_eq!(done(&["export"]), before);
    let perms = {
        let (_, out, _) = ctl(Some("bob"), &["permissions"]);
        out
    };
    let farm_manage: Vec<&str> = perms
        .lines()
        .find(|l| l.starts_with("org.nftlbd1.farm.manage "))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(farm_manage, ["org.nftlbd1.farm.manage", "auth"], "{perms}");

    // Backends come and go; sessions; renames.
    let out = done(&["add-backend", "web", "be2", &format!("ip-addr={b0}"), "port=8080"]);
    assert_eq!(out.trim(), "/org/nftlbd1/farm/web/backend/be2");
    assert!(done(&["show", "web"]).contains(&format!("be2      {b0}  8080")));
    done(&["remove-backend", "web", "be2"]);
    done(&["set", "web", "scheduler=rr", "sched-param=", "persistence=srcip"]);
    let got = t.tcp_n(vip, 80, 3);
    let sessions = done(&["sessions", "web"]);
    let row: Vec<&str> = sessions
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row.len(), 3, "{sessions}");
    assert_eq!(row[1], who(&got[0]), "{sessions}");
    assert!(row[2].ends_with('s'), "{sessions}");
    done(&["rename", "web", "www"]);
    assert!(done(&["list"]).contains("\nwww "));
    done(&["rename", "www", "web"]);

    // Export, delete, import: the farm comes back whole and balances again.
    let saved = done(&["export"]);
    let file = dir.join("saved.json");
    std::fs::write(&file, &saved).unwrap();
    done(&["delete", "web"]);
    assert!(t.tcp_tries(vip, 80, 1)[0].starts_with("ERROR"));
    done(&["import", file.to_str().unwrap()]);
    assert_eq!(done(&["export"]), saved);
    assert!(t.tcp_n(vip, 80, 2).iter().all(|g| !g.starts_with("ERROR")));

    // Policies: created, attached, counting what they refuse; elements changed in place.
    let out = done(&[
        "create-policy",
        "bad",
        "type=blacklist",
        "elements=192.0.2.0/24,10.8.0.2",
    ]);
    assert_eq!(out.trim(), "/org/nftlbd1/policy/bad");
    done(&["set", "web", "policies=bad"]);
    assert!(t.tcp_tries(vip, 80, 2).iter().all(|g| g.starts_with("ERROR")));
    let shown = done(&["policy", "bad"]);
    let row: Vec<&str> = shown
        .lines()
        .find(|l| l.starts_with("10.8.0.2 "))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert!(row.len() == 3 && row[1].parse::<u64>().unwrap() >= 2, "{shown}");
    done(&["remove-elements", "bad", "10.8.0.2"]);
    assert!(t.tcp_n(vip, 80, 2).iter().all(|g| !g.starts_with("ERROR")));
    let listed = done(&["policies"]);
    let row: Vec<&str> = listed
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row, ["bad", "blacklist", "ipv4", "1", "0"], "{listed}");
    let (c, _, err) = ctl(None, &["delete-policy", "bad"]);
    assert_eq!(c, 65, "still attached: {err}");
    done(&["set", "web", "policies="]);
    done(&["delete-policy", "bad"]);
    assert_eq!(done(&["policies"]).lines().count(), 1);

    // At a terminal, nftlbctl starts polkit's agent: bob deletes the farm with the
    // administrator's password.
    let (good, screen) = in_terminal("bob", "nftlbctl delete web", "secret", || {});
    assert!(good && screen.contains("AUTHENTICATION COMPLETE"), "{screen}");
    assert_eq!(done(&["list"]).lines().count(), 1, "only the header is left");
}
