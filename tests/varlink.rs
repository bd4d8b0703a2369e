//! The varlink front end (`org.nftlbd1` on /run/nftlbd/org.nftlbd1) against real traffic, in the
//! testbed (tools/testbed.sh: the stock polkitd decides for the calling process). Calls go
//! through `nftlbctl varlink METHOD PARAMETERS`, as root, a delegated operator and a stranger.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use common::bus::*;
use common::topo::{Topo, backend_ip, count, vip4};
use serde_json::{Value, json};

const SOCKET: &str = "/run/nftlbd/org.nftlbd1";

/// A varlink call as `user` (root when `None`): (exit status, reply parameters or error text).
fn vl(user: Option<&str>, method: &str, params: Value) -> (i32, String) {
    let u = user.unwrap_or("root");
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={u}"),
            &format!("--regid={u}"),
            "--init-groups",
            "--",
        ])
        .args([
            "nftlbctl",
            "varlink",
            &format!("org.nftlbd1.{method}"),
            &params.to_string(),
        ])
        .output()
        .expect("run nftlbctl varlink");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn ok(method: &str, params: Value) -> Value {
    let (code, text) = vl(None, method, params);
    assert_eq!(code, 0, "{method}: {text}");
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{method}: {e}: {text}"))
}

fn generation() -> u64 {
    ok("GetConfig", json!({}))["generation"].as_u64().unwrap()
}

