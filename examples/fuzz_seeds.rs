//! Writes the fuzz targets' seed inputs into `fuzz/corpus/<target>/` (then `cargo fuzz cmin`
//! keeps what adds coverage): canonical documents, D-Bus bodies as zvariant encodes them,
//! varlink streams, and the datagrams the kernel sends for dumps and monitor events of tables
//! the engine committed. As root (the netlink seeds come from a fresh network namespace):
//! `cargo run --example fuzz_seeds [DIR]`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nftlbd::engine::{Allocation, KernelEngine};
use nftlbd::model::parse_config;
use nftlbd::netlink::Family;
use nftlbd::netlink::fuzzing::{RawMonitor, capture_dumps};
use serde_json::{Value, json};
use zbus::zvariant::serialized::Context;
use zbus::zvariant::{LE, OwnedValue, Value as Variant, to_bytes};

type Failure = Box<dyn std::error::Error>;

fn config() -> Value {
    json!({
        "farms": [
            {"name": "web", "family": "dual", "virtual-addresses": ["192.0.2.10", "2001:db8::10"],
             "virtual-ports": "80,443,8000-8010", "protocol": "tcp", "mode": "snat", "scheduler": "weight",
             "persistence": ["srcip"], "persist-ttl": 300, "mark": 3,
             "backends": [{"name": "a", "ip-addr": "10.0.0.1", "port": 8080, "weight": 3, "mark": 9},
                          {"name": "b", "ip-addr": "2001:db8:1::1", "priority": 2, "state": "drain"},
                          {"name": "c", "ip-addr": "10.0.0.3", "est-connlimit": 4, "source-addr": "192.0.2.200"}],
             "sessions": [{"client": "198.51.100.1", "backend": "a"}]},
            {"name": "sec", "family": "dual", "virtual-addresses": ["192.0.2.1", "2001:db8::1"],
             "policies": ["bl", "wl6"], "new-rtlimit": "10/second", "new-rtlimit-burst": 20, "est-connlimit": 5,
             "limits-ttl": 30, "verdict": ["log", "drop"], "log-prefix": "lb1-", "helper": "sip", "protocol": "all",
             "tcp-strict": true, "rst-rtlimit": "5/second", "rst-rtlimit-burst": 10, "log": ["input", "forward"],
             "log-rtlimit": "10/minute",
             "health-check": {"type": "tcp", "port": 80, "interval": 0.2, "timeout": 0.1, "fall": 2, "rise": 2},
             "backends": [{"name": "x", "ip-addr": "10.0.0.1"}, {"name": "y", "ip-addr": "2001:db8:1::1"}]},
            {"name": "h", "scheduler": "hash", "sched-param": ["srcip", "dstip", "srcport", "dstport", "srcmac", "dstmac"],
             "virtual-addresses": ["192.0.2.6"], "intra-connect": true, "backends": [{"name": "x", "ip-addr": "10.0.0.1"}]},
            {"name": "s", "scheduler": "symhash", "mode": "dnat", "protocol": "udp", "virtual-addresses": ["192.0.2.2"],
             "virtual-ports": "53", "backends": [{"name": "x", "ip-addr": "10.0.0.9"}]},
            {"name": "p", "virtual-addresses": ["192.0.2.5"], "persistence": ["srcip", "srcport", "srcmac"],
             "persist-ttl": 90, "backends": [{"name": "x", "ip-addr": "10.0.0.1"}],
             "sessions": [{"client": "198.51.100.1 . 1000 . 02:00:00:00:00:01", "backend": "x"}]},
            {"name": "l", "mode": "local", "protocol": "sctp", "virtual-addresses": ["192.0.2.4"]}
        ],
        "policies": [
            {"name": "bl", "elements": ["10.1.0.0/16", "10.2.0.1-10.2.0.9", "10.1.255.255", "10.3.0.1"]},
            {"name": "wl6", "type": "whitelist", "family": "ipv6", "elements": ["2001:db8:ffff::/48"]}
        ]
    })
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> Result<(), Failure> {
    let d = dir.join(target);
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join(name), bytes)?;
    Ok(())
}

