//! The daemon on a real system bus with a real polkitd (tools/testbed.sh: private mount and PID
//! namespace, test users, the project's files installed by its install step), driven with
//! `busctl` as root, as a delegated operator and as an unprivileged user, with real traffic
//! through the farm it manages. Needs root.
//!
//! Each test re-runs itself inside the testbed (NFTLBD_IN_TESTBED is set there).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::bus::*;
use common::introspect::members;
use common::topo::{Topo, backend_ip, count, vip4, who};

#[test]
fn farms_over_the_bus_with_polkit_and_traffic() {
    if !in_testbed("farms_over_the_bus_with_polkit_and_traffic") {
        return;
    }
    let t = Topo::new(2);
    let dir = tempdir();
    // systemd's two sockets, played by the test: sd_notify and the journal's.
    let notify_path = dir.join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::fs::create_dir_all("/run/systemd/journal").unwrap();
    let _ = std::fs::remove_file("/run/systemd/journal/socket");
    let journal = std::os::unix::net::UnixDatagram::bind("/run/systemd/journal/socket").unwrap();
    // Read as journald does, all the time (a full socket would block the daemon's logging).
    let entries = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = entries.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = journal.recv(&mut buf) {
            sink.lock().unwrap().push(journal_fields(&buf[..n]));
        }
    });
    let daemon = Daemon::start_with(
        &t,
        &dir,
        false,
        &[
            ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
            ("NFTLBD_LOG", "journal"),
        ],
    );
    let mut buf = vec![0u8; 65536];
    let n = notify.recv(&mut buf).unwrap();
    let ready = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        ready.starts_with("READY=1\nSTATUS=0 farm(s), generation 1, serving org.nftlbd1"),
        "{ready}"
    );
    // Started as root, it keeps CAP_NET_ADMIN (bit 12) effective and nothing else; CAP_SETGID
    // and CAP_SETUID (bits 6 and 7) stay permitted, for exec checks to run as their user.
    assert_eq!(
        daemon.credentials(),
        ("0".into(), "0000000000001000".into(), "00000000000010c0".into())
    );
    let vip = vip4(1);
    let (b0, b1) = (backend_ip(0, false).to_string(), backend_ip(1, false).to_string());
    let g0 = generation();

    // Root creates a farm with its backends in one call.
    let out = call(
        "/org/nftlbd1",
        MANAGER,
        "CreateFarm",
        &[
            "sa{sv}",
            "web",
            "4",
            "VirtualAddresses",
            "as",
            "1",
            &vip.to_string(),
            "VirtualPorts",
            "s",
            "80",
            "Scheduler",
            "s",
            "rr",
            "Backends",
            "aa{sv}",
            "2",
            "2",
            "Name",
            "s",
            "be0",
            "IpAddr",
            "s",
            &b0,
            "2",
            "Name",
            "s",
            "be1",
            "IpAddr",
            "s",
            &b1,
        ],
    );
    assert_eq!(out.trim(), "o \"/org/nftlbd1/farm/web\"");
    assert_eq!(generation(), g0 + 1);
    let got = t.tcp_n(vip, 80, 6);
    assert_eq!((count(&got, "be0"), count(&got, "be1")), (3, 3), "{got:?}");
    // Counters: every packet of a connection, both ways, counted for its backend and its farm;
    // anyone may read them. (The connections' last packets may still be on their way.)
    std::thread::sleep(Duration::from_millis(300));
    let counter = |path: &str, iface: &str, prop: &str| -> u64 {
        let (good, out) = busctl(Some("bob"), &["get-property", DEST, path, iface, prop]);
        assert!(good, "{out}");
        out.trim().trim_start_matches("t ").parse().unwrap()
    };
    let backend = |n: &str, prop: &str| {
        counter(
            &format!("/org/nftlbd1/farm/web/backend/{n}"),
            "org.nftlbd1.Backend",
            prop,
        )
    };
    let farm = |prop: &str| counter("/org/nftlbd1/farm/web", "org.nftlbd1.Farm", prop);
    // Read until a quiet moment (a connection's last packets may arrive between two reads).
    let end = Instant::now() + Duration::from_secs(5);
    let (p0, p1, y0, y1, farm_counts) = loop {
        let (p0, p1) = (backend("be0", "Packets"), backend("be1", "Packets"));
        let (y0, y1) = (backend("be0", "Bytes"), backend("be1", "Bytes"));
        let f = (farm("Packets"), farm("Bytes"));
        if f == (p0 + p1, y0 + y1) || Instant::now() > end {
            break (p0, p1, y0, y1, f);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Each connection: at least SYN, SYN-ACK, ACK, the greeting, a FIN each way.
    assert!(p0 >= 3 * 6 && p1 >= 3 * 6, "{p0} {p1}");
    assert!(y0 >= 40 * p0 && y1 >= 40 * p1, "{y0} {y1}");
    assert_eq!(
        farm_counts,
        (p0 + p1, y0 + y1),
        "the farm counts what its backends count"
    );
    // All of them in one call, as each backend object has them.
    let counters = ok(&[
        "call",
        DEST,
        "/org/nftlbd1/farm/web",
        "org.nftlbd1.Farm",
        "GetBackendCounters",
    ]);
    // Six connections round robin: three given to each backend, counted once each.
    assert_eq!((backend("be0", "NewConnections"), farm("NewConnections")), (3, 6));
    assert_eq!(
        counters.trim(),
        format!("a(sttt) 2 \"be0\" {p0} {y0} 3 \"be1\" {p1} {y1} 3")
    );
    let all = ok(&[
        "call",
        DEST,
        "/org/nftlbd1/farm/web",
        "org.freedesktop.DBus.Properties",
        "GetAll",
        "s",
        "org.nftlbd1.Farm",
    ]);
    assert!(
        all.contains("\"Packets\" t ")
            && all.contains("\"Bytes\" t ")
            && all.contains("\"NewConnections\" t 6"),
        "{all}"
    );
    let tree = ok(&["tree", DEST]);
    assert!(tree.contains("/org/nftlbd1/farm/web/backend/be1"), "{tree}");
    let farm_props = ok(&["introspect", DEST, "/org/nftlbd1/farm/web", "org.nftlbd1.Farm"]);
    assert!(
        farm_props.contains(".VirtualPorts") && farm_props.contains("\"80\""),
        "{farm_props}"
    );

    // A weight set as a property: one transaction, PropertiesChanged, and the traffic follows.
    let monitor = Monitor::start(&dir);
    let be0 = "/org/nftlbd1/farm/web/backend/be0";
    let be1 = "/org/nftlbd1/farm/web/backend/be1";
    ok(&[
        "set-property",
        DEST,
        be1,
        "org.nftlbd1.Backend",
        "Weight",
        "u",
        "3",
    ]);
    let got = t.tcp_n(vip, 80, 8);
    assert_eq!((count(&got, "be0"), count(&got, "be1")), (2, 6), "{got:?}");
    let weight = |m: &str| m.contains("Member=PropertiesChanged") && m.contains("\"Weight\"");
    let seen = monitor.wait_signal(weight);
    assert!(signals(&seen).iter().any(|m| weight(m)), "{seen}");
    // A state change: StateChanged with its reason, and be0 takes nothing more.
    call(be0, "org.nftlbd1.Backend", "SetState", &["s", "off"]);
    let state = |m: &str| {
        m.contains("Member=StateChanged") && ["\"up\"", "\"off\"", "\"api\""].iter().all(|w| m.contains(w))
    };
    let seen = monitor.wait_signal(state);
    assert!(signals(&seen).iter().any(|m| state(m)), "{seen}");
    let got = t.tcp_n(vip, 80, 4);
    assert_eq!(count(&got, "be1"), 4, "{got:?}");
    // The journal got each change with its farm and backend as fields.
    std::thread::sleep(Duration::from_millis(200));
    let entries = entries.lock().unwrap().clone();
    let find = |fields: &[&str]| {
        entries
            .iter()
            .any(|e| fields.iter().all(|f| e.lines().any(|l| l == *f)))
    };
    assert!(
        find(&[
            "MESSAGE=farm created",
            "FARM=web",
            "BACKENDS=2",
            "SYSLOG_IDENTIFIER=nftlbd"
        ]),
        "{entries:?}"
    );
    assert!(
        find(&[
            "MESSAGE=backend state changed",
            "FARM=web",
            "BACKEND=be0",
            "OLD=up",
            "NEW=off",
            "REASON=api"
        ]),
        "{entries:?}"
    );
    // sd_notify's status follows the commits.
    let mut last = String::new();
    while let Ok(n) = {
        notify.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        notify.recv(&mut buf)
    } {
        last = String::from_utf8_lossy(&buf[..n]).to_string();
    }
    assert_eq!(
        last,
        format!(
            "STATUS=1 farm(s), generation {}, serving org.nftlbd1",
            generation()
        )
    );
    let state = ok(&["get-property", DEST, be0, "org.nftlbd1.Backend", "State"]);
    assert_eq!(state.trim(), "s \"off\"");

    // Delegation: webops may set states of farm web's backends, nothing else.
    // (tools/testbed.sh enables the example rules file before polkitd starts.)
    call(
        "/org/nftlbd1",
        MANAGER,
        "CreateFarm",
        &[
            "sa{sv}",
            "db",
            "3",
            "VirtualAddresses",
            "as",
            "1",
            &vip4(2).to_string(),
            "VirtualPorts",
            "s",
            "5432",
            "Backends",
            "aa{sv}",
            "1",
            "2",
            "Name",
            "s",
            "pg0",
            "IpAddr",
            "s",
            &b0,
        ],
    );
    // The new objects are announced by the ObjectManager.
    let added = |path: &'static str| move |m: &str| m.contains("Member=InterfacesAdded") && m.contains(path);
    monitor.wait_signal(added("/org/nftlbd1/farm/db/backend/pg0\""));
    let seen = monitor.wait_signal(added("/org/nftlbd1/farm/db\""));
    for path in ["/org/nftlbd1/farm/db\"", "/org/nftlbd1/farm/db/backend/pg0\""] {
        assert!(signals(&seen).iter().any(|m| added(path)(m)), "{path} in {seen}");
    }
    let set_state = |user: &str, path: &str, state: &str| {
        busctl(
            Some(user),
            &["call", DEST, path, "org.nftlbd1.Backend", "SetState", "s", state],
        )
    };
    let (good, out) = set_state("opsalice", be0, "up");
    assert!(good, "{out}");
    assert_eq!(
        ok(&["get-property", DEST, be0, "org.nftlbd1.Backend", "State"]).trim(),
        "s \"up\""
    );
    let before = export();
    let g = generation();
    let (good, out) = set_state("opsalice", "/org/nftlbd1/farm/db/backend/pg0", "off");
    assert!(!good && refused(&out), "{out}");
    let (good, out) = busctl(
        Some("opsalice"),
        &[
            "call",
            DEST,
            "/org/nftlbd1",
            MANAGER,
            "CreateFarm",
            "sa{sv}",
            "x",
            "0",
        ],
    );
    assert!(!good && refused(&out), "{out}");
    let (good, out) = busctl(
        Some("opsalice"),
        &[
            "set-property",
            DEST,
            be0,
            "org.nftlbd1.Backend",
            "Weight",
            "u",
            "5",
        ],
    );
    // busctl words org.freedesktop.DBus.Error.AccessDenied so, and hides its text (the name and
    // text are checked with gdbus in tests/authorization.rs).
    assert!(
        !good
            && out.contains("Failed to set property Weight on interface org.nftlbd1.Backend: Access denied"),
        "{out}"
    );
    // An unprivileged user changes nothing, by any way in.
    for args in [
        vec!["call", DEST, be0, "org.nftlbd1.Backend", "SetState", "s", "off"],
        vec!["call", DEST, "/org/nftlbd1", MANAGER, "DeleteFarm", "s", "web"],
        vec![
            "call",
            DEST,
            "/org/nftlbd1/farm/web",
            "org.nftlbd1.Farm",
            "Delete",
        ],
        vec![
            "set-property",
            DEST,
            "/org/nftlbd1/farm/web",
            "org.nftlbd1.Farm",
            "VirtualPorts",
            "s",
            "81",
        ],
        vec![
            "call",
            DEST,
            "/org/nftlbd1/farm/web",
            "org.nftlbd1.Farm",
            "AddBackend",
            "sa{sv}",
            "x",
            "1",
            "IpAddr",
            "s",
            "10.1.1.9",
        ],
    ] {
        let (good, out) = busctl(Some("bob"), &args);
        assert!(
            !good && (refused(&out) || out.contains("Access denied")),
            "bob {args:?}: {out}"
        );
    }
    // Anyone may read.
    let (good, out) = busctl(
        Some("bob"),
        &["get-property", DEST, be0, "org.nftlbd1.Backend", "Weight"],
    );
    assert!(good && out.trim() == "u 1", "{out}");
    let perms = busctl(
        Some("bob"),
        &["call", DEST, "/org/nftlbd1", MANAGER, "GetPermissions"],
    )
    .1;
    assert!(
        perms.contains("\"org.nftlbd1.info\" \"yes\"")
            && perms.contains("\"org.nftlbd1.farm.manage\" \"auth\""),
        "{perms}"
    );
    assert_eq!(export(), before);
    assert_eq!(generation(), g);

    // Bad input gets a precise error and changes nothing; the daemon keeps serving.
    let huge = "x".repeat(100_000);
    for (args, want) in [
        (
            vec![
                "call",
                DEST,
                "/org/nftlbd1",
                MANAGER,
                "CreateFarm",
                "sa{sv}",
                "bad",
                "1",
                "Colour",
                "s",
                "red",
            ],
            "farms[bad].Colour: unknown key",
        ),
        (
            vec![
                "call",
                DEST,
                "/org/nftlbd1",
                MANAGER,
                "CreateFarm",
                "sa{sv}",
                "bad",
                "1",
                "PersistTtl",
                "s",
                "long",
            ],
            "PersistTtl takes D-Bus type u, not s",
        ),
        (
            vec![
                "call",
                DEST,
                "/org/nftlbd1",
                MANAGER,
                "CreateFarm",
                "sa{sv}",
                "bad",
                "1",
                "VirtualAddresses",
                "as",
                "1",
                "10.9.0.300",
            ],
            "farms[bad].virtual-addresses",
        ),
        (
            vec![
                "call",
                DEST,
                "/org/nftlbd1",
                MANAGER,
                "CreateFarm",
                "sa{sv}",
                &huge,
                "0",
            ],
            "farms[",
        ),
        (
            vec![
                "call",
                DEST,
                "/org/nftlbd1",
                MANAGER,
                "CreateFarm",
                "sa{sv}",
                "web",
                "0",
            ],
            "already named \"web\"",
        ),
        (
            vec![
                "call",
                DEST,
                be1,
                "org.nftlbd1.Backend",
                "SetState",
                "s",
                "sideways",
            ],
            "farms[web].backends[be1].state: unknown variant `sideways`",
        ),
        (
            vec![
                "set-property",
                DEST,
                be1,
                "org.nftlbd1.Backend",
                "Weight",
                "s",
                "heavy",
            ],
            "Weight takes D-Bus type u, not s",
        ),
        (
            vec![
                "set-property",
                DEST,
                "/org/nftlbd1/farm/web",
                "org.nftlbd1.Farm",
                "Name",
                "s",
                "other",
            ],
            "read-only",
        ),
    ] {
        let (good, out) = busctl(None, &args);
        assert!(!good && out.contains(want), "{args:?}: wanted {want:?} in {out}");
    }
    assert_eq!(export(), before);
    assert_eq!(generation(), g);

    // Several changes in one Update; a new backend; the tree follows.
    call(
        "/org/nftlbd1/farm/web",
        "org.nftlbd1.Farm",
        "AddBackend",
        &["sa{sv}", "be2", "2", "IpAddr", "s", &b0, "Port", "q", "8080"],
    );
    let tree = ok(&["tree", DEST]);
    assert!(tree.contains("/org/nftlbd1/farm/web/backend/be2"), "{tree}");
    call(
        be1,
        "org.nftlbd1.Backend",
        "Update",
        &["a{sv}", "2", "Weight", "u", "1", "State", "s", "off"],
    );
    // be1 is off; be0 (up again) and be2 (be0's host, port 8080) share the traffic.
    let got = t.tcp_n(vip, 80, 4);
    assert!(got.iter().all(|g| g.starts_with("be0@")), "{got:?}");
    assert_eq!(
        got.iter().filter(|g| g.starts_with("be0@8080")).count(),
        2,
        "{got:?}"
    );

    // A restart keeps every object and the traffic.
    let committed = export();
    daemon.stop();
    let got = t.tcp_n(vip, 80, 2);
    assert!(got.iter().all(|g| g.starts_with("be0@")), "{got:?}");
    // Restarted as systemd runs it: its own user, CAP_NET_ADMIN only; polkit answers it about
    // its callers because the actions name it as their owner.
    let status = Command::new("chown")
        .args(["-R", "nftlbd:nftlbd"])
        .arg(&*dir)
        .status()
        .unwrap();
    assert!(status.success());
    let daemon = Daemon::start(&t, &dir, true);
    assert_eq!(
        daemon.credentials(),
        (
            "2950".into(),
            "0000000000001000".into(),
            "0000000000001000".into()
        )
    );
    assert_eq!(export(), committed);
    let farms = call("/org/nftlbd1", MANAGER, "ListFarms", &[]);
    assert!(
        farms.contains("/org/nftlbd1/farm/web") && farms.contains("/org/nftlbd1/farm/db"),
        "{farms}"
    );
    let tree = ok(&["tree", DEST]);
    assert!(tree.contains("/org/nftlbd1/farm/web/backend/be2"), "{tree}");
    let got = t.tcp_n(vip, 80, 2);
    assert!(got.iter().all(|g| g.starts_with("be0@")), "{got:?}");
    let (good, out) = busctl(
        Some("opsalice"),
        &["call", DEST, be1, "org.nftlbd1.Backend", "SetState", "s", "drain"],
    );
    assert!(good, "{out}");
    let (good, out) = busctl(
        Some("bob"),
        &["call", DEST, be1, "org.nftlbd1.Backend", "SetState", "s", "up"],
    );
    assert!(!good && refused(&out), "{out}");
    // Delete: objects go (InterfacesRemoved), the farm no longer answers.
    let monitor = Monitor::start(&dir);
    call("/org/nftlbd1", MANAGER, "DeleteFarm", &["s", "db"]);
    let removed = |m: &str| m.contains("Member=InterfacesRemoved") && m.contains("/org/nftlbd1/farm/db");
    let seen = monitor.wait_signal(removed);
    assert!(signals(&seen).iter().any(|m| removed(m)), "{seen}");
    let (good, _) = busctl(
        None,
        &[
            "get-property",
            DEST,
            "/org/nftlbd1/farm/db",
            "org.nftlbd1.Farm",
            "Name",
        ],
    );
    assert!(!good);
    daemon.stop();
}

/// One journald native-protocol datagram as `KEY=value` lines (values sent length-prefixed, as
/// tracing-journald sends them, are decoded).
fn journal_fields(mut d: &[u8]) -> String {
    let mut out = String::new();
    while !d.is_empty() {
        let Some(end) = d.iter().position(|&c| c == b'=' || c == b'\n') else {
            break;
        };
        let key = String::from_utf8_lossy(&d[..end]).to_string();
        let value;
        if d[end] == b'=' {
            let rest = &d[end + 1..];
            let nl = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            value = String::from_utf8_lossy(&rest[..nl]).to_string();
            d = rest.get(nl + 1..).unwrap_or_default();
        } else {
            let rest = &d[end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            value = String::from_utf8_lossy(&rest[8..8 + len]).to_string();
            d = rest.get(8 + len + 1..).unwrap_or_default();
        }
        out.push_str(&format!("{key}={value}\n"));
    }
    out
}

#[test]
fn the_first_call_starts_the_daemon_through_the_bus() {
    if !in_testbed("the_first_call_starts_the_daemon_through_the_bus") {
        return;
    }
    let (good, _) = busctl(None, &["--auto-start=no", "status", DEST]);
    assert!(!good, "not running before the first call");
    // An unprivileged user's read activates it (the bus's helper starts it as root).
    let (good, out) = busctl(
        Some("bob"),
        &["get-property", DEST, "/org/nftlbd1", MANAGER, "Farms"],
    );
    assert!(good && out.trim() == "ao 0", "{out}");
    let status = ok(&["--auto-start=no", "status", DEST]);
    let pid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("PID="))
        .unwrap()
        .parse()
        .unwrap();
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for want in [
        "CapEff:\t0000000000001000",
        "CapPrm:\t00000000000010c0",
        "CapBnd:\t00000000000010c0",
        "NoNewPrivs:\t1",
    ] {
        assert!(proc_status.contains(want), "{want} in\n{proc_status}");
    }
    // It serves: a farm (with no backend) is created and its state is saved where the unit
    // keeps it.
    call(
        "/org/nftlbd1",
        MANAGER,
        "CreateFarm",
        &[
            "sa{sv}",
            "first",
            "2",
            "VirtualAddresses",
            "as",
            "1",
            "192.0.2.1",
            "VirtualPorts",
            "s",
            "80",
        ],
    );
    // Saved as the change's record in the journal, beside the snapshot.
    let saved = std::fs::read_to_string("/var/lib/nftlbd/journal.jsonl").unwrap();
    assert!(saved.contains("\"first\""), "{saved}");
    // Stopping the daemon we started; the testbed's PID namespace ends it anyway.
    let _ = common::terminate(pid);
}

#[test]
fn many_clients_at_once_all_land_once() {
    if !in_testbed("many_clients_at_once_all_land_once") {
        return;
    }
    let t = Topo::new(1);
    let dir = tempdir();
    let daemon = Daemon::start(&t, &dir, false);
    call(
        "/org/nftlbd1",
        MANAGER,
        "CreateFarm",
        &[
            "sa{sv}",
            "many",
            "2",
            "VirtualAddresses",
            "as",
            "1",
            "10.9.0.7",
            "VirtualPorts",
            "s",
            "80",
        ],
    );
    let g = generation();
    // 24 clients, each adding its own backend, all at once.
    let clients: Vec<_> = (0..24)
        .map(|i| {
            std::thread::spawn(move || {
                let name = format!("b{i}");
                let ip = format!("10.1.1.{}", 10 + i);
                busctl(
                    None,
                    &[
                        "call",
                        DEST,
                        "/org/nftlbd1/farm/many",
                        "org.nftlbd1.Farm",
                        "AddBackend",
                        "sa{sv}",
                        &name,
                        "2",
                        "IpAddr",
                        "s",
                        &ip,
                        "Weight",
                        "u",
                        "2",
                    ],
                )
            })
        })
        .collect();
    for c in clients {
        let (good, out) = c.join().unwrap();
        assert!(good, "{out}");
    }
    assert_eq!(generation(), g + 24, "one commit each");
    let config: serde_json::Value = {
        let out = export();
        // busctl prints `s "<escaped json>"`.
        let quoted = out.trim().strip_prefix("s ").unwrap();
        serde_json::from_str(&serde_json::from_str::<String>(quoted).unwrap()).unwrap()
    };
    let backends = config["farms"][0]["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 24, "none lost, none twice");
    let names: std::collections::BTreeSet<&str> =
        backends.iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 24);
    // The kernel has every one.
    let listing = t.nft(&["list", "ruleset"]);
    for i in 0..24 {
        let ip = format!("10.1.1.{}", 10 + i);
        assert!(listing.contains(&ip), "{ip} in\n{listing}");
    }
    daemon.stop();
}

#[test]
fn policies_and_sessions_over_the_bus() {
    if !in_testbed("policies_and_sessions_over_the_bus") {
        return;
    }
    let t = Topo::new(2);
    let dir = tempdir();
    let daemon = Daemon::start(&t, &dir, false);
    let vip = vip4(3);
    let (b0, b1) = (backend_ip(0, false).to_string(), backend_ip(1, false).to_string());
    let out = call(
        "/org/nftlbd1",
        MANAGER,
        "CreatePolicy",
        &[
            "sa{sv}",
            "bad",
            "2",
            "Type",
            "s",
            "blacklist",
            "Elements",
            "as",
            "2",
            "10.8.0.2",
            "192.0.2.0/24",
        ],
    );
    assert_eq!(out.trim(), "o \"/org/nftlbd1/policy/bad\"");
    let pol = "/org/nftlbd1/policy/bad";
    assert_eq!(
        ok(&["get-property", DEST, "/org/nftlbd1", MANAGER, "Policies"]).trim(),
        "ao 1 \"/org/nftlbd1/policy/bad\""
    );
    call(
        "/org/nftlbd1",
        MANAGER,
        "CreateFarm",
        &[
            "sa{sv}",
            "web",
            "4",
            "VirtualAddresses",
            "as",
            "1",
            &vip.to_string(),
            "VirtualPorts",
            "s",
            "80",
            "Policies",
            "as",
            "1",
            "bad",
            "Backends",
            "aa{sv}",
            "2",
            "2",
            "Name",
            "s",
            "be0",
            "IpAddr",
            "s",
            &b0,
            "2",
            "Name",
            "s",
            "be1",
            "IpAddr",
            "s",
            &b1,
        ],
    );
    // The blacklisted client is refused and counted; anyone may read the counters.
    let got = t.tcp_tries(vip, 80, 2);
    assert!(got.iter().all(|g| g.starts_with("ERROR")), "{got:?}");
    let (good, counters) = busctl(
        Some("bob"),
        &["call", DEST, pol, "org.nftlbd1.Policy", "GetCounters"],
    );
    assert!(good, "{counters}");
    let client = counters.split("\"10.8.0.2\" ").nth(1).unwrap_or_default();
    let packets: u64 = client
        .split_whitespace()
        .next()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    assert!(packets >= 2, "{counters}");
    // Elements change in one transaction each; unknown ones are named.
    let monitor = Monitor::start(&dir);
    call(
        pol,
        "org.nftlbd1.Policy",
        "ReplaceElements",
        &["as", "1", "192.0.2.0/24"],
    );
    let got = t.tcp_n(vip, 80, 2);
    assert_eq!((count(&got, "be0"), count(&got, "be1")), (1, 1), "{got:?}");
    let elements = |m: &str| {
        m.contains("Member=PropertiesChanged")
            && m.contains("/org/nftlbd1/policy/bad")
            && m.contains("\"Elements\"")
    };
    let seen = monitor.wait_signal(elements);
    assert!(signals(&seen).iter().any(|m| elements(m)), "{seen}");
    call(
        pol,
        "org.nftlbd1.Policy",
        "AddElements",
        &["as", "2", "10.8.0.2", "192.0.2.0/24"],
    );
    assert_eq!(
        ok(&["get-property", DEST, pol, "org.nftlbd1.Policy", "Elements"]).trim(),
        "as 2 \"192.0.2.0/24\" \"10.8.0.2\""
    );
    assert!(t.tcp_tries(vip, 80, 1)[0].starts_with("ERROR"));
    let (good, out) = busctl(
        None,
        &[
            "call",
            DEST,
            pol,
            "org.nftlbd1.Policy",
            "RemoveElements",
            "as",
            "1",
            "1.2.3.4",
        ],
    );
    assert!(
        !good && out.contains("policies[bad].elements: \"1.2.3.4\" is not an element"),
        "{out}"
    );
    let (good, out) = busctl(
        None,
        &[
            "call",
            DEST,
            pol,
            "org.nftlbd1.Policy",
            "AddElements",
            "as",
            "1",
            "10.8.0.300",
        ],
    );
    assert!(!good && out.contains("policies[bad]"), "{out}");
    let (good, out) = busctl(
        None,
        &["call", DEST, "/org/nftlbd1", MANAGER, "DeletePolicy", "s", "bad"],
    );
    assert!(
        !good && out.contains("farms[web].policies: attaches policy \"bad\""),
        "{out}"
    );
    let (good, out) = busctl(
        Some("bob"),
        &[
            "call",
            DEST,
            pol,
            "org.nftlbd1.Policy",
            "AddElements",
            "as",
            "1",
            "10.0.0.1",
        ],
    );
    assert!(!good && refused(&out), "{out}");
    // Backend.Active follows the priority tiers: be1 (priority 2) is a standby until be0 fails,
    // and then changes although be1 itself did not.
    let be = |n: &str| format!("/org/nftlbd1/farm/web/backend/{n}");
    let active = |n: &str| ok(&["get-property", DEST, &be(n), "org.nftlbd1.Backend", "Active"]);
    let set = |n: &str, prop: &str, sig: &str, v: &str| {
        ok(&["set-property", DEST, &be(n), "org.nftlbd1.Backend", prop, sig, v]);
    };
    set("be1", "Priority", "u", "2");
    assert_eq!(
        (active("be0").trim(), active("be1").trim()),
        ("b true", "b false")
    );
    let monitor = Monitor::start(&dir);
    set("be0", "State", "s", "down");
    let be1_changed =
        |m: &str| m.contains(&be("be1")) && m.contains("\"Active\"") && m.contains("BOOLEAN true");
    let seen = monitor.wait_signal(be1_changed);
    assert!(signals(&seen).iter().any(|m| be1_changed(m)), "{seen}");
    assert_eq!(
        (active("be0").trim(), active("be1").trim()),
        ("b false", "b true")
    );
    set("be0", "State", "s", "up");
    set("be1", "Priority", "u", "1");
    drop(monitor);

    // The interfaces served are exactly the documented ones (the installed XML files).
    for (path, iface) in [
        ("/org/nftlbd1", "Manager"),
        ("/org/nftlbd1/farm/web", "Farm"),
        ("/org/nftlbd1/farm/web/backend/be0", "Backend"),
        (pol, "Policy"),
    ] {
        let iface = format!("org.nftlbd1.{iface}");
        let file = format!("/usr/share/dbus-1/interfaces/{iface}.xml");
        let documented = std::fs::read_to_string(&file).unwrap_or_default();
        let live = ok(&["introspect", "--xml-interface", DEST, path]);
        let want = members(&documented, &iface);
        assert!(want.len() > 5, "{file}: {want:?}");
        assert_eq!(
            members(&live, &iface),
            want,
            "{iface} at {path} differs from {file}"
        );
        let docs = documented.matches("org.gtk.GDBus.DocString").count();
        assert!(
            docs > want.len(),
            "{file}: every member and the interface documented"
        );
    }
    // Detached, then deleted: the object goes.
    ok(&[
        "set-property",
        DEST,
        "/org/nftlbd1/farm/web",
        "org.nftlbd1.Farm",
        "Policies",
        "as",
        "0",
    ]);
    call("/org/nftlbd1", MANAGER, "DeletePolicy", &["s", "bad"]);
    assert!(!busctl(None, &["get-property", DEST, pol, "org.nftlbd1.Policy", "Name"]).0);

    // Sessions: learnt ones are listed with their expiry and forgotten on request; static ones
    // are pinned and listed without expiry.
    let farm = "/org/nftlbd1/farm/web";
    ok(&[
        "set-property",
        DEST,
        farm,
        "org.nftlbd1.Farm",
        "Persistence",
        "as",
        "1",
        "srcip",
    ]);
    let got = t.tcp_n(vip, 80, 3);
    let first = who(&got[0]);
    assert!(got.iter().all(|g| who(g) == first), "{got:?}");
    let (good, list) = busctl(
        Some("bob"),
        &["call", DEST, farm, "org.nftlbd1.Farm", "ListSessions"],
    );
    assert!(
        good && list.contains("\"Client\" s \"10.8.0.2\"")
            && list.contains(&format!("\"Backend\" s \"{first}\"")),
        "{list}"
    );
    assert!(list.contains("\"Static\" b false"), "{list}");
    call(farm, "org.nftlbd1.Farm", "DeleteSession", &["s", "10.8.0.2"]);
    assert_eq!(
        call(farm, "org.nftlbd1.Farm", "ListSessions", &[]).trim(),
        "aa{sv} 0"
    );
    let other = if first == "be0" { "be1" } else { "be0" };
    call(farm, "org.nftlbd1.Farm", "AddSession", &["ss", "10.8.0.2", other]);
    let got = t.tcp_n(vip, 80, 2);
    assert!(got.iter().all(|g| who(g) == other), "pinned: {got:?}");
    let list = call(farm, "org.nftlbd1.Farm", "ListSessions", &[]);
    assert!(
        list.contains("\"Static\" b true") && list.contains("\"ExpiresMs\" t 0"),
        "{list}"
    );
    let (good, out) = busctl(
        None,
        &[
            "call",
            DEST,
            farm,
            "org.nftlbd1.Farm",
            "AddSession",
            "ss",
            "10.8.0.2",
            other,
        ],
    );
    assert!(!good && out.contains("already pins"), "{out}");
    let (good, out) = busctl(
        None,
        &[
            "call",
            DEST,
            farm,
            "org.nftlbd1.Farm",
            "AddSession",
            "ss",
            "not-an-ip",
            other,
        ],
    );
    assert!(!good && out.contains("farms[web].sessions"), "{out}");
    call(farm, "org.nftlbd1.Farm", "DeleteSession", &["s", "10.8.0.2"]);
    call(farm, "org.nftlbd1.Farm", "FlushSessions", &[]);
    assert_eq!(
        call(farm, "org.nftlbd1.Farm", "ListSessions", &[]).trim(),
        "aa{sv} 0"
    );
    daemon.stop();
}

#[test]
fn an_administrator_authenticates_through_the_callers_agent() {
    if !in_testbed("an_administrator_authenticates_through_the_callers_agent") {
        return;
    }
    let t = Topo::new(1);
    let dir = tempdir();
    let state = dir.join("state");
    std::fs::create_dir(&state).unwrap();
    let owned = Command::new("chown").arg("nftlbd:").arg(&state).status();
    assert!(owned.is_ok_and(|s| s.success()));
    // As systemd runs it: its own user (polkit waits for the agent on its behalf).
    let _daemon = Daemon::start(&t, &state, true);
    let create = |name: &'static str, vip: &'static str| {
        [
            "call",
            DEST,
            "/org/nftlbd1",
            MANAGER,
            "CreateFarm",
            "sa{sv}",
            name,
            "1",
            "VirtualAddresses",
            "as",
            "1",
            vip,
        ]
    };
    // Without the flag, nobody is asked, and the error says what would help.
    let (good, out) = busctl(
        Some("bob"),
        &[
            &["--allow-interactive-authorization=no"],
            &create("web", "192.0.2.1")[..],
        ]
        .concat(),
    );
    assert!(
        !good && out.contains("needs authentication (allow interactive authorization"),
        "{out}"
    );
    // A wrong password: refused, nothing changes.
    let before = generation();
    let (good, out) = busctl_with_agent("bob", "wrong", &dir, &create("web", "192.0.2.1"), || {});
    assert!(!good && out.contains("AUTHENTICATION FAILED"), "{out}");
    assert!(out.contains("org.nftlbd1.farm.manage is not allowed"), "{out}");
    assert_eq!(generation(), before);
    assert_eq!(export().matches("\\\"name\\\"").count(), 0, "{}", export());
    // The administrator's password: the farm is created. While the agent waits for it, the daemon
    // serves other clients (reads and a root's change).
    let (good, out) = busctl_with_agent("bob", "secret", &dir, &create("web", "192.0.2.1"), || {
        let farms = ok(&["get-property", DEST, "/org/nftlbd1", MANAGER, "Farms"]);
        assert_eq!(farms.trim(), "ao 0");
        ok(&create("other", "192.0.2.2"));
    });
    assert!(good && out.contains("AUTHENTICATION COMPLETE"), "{out}");
    assert!(out.contains("o \"/org/nftlbd1/farm/web\""), "{out}");
    assert_eq!(generation(), before + 2);
    let farms = ok(&["get-property", DEST, "/org/nftlbd1", MANAGER, "Farms"]);
    assert_eq!(
        farms.trim(),
        "ao 2 \"/org/nftlbd1/farm/other\" \"/org/nftlbd1/farm/web\""
    );
}

#[test]
fn the_configuration_as_a_whole_and_renames() {
    if !in_testbed("the_configuration_as_a_whole_and_renames") {
        return;
    }
    use serde_json::json;
    let t = Topo::new(2);
    let dir = tempdir();
    let _daemon = Daemon::start(&t, &dir, false);
    let (vip, vip2) = (vip4(4), vip4(5));
    let (b0, b1) = (backend_ip(0, false).to_string(), backend_ip(1, false).to_string());
    let farm = |name: &str, vip: std::net::IpAddr| {
        json!({"name": name, "virtual-addresses": [vip.to_string()], "virtual-ports": "80",
               "backends": [{"name": "be0", "ip-addr": b0}, {"name": "be1", "ip-addr": b1}]})
    };
    let import = |doc: &serde_json::Value, mode: &str| {
        busctl(
            None,
            &[
                "call",
                DEST,
                "/org/nftlbd1",
                MANAGER,
                "ImportConfig",
                "ss",
                &doc.to_string(),
                mode,
            ],
        )
    };
    let farms = || ok(&["call", DEST, "/org/nftlbd1", MANAGER, "ListFarms"]);
    let balanced = |vip| {
        let got = t.tcp_n(vip, 80, 4);
        (count(&got, "be0"), count(&got, "be1")) == (2, 2)
    };

    // Imported documents: merged in, their objects appear, their farms take traffic.
    let (good, out) = import(&json!({"farms": [farm("web", vip)]}), "merge");
    assert!(good, "{out}");
    assert!(balanced(vip));
    let (good, out) = import(&json!({"farms": [farm("db", vip2)]}), "merge");
    assert!(good, "{out}");
    assert_eq!(
        farms().trim(),
        "ao 2 \"/org/nftlbd1/farm/web\" \"/org/nftlbd1/farm/db\""
    );
    assert!(balanced(vip2));

    // Bad documents are refused, naming what is wrong, and change nothing; so is bob.
    let (before, g) = (export(), generation());
    let mut bad_addr = farm("x", vip4(6));
    bad_addr["virtual-addresses"] = json!(["10.0.0.300"]);
    for (doc, mode, want) in [
        (
            json!({"farms": [bad_addr]}),
            "merge",
            "farms[0].virtual-addresses[0]: invalid IP address",
        ),
        (json!({"farms": [farm("web", vip2)]}), "merge", "farms["),
        (json!({"farmz": []}), "replace", "farmz"),
        (
            json!({"farms": []}),
            "sideways",
            "mode: \"sideways\" is not merge or replace",
        ),
    ] {
        let (good, out) = import(&doc, mode);
        assert!(!good && out.contains(want), "{doc} {mode}: {out}");
    }
    let (good, out) = busctl(
        Some("bob"),
        &[
            "call",
            DEST,
            "/org/nftlbd1",
            MANAGER,
            "ImportConfig",
            "ss",
            "{\"farms\": []}",
            "replace",
        ],
    );
    assert!(!good && refused(&out), "{out}");
    assert_eq!((export(), generation()), (before, g));

    // Rename: the objects move, the traffic goes on.
    let monitor = Monitor::start(&dir);
    call(
        "/org/nftlbd1/farm/web",
        "org.nftlbd1.Farm",
        "Rename",
        &["s", "web-2"],
    );
    let moved = "/org/nftlbd1/farm/web_2d2";
    assert_eq!(
        call("/org/nftlbd1", MANAGER, "GetFarm", &["s", "web-2"]).trim(),
        format!("o \"{moved}\"")
    );
    let gone = |m: &str| m.contains("Member=InterfacesRemoved") && m.contains("\"/org/nftlbd1/farm/web\"");
    let came = |m: &str| m.contains("Member=InterfacesAdded") && m.contains(&format!("\"{moved}\""));
    monitor.wait_signal(gone);
    let seen = monitor.wait_signal(came);
    assert!(signals(&seen).iter().any(|m| gone(m)), "{seen}");
    assert!(signals(&seen).iter().any(|m| came(m)), "{seen}");
    let (good, out) = busctl(
        None,
        &[
            "get-property",
            DEST,
            "/org/nftlbd1/farm/web",
            "org.nftlbd1.Farm",
            "Name",
        ],
    );
    assert!(!good, "{out}");
    assert_eq!(
        ok(&["get-property", DEST, moved, "org.nftlbd1.Farm", "Name"]).trim(),
        "s \"web-2\""
    );
    assert!(balanced(vip));
    for (name, want) in [
        ("db", "a farm is already named \"db\""),
        ("no way", "farms[web-2].name"),
    ] {
        let (good, out) = busctl(
            None,
            &["call", DEST, moved, "org.nftlbd1.Farm", "Rename", "s", name],
        );
        assert!(!good && out.contains(want), "{name}: {out}");
    }

    // Replace: only what the document holds remains.
    let (good, out) = import(&json!({"farms": [farm("db", vip2)]}), "replace");
    assert!(good, "{out}");
    assert_eq!(farms().trim(), "ao 1 \"/org/nftlbd1/farm/db\"");
    assert!(t.tcp_tries(vip, 80, 1)[0].starts_with("ERROR"));

    // Reload: the state file, edited by hand, becomes the configuration. A first reload folds
    // the journal into the snapshot, so the file holds every change before it is edited.
    call("/org/nftlbd1", MANAGER, "Reload", &[]);
    let path = dir.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    state["config"]["farms"]
        .as_array_mut()
        .unwrap()
        .push(farm("web", vip));
    std::fs::write(&path, state.to_string()).unwrap();
    call("/org/nftlbd1", MANAGER, "Reload", &[]);
    assert_eq!(
        farms().trim(),
        "ao 2 \"/org/nftlbd1/farm/db\" \"/org/nftlbd1/farm/web\""
    );
    assert!(balanced(vip));
    // A file that does not validate: refused, naming the file and the field; nothing changes.
    let (before, g) = (export(), generation());
    state["config"]["farms"][1]["backends"][0]["ip-addr"] = json!("10.1.1.300");
    std::fs::write(&path, state.to_string()).unwrap();
    let (good, out) = busctl(None, &["call", DEST, "/org/nftlbd1", MANAGER, "Reload"]);
    assert!(
        !good
            && out.contains("state.json")
            && out.contains("config.farms[1].backends[0].ip-addr: invalid IP address"),
        "{out}"
    );
    // One that parses but claims db's service: named by the validation, nothing changes.
    state["config"]["farms"][1]["backends"][0]["ip-addr"] = json!(b0);
    state["config"]["farms"][1]["virtual-addresses"] = json!([vip2.to_string()]);
    std::fs::write(&path, state.to_string()).unwrap();
    let (good, out) = busctl(None, &["call", DEST, "/org/nftlbd1", MANAGER, "Reload"]);
    assert!(
        !good && out.contains("state.json: farms[web]") && out.contains("db"),
        "{out}"
    );
    assert_eq!((export(), generation()), (before, g));
    assert!(balanced(vip) && balanced(vip2));
}
