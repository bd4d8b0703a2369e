//! Farm files with the real daemon: `nftlbd run --farms-dir` loads them at start, SIGHUP
//! reloads the directory, and a farm's or policy's origin is its file's path. Needs root.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::topo::*;
use serde_json::{Value, json};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nftlbd-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A farm on `vip` port 80 over backends `0..n`.
fn farm(name: &str, vip: u8, n: usize) -> Value {
    let b: Vec<_> = (0..n)
        .map(|i| json!({"name": format!("be{i}"), "ip-addr": backend_ip(i, false)}))
        .collect();
    json!({"name": name, "virtual-addresses": [vip4(vip)], "virtual-ports": "80", "backends": b})
}

fn write(path: &Path, doc: Value) {
    std::fs::write(path, doc.to_string()).unwrap();
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One varlink call through `nftlbctl varlink`: its reply's parameters, or the error text.
fn call(socket: &Path, method: &str, params: Value) -> Result<Value, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_nftlbctl"))
        .env("NFTLBD_VARLINK", socket)
        .args(["varlink", &format!("org.nftlbd1.{method}"), &params.to_string()])
        .output()
        .expect("run nftlbctl varlink");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_str(text.trim()).map_err(|e| format!("{e}: {text}"))
}

fn origin(socket: &Path, farm: &str) -> Result<String, String> {
    let reply = call(socket, "GetFarm", json!({"name": farm}))?;
    Ok(reply["status"]["origin"].as_str().unwrap_or_default().to_string())
}

fn policy_origin(socket: &Path, policy: &str) -> Result<String, String> {
    let reply = call(socket, "GetPolicy", json!({"name": policy}))?;
    Ok(reply["origin"].as_str().unwrap_or_default().to_string())
}

#[test]
fn sighup_reloads_the_farms_directory_and_origin_shows_the_file() {
    let t = Topo::new(2);
    let state = temp_dir("files-state");
    let farms = temp_dir("files-farms");
    let socket = state.join("varlink.sock");
    let web = farms.join("web.json");
    let fw = json!({"name": "fw", "elements": ["10.8.0.2"]});
    write(&web, json!({"farms": [farm("web", 10, 1)], "policies": [fw]}));
    let mut child = common::nftlbd_in(&t.lb, &state)
        .arg("--farms-dir")
        .arg(&farms)
        .arg("--varlink")
        .arg(&socket)
        .args(["--no-bus", "run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nftlbd run");
    let line = common::first_line_within(child.stdout.take().unwrap(), common::READY_WITHIN);
    assert_eq!(line.trim(), "READY");
    let daemon = Daemon(child);

    // Loaded at start, and balancing.
    assert_eq!(origin(&socket, "web"), Ok(web.display().to_string()));
    assert_eq!(who(&t.tcp(vip4(10), 80)), "be0");
    // A runtime farm beside it.
    let rt = farm("rt", 12, 1);
    call(&socket, "CreateFarm", json!({"farm": rt})).unwrap();
    assert_eq!(origin(&socket, "rt"), Ok("runtime".to_string()));
    assert_eq!(policy_origin(&socket, "fw"), Ok(web.display().to_string()));
    let rtp = json!({"name": "rtp", "elements": ["10.8.0.3"]});
    call(&socket, "CreatePolicy", json!({"policy": rtp})).unwrap();
    assert_eq!(policy_origin(&socket, "rtp"), Ok("runtime".to_string()));

    // A second file, web's file edited to its second backend only, and a bad file.
    let api = farms.join("api.json");
    write(&api, json!({"farms": [farm("api", 11, 2)]}));
    let mut edited = farm("web", 10, 2);
    edited["backends"].as_array_mut().unwrap().remove(0);
    write(&web, json!({"farms": [edited]}));
    std::fs::write(
        farms.join("bad.json"),
        "{\"farms\": [{\"name\": \"x\", \"port\": 1}]}",
    )
    .unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while origin(&socket, "api").is_err() {
        assert!(Instant::now() < end, "api never loaded");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(origin(&socket, "api"), Ok(api.display().to_string()));
    assert_eq!(origin(&socket, "rt"), Ok("runtime".to_string()));
    let names = call(&socket, "ListFarms", json!({})).unwrap();
    assert_eq!(names, json!({"farms": ["web", "rt", "api"]}));
    assert_eq!(who(&t.tcp(vip4(10), 80)), "be1");

    // The varlink Reload says which file was refused, and why.
    let reply = call(&socket, "Reload", json!({})).unwrap();
    let refused = reply["refused"].as_array().expect("a list of refusals");
    assert_eq!(refused.len(), 1, "{reply}");
    assert_eq!(
        refused[0]["field"],
        json!(format!("{}: farms[0].port", farms.join("bad.json").display())),
        "{reply}"
    );

    // The file removed: its farm goes at the next SIGHUP.
    std::fs::remove_file(&api).unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while origin(&socket, "api").is_ok() {
        assert!(Instant::now() < end, "api never went");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(daemon);
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_dir_all(&farms);
}