fn config_seeds(dir: &Path) -> Result<(), Failure> {
    let c = config();
    parse_config(&c.to_string())?;
    write(
        dir,
        "config_json",
        "full",
        serde_json::to_string_pretty(&c)?.as_bytes(),
    )?;
    for (i, farm) in c["farms"].as_array().into_iter().flatten().enumerate() {
        write(
            dir,
            "config_json",
            &format!("farm-{i}"),
            farm.to_string().as_bytes(),
        )?;
        for (j, b) in farm["backends"].as_array().into_iter().flatten().enumerate() {
            write(
                dir,
                "config_json",
                &format!("backend-{i}-{j}"),
                b.to_string().as_bytes(),
            )?;
        }
    }
    for (i, p) in c["policies"].as_array().into_iter().flatten().enumerate() {
        write(
            dir,
            "config_json",
            &format!("policy-{i}"),
            p.to_string().as_bytes(),
        )?;
    }
    Ok(())
}

fn owned(v: Variant<'_>) -> Result<OwnedValue, Failure> {
    Ok(OwnedValue::try_from(v)?)
}

fn dict(pairs: Vec<(&str, Variant<'static>)>) -> Result<HashMap<String, OwnedValue>, Failure> {
    pairs
        .into_iter()
        .map(|(k, v)| Ok((k.to_string(), owned(v)?)))
        .collect()
}

fn dbus_seeds(dir: &Path) -> Result<(), Failure> {
    let ctxt = Context::new_dbus(LE, 0);
    let backend =
        |name: &'static str, ip: &'static str| dict(vec![("Name", name.into()), ("IpAddr", ip.into())]);
    let backends: Vec<HashMap<String, OwnedValue>> =
        vec![backend("a", "10.0.0.1")?, backend("b", "10.0.0.2")?];
    let farm = dict(vec![
        ("VirtualAddresses", Variant::from(vec!["192.0.2.10"])),
        ("VirtualPorts", "80,443".into()),
        ("Scheduler", "weight".into()),
        ("Persistence", Variant::from(vec!["srcip"])),
        ("PersistTtl", 300u32.into()),
        ("Mark", 7u32.into()),
        ("TcpStrict", true.into()),
        ("HealthCheck", r#"{"type": "tcp", "interval": 2}"#.into()),
        ("Backends", Variant::from(backends)),
    ])?;
    let policy = dict(vec![
        ("Type", "blacklist".into()),
        ("Elements", Variant::from(vec!["10.1.0.0/16", "10.3.0.1"])),
    ])?;
    let update = dict(vec![
        ("Scheduler", "hash".into()),
        ("SchedParam", Variant::from(vec!["srcip"])),
        ("LogPrefix", "".into()),
    ])?;
    let backend_settings = dict(vec![
        ("IpAddr", "10.0.0.7".into()),
        ("Port", 8080u32.into()),
        ("Weight", 3u32.into()),
        ("EstConnLimit", 10u32.into()),
    ])?;
    let backend_update = dict(vec![
        ("State", "drain".into()),
        ("Priority", 2u32.into()),
        ("Mark", 0u32.into()),
    ])?;
    let batch = vec![
        (
            "web".to_string(),
            "a".to_string(),
            dict(vec![("State", "drain".into())])?,
        ),
        (
            "web".to_string(),
            "b".to_string(),
            dict(vec![("Weight", 5u32.into()), ("Priority", 1u32.into())])?,
        ),
    ];
    let seeds: Vec<(u8, &str, Vec<u8>)> = vec![
        (0, "create-farm", to_bytes(ctxt, &("web2", &farm))?.to_vec()),
        (1, "create-policy", to_bytes(ctxt, &("bl2", &policy))?.to_vec()),
        (2, "farm-update", to_bytes(ctxt, &update)?.to_vec()),
        (
            3,
            "add-backend",
            to_bytes(ctxt, &("c", &backend_settings))?.to_vec(),
        ),
        (4, "backend-update", to_bytes(ctxt, &backend_update)?.to_vec()),
        (5, "set-backends", to_bytes(ctxt, &batch)?.to_vec()),
        (
            6,
            "farm-set-property",
            to_bytes(ctxt, &("PersistTtl", Variant::from(60u32)))?.to_vec(),
        ),
        (
            7,
            "backend-set-property",
            to_bytes(ctxt, &("Weight", Variant::from(4u32)))?.to_vec(),
        ),
    ];
    for (method, name, body) in seeds {
        let mut data = vec![method];
        data.extend_from_slice(&body);
        write(dir, "dbus_settings", name, &data)?;
    }
    Ok(())
}

fn varlink_seeds(dir: &Path) -> Result<(), Failure> {
    let calls = [
        json!({"method": "org.varlink.service.GetInfo"}),
        json!({"method": "org.varlink.service.GetInterfaceDescription", "parameters": {"interface": "org.nftlbd1"}}),
        json!({"method": "org.nftlbd1.CreateFarm", "parameters": {"farm": config()["farms"][0]}}),
        json!({"method": "org.nftlbd1.UpdateFarm", "parameters": {"name": "web", "changes": {"scheduler": "hash", "persistence": null}}}),
        json!({"method": "org.nftlbd1.RenameFarm", "parameters": {"name": "web", "newName": "www"}}),
        json!({"method": "org.nftlbd1.AddBackend", "parameters": {"farm": "web", "backend": {"name": "c", "ip-addr": "10.0.0.3"}}}),
        json!({"method": "org.nftlbd1.UpdateBackend", "parameters": {"farm": "web", "backend": "a", "changes": {"weight": 4, "port": null}}}),
        json!({"method": "org.nftlbd1.SetBackendState", "parameters": {"farm": "web", "backend": "a", "state": "drain"}}),
        json!({"method": "org.nftlbd1.SetBackendHealth", "parameters": {"farm": "web", "backend": "b", "health": "failing", "reason": "disk full"}}),
        json!({"method": "org.nftlbd1.SetBackends", "parameters": {"changes": [{"farm": "web", "backend": "a", "weight": 2}, {"farm": "web", "backend": "b", "state": "off", "priority": 3}]}}),
        json!({"method": "org.nftlbd1.RemoveBackend", "parameters": {"farm": "web", "backend": "b"}}),
        json!({"method": "org.nftlbd1.AddSession", "parameters": {"farm": "web", "client": "198.51.100.7", "backend": "a"}}),
        json!({"method": "org.nftlbd1.CreatePolicy", "parameters": {"policy": config()["policies"][0]}}),
        json!({"method": "org.nftlbd1.EditPolicyElements", "parameters": {"name": "bl", "add": ["10.9.0.0/16"], "remove": ["192.0.2.0/24"]}}),
        json!({"method": "org.nftlbd1.ImportConfig", "parameters": {"config": config(), "mode": "merge"}}),
        json!({"method": "org.nftlbd1.DeleteFarm", "parameters": {"name": "web"}, "oneway": true}),
        json!({"method": "org.nftlbd1.GetFarm", "parameters": {"name": "web", "allowInteractiveAuthentication": true}}),
    ];
    let mut all = vec![64u8];
    for (i, c) in calls.iter().enumerate() {
        let mut one = vec![255u8];
        one.extend_from_slice(c.to_string().as_bytes());
        one.push(0);
        write(dir, "varlink_stream", &format!("call-{i:02}"), &one)?;
        all.extend_from_slice(&one[1..]);
    }
    write(dir, "varlink_stream", "stream", &all)?;
    Ok(())
}

fn netlink_seeds(dir: &Path) -> Result<(), Failure> {
    let config = parse_config(&config().to_string())?;
    let datagrams = std::thread::spawn(move || -> Result<Vec<Vec<u8>>, String> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare: {e}"))?;
        let monitor = RawMonitor::open().map_err(|e| e.to_string())?;
        let mut engine = KernelEngine::open().map_err(|e| e.to_string())?;
        engine
            .reconcile(config, Allocation::default())
            .map_err(|e| e.to_string())?;
        let mut out = monitor.drain().map_err(|e| e.to_string())?;
        for family in [Family::Ip, Family::Ip6] {
            out.extend(capture_dumps(family, "nftlbd").map_err(|e| e.to_string())?);
        }
        Ok(out)
    })
    .join()
    .map_err(|_| "the capture thread panicked")??;
    for (i, d) in datagrams.iter().enumerate() {
        write(dir, "netlink_datagram", &format!("kernel-{i:04}"), d)?;
    }
    Ok(())
}

fn main() -> Result<(), Failure> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("fuzz/corpus"));
    config_seeds(&dir)?;
    dbus_seeds(&dir)?;
    varlink_seeds(&dir)?;
    netlink_seeds(&dir)?;
    Ok(())
}