#[test]
fn varlink_manages_farms_with_traffic_and_polkit() {
    if !in_testbed("varlink_manages_farms_with_traffic_and_polkit") {
        return;
    }
    let t = Topo::new(2);
    let dir = tempdir();
    let _daemon = Daemon::start(&t, &dir, false);
    let (vip, vip2) = (vip4(8), vip4(9));
    let (b0, b1) = (backend_ip(0, false).to_string(), backend_ip(1, false).to_string());

    // What the service is; its interface as the project ships it.
    let (code, info) = vl(None, "", json!({}));
    assert_ne!(code, 0, "{info}");
    let out = Command::new("nftlbctl")
        .args(["varlink", "org.varlink.service.GetInfo"])
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(
        info["interfaces"],
        json!(["org.varlink.service", "org.nftlbd1"]),
        "{info}"
    );
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    let out = Command::new("nftlbctl")
        .args([
            "varlink",
            "org.varlink.service.GetInterfaceDescription",
            "{\"interface\": \"org.nftlbd1\"}",
        ])
        .output()
        .unwrap();
    let desc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        desc["description"].as_str().unwrap(),
        include_str!("../varlink/org.nftlbd1.varlink")
    );

    // A farm with its backends, balancing real traffic.
    let web = json!({"name": "web", "virtual-addresses": [vip.to_string()], "virtual-ports": "80",
        "backends": [{"name": "be0", "ip-addr": b0}, {"name": "be1", "ip-addr": b1}]});
    ok("CreateFarm", json!({ "farm": web }));
    let got = t.tcp_n(vip, 80, 4);
    assert_eq!((count(&got, "be0"), count(&got, "be1")), (2, 2), "{got:?}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let farm = ok("GetFarm", json!({"name": "web"}));
    assert_eq!(farm["farm"]["virtual-ports"], "80");
    let status = &farm["status"];
    let sum: u64 = (0..2)
        .map(|i| status["backends"][i]["packets"].as_u64().unwrap())
        .sum();
    assert!(
        sum >= 4 * 6 && status["packets"].as_u64().unwrap() >= sum,
        "{status}"
    );
    assert_eq!(status["backends"][1]["active"], true);
    // The same change is visible over D-Bus (one service behind both front ends).
    ok(
        "SetBackendState",
        json!({"farm": "web", "backend": "be1", "state": "drain"}),
    );
    let (_, state) = busctl(
        None,
        &[
            "get-property",
            DEST,
            "/org/nftlbd1/farm/web/backend/be1",
            "org.nftlbd1.Backend",
            "State",
        ],
    );
    assert_eq!(state.trim(), "s \"drain\"");
    assert_eq!(count(&t.tcp_n(vip, 80, 4), "be0"), 4);
    ok(
        "UpdateBackend",
        json!({"farm": "web", "backend": "be1", "changes": {"state": "up", "weight": 3}}),
    );
    let got = t.tcp_n(vip, 80, 8);
    assert_eq!((count(&got, "be0"), count(&got, "be1")), (2, 6), "{got:?}");
    // null puts a key back to its default.
    ok(
        "UpdateFarm",
        json!({"name": "web", "changes": {"persistence": ["srcip"], "persist-ttl": 30}}),
    );
    ok(
        "UpdateFarm",
        json!({"name": "web", "changes": {"persistence": null, "persist-ttl": null}}),
    );
    let f = ok("GetFarm", json!({"name": "web"}))["farm"].clone();
    assert!(
        f.get("persistence").is_none() && f.get("persist-ttl").is_none(),
        "{f}"
    );
    ok(
        "AddBackend",
        json!({"farm": "web", "backend": {"name": "be2", "ip-addr": b0, "port": 8080}}),
    );
    assert_eq!(
        ok("GetFarm", json!({"name": "web"}))["status"]["backends"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    ok("RemoveBackend", json!({"farm": "web", "backend": "be2"}));

    // Errors: the varlink error names, with the field; nothing changes.
    let g = generation();
    for (method, params, code, want) in [
        (
            "CreateFarm",
            json!({"farm": {"name": "x", "virtual-addresses": ["10.0.0.300"]}}),
            65,
            "farms[x].virtual-addresses[0]",
        ),
        ("CreateFarm", json!({"farm": web}), 1, "org.nftlbd1.Exists"),
        (
            "UpdateFarm",
            json!({"name": "web", "changes": {"name": "w2"}}),
            65,
            "is changed by renaming",
        ),
        (
            "UpdateFarm",
            json!({"name": "web", "changes": {"colour": "red"}}),
            65,
            "colour",
        ),
        ("DeleteFarm", json!({"name": "nope"}), 1, "org.nftlbd1.NotFound"),
        (
            "GetFarm",
            json!({"nam": "web"}),
            65,
            "org.varlink.service.InvalidParameter",
        ),
        ("Frobnicate", json!({}), 1, "org.varlink.service.MethodNotFound"),
        (
            "ImportConfig",
            json!({"config": {}, "mode": "sideways"}),
            65,
            "is not merge or replace",
        ),
    ] {
        let (c, text) = vl(None, method, params.clone());
        assert_eq!(c, code, "{method} {params}: {text}");
        assert!(text.contains(want), "{method} {params}: {text}");
    }
    assert_eq!(generation(), g);

    // polkit decides for the calling process: opsalice (webops) may set states of web's
    // backends, and nothing else; bob may read only.
    ok(
        "CreateFarm",
        json!({"farm": {"name": "db", "virtual-addresses": [vip2.to_string()], "virtual-ports": "5432",
                        "backends": [{"name": "pg0", "ip-addr": b0}]}}),
    );
    let g = generation();
    let drain = |farm: &str, backend: &str| json!({"farm": farm, "backend": backend, "state": "drain"});
    let (c, text) = vl(Some("opsalice"), "SetBackendState", drain("web", "be0"));
    assert_eq!(c, 0, "{text}");
    let (c, text) = vl(Some("opsalice"), "SetBackendState", drain("db", "pg0"));
    assert_eq!(c, 77, "{text}");
    let (c, text) = vl(
        Some("opsalice"),
        "UpdateBackend",
        json!({"farm": "web", "backend": "be0", "changes": {"weight": 2}}),
    );
    assert_eq!(c, 77, "{text}");
    for (method, params) in [
        ("SetBackendState", drain("web", "be1")),
        ("DeleteFarm", json!({"name": "web"})),
        (
            "ImportConfig",
            json!({"config": {"farms": []}, "mode": "replace"}),
        ),
        ("Reload", json!({})),
        ("CreatePolicy", json!({"policy": {"name": "p"}})),
    ] {
        let (c, text) = vl(Some("bob"), method, params);
        assert_eq!(c, 77, "bob {method}: {text}");
        assert!(text.contains("org.nftlbd1.NotAuthorized"), "{text}");
    }
    let (c, text) = vl(Some("bob"), "GetFarm", json!({"name": "web"}));
    assert_eq!(c, 0, "{text}");
    let (_, perms) = vl(Some("bob"), "GetPermissions", json!({}));
    let perms: Value = serde_json::from_str(perms.trim()).unwrap();
    assert_eq!(perms["permissions"]["org.nftlbd1.farm.manage"], "auth");
    assert_eq!(perms["permissions"]["org.nftlbd1.info"], "yes");
    assert_eq!(generation(), g + 1, "only opsalice's drain landed");
    ok(
        "SetBackendState",
        json!({"farm": "web", "backend": "be0", "state": "up"}),
    );

    // Policies: created, attached, counting, edited in place.
    ok(
        "CreatePolicy",
        json!({"policy": {"name": "bad", "type": "blacklist", "elements": ["10.8.0.2"]}}),
    );
    ok(
        "UpdateFarm",
        json!({"name": "web", "changes": {"policies": ["bad"]}}),
    );
    assert!(t.tcp_tries(vip, 80, 2).iter().all(|g| g.starts_with("ERROR")));
    let counters = ok("GetPolicyCounters", json!({"name": "bad"}));
    assert_eq!(counters["counters"][0]["element"], "10.8.0.2");
    assert!(
        counters["counters"][0]["packets"].as_u64().unwrap() >= 2,
        "{counters}"
    );
    ok(
        "EditPolicyElements",
        json!({"name": "bad", "add": ["192.0.2.0/24"], "remove": ["10.8.0.2"]}),
    );
    assert!(t.tcp_n(vip, 80, 2).iter().all(|g| !g.starts_with("ERROR")));
    let (c, text) = vl(None, "DeletePolicy", json!({"name": "bad"}));
    assert!(c == 65 && text.contains("detach it first"), "{text}");

    // Monitor: one reply per committed change, as it happens.
    let mut mon = Command::new("nftlbctl")
        .args(["varlink", "org.nftlbd1.Monitor", "--more"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::of(mon.stdout.take().unwrap());
    let now: Value = serde_json::from_str(&lines.next()).unwrap();
    assert_eq!(now["generation"].as_u64(), Some(generation()));
    ok("DeleteFarm", json!({"name": "db"}));
    let next = lines.next();
    let _ = mon.kill();
    let _ = mon.wait();
    let ev: Value = serde_json::from_str(&next).unwrap();
    assert_eq!(ev["farms"], json!(["db"]), "{ev}");
    assert_eq!(
        ev["generation"].as_u64(),
        Some(now["generation"].as_u64().unwrap() + 1)
    );

    // Import and reload, whole documents.
    let config = ok("GetConfig", json!({}))["config"].clone();
    ok(
        "ImportConfig",
        json!({"config": {"farms": []}, "mode": "replace"}),
    );
    assert!(t.tcp_tries(vip, 80, 1)[0].starts_with("ERROR"));
    ok("ImportConfig", json!({"config": config, "mode": "merge"}));
    assert_eq!(ok("GetConfig", json!({}))["config"], config);
    ok("Reload", json!({}));
    assert!(t.tcp_n(vip, 80, 2).iter().all(|g| !g.starts_with("ERROR")));

    // At a terminal, nftlbctl starts polkit's agent and allows interactive authentication:
    // bob creates a farm with the administrator's password.
    let (c, text) = vl(Some("bob"), "DeleteFarm", json!({"name": "web"}));
    assert!(
        c == 77 && text.contains("allowInteractiveAuthentication"),
        "{text}"
    );
    let farm = json!({"farm": {"name": "bobs", "virtual-addresses": ["192.0.2.7"], "virtual-ports": "80"}});
    let cmd = format!(
        "nftlbctl varlink org.nftlbd1.CreateFarm {}",
        quote(&farm.to_string())
    );
    let (good, screen) = in_terminal("bob", &cmd, "secret", || {});
    assert!(good && screen.contains("AUTHENTICATION COMPLETE"), "{screen}");
    assert_eq!(ok("ListFarms", json!({}))["farms"], json!(["web", "bobs"]));
    ok("DeleteFarm", json!({"name": "bobs"}));

    // Garbage on the socket: refused, the connection closed, the daemon serving on.
    let mut s = UnixStream::connect(SOCKET).unwrap();
    s.write_all(b"{not json\0").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.contains("org.varlink.service.InvalidParameter"), "{reply}");
    assert_eq!(ok("ListFarms", json!({}))["farms"], json!(["web"]));
}

#[test]
fn the_first_connection_starts_the_daemon() {
    if !in_testbed("the_first_connection_starts_the_daemon") {
        return;
    }
    // As systemd does with nftlbd.socket: the socket is someone else's, the daemon is started
    // with it (LISTEN_FDS) when the first client connects.
    let dir = tempdir();
    let mut activator = Command::new("systemd-socket-activate")
        .args(["-l", SOCKET, "/usr/local/sbin/nftlbd", "--state-dir"])
        .arg(&*dir)
        .args(["--no-bus", "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-socket-activate");
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::path::Path::new(SOCKET).exists() {
        assert!(std::time::Instant::now() < end, "no socket");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let running = || {
        Command::new("pgrep")
            .args(["-x", "nftlbd"])
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(!running(), "nothing runs before the first connection");
    let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(SOCKET).unwrap());
    let before = inode();
    let farms = ok("ListFarms", json!({}));
    assert_eq!(farms["farms"], json!([]));
    assert!(running());
    assert_eq!(inode(), before, "the daemon serves the socket it was given");
    ok(
        "CreateFarm",
        json!({"farm": {"name": "first", "virtual-addresses": ["192.0.2.1"], "virtual-ports": "80"}}),
    );
    // Saved as the change's record in the journal, beside the snapshot.
    let saved = std::fs::read_to_string(dir.join("journal.jsonl")).unwrap();
    assert!(saved.contains("\"first\""), "{saved}");
    let _ = Command::new("pkill").args(["-x", "nftlbd"]).status();
    let _ = activator.kill();
    let _ = activator.wait();
}
