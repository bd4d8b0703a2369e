//! A throwaway network for traffic tests: a client, a balancer and N backends, each in its own
//! named network namespace, joined by veth pairs, with IPv4 and IPv6. Backends run small servers
//! (threads of the test process inside their namespace) that answer with their own name.
//!
//! ```text
//! client 10.8.0.2 fd08::2 ── l0 [balancer] b<i> ── backend i: 10.1.<i>.2 fd01:<i>::2
//!   VIPs 10.9.0.0/24 and fd09::/64 are routed through the balancer.
//! ```
//! Servers on every backend: TCP 80 and 8080 (`<name>@<port> <peer address>`, then echo each line),
//! UDP 53 (answers `<name> <peer address>`).
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run command");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sysctl(ns: &str, setting: &str) {
    sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", setting]);
}

/// Connections from the client to `vip:port`, one after the other, until `stop` is set; joined,
/// the handle gives every answer.
pub fn load(
    t: &Topo,
    vip: IpAddr,
    port: u16,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<Vec<String>>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let h = in_ns(&t.client, move || {
        let mut answers = Vec::new();
        while !s.load(Ordering::Relaxed) {
            answers.push(tcp_hello(SocketAddr::new(vip, port)));
        }
        answers
    });
    (stop, h)
}

/// Asserts that a load run made enough connections and none failed.
pub fn assert_all_answered(answers: &[String]) {
    let failed: Vec<&String> = answers.iter().filter(|a| a.starts_with("ERROR")).collect();
    assert!(
        answers.len() > 20 && failed.is_empty(),
        "{} connections, failed: {failed:?}",
        answers.len()
    );
}

/// Runs `f` on a new thread inside the named network namespace.
pub fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        enter(&path);
        f()
    })
}

fn enter(path: &str) {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // Only this thread's network namespace changes.
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
}

/// Runs `f` inside the namespace and waits for it.
pub fn run_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    in_ns(ns, f)
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

pub struct Topo {
    pub client: String,
    pub lb: String,
    pub backends: Vec<String>,
    names: Vec<String>,
    lb_serving: std::cell::Cell<bool>,
}

pub fn vip4(n: u8) -> IpAddr {
    IpAddr::from([10, 9, 0, n])
}

pub fn vip6(n: u16) -> IpAddr {
    IpAddr::from([0xfd09, 0, 0, 0, 0, 0, 0, n])
}

/// Address of backend `i` (0-based) in the family of `v6`.
pub fn backend_ip(i: usize, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::from([0xfd01, i as u16 + 1, 0, 0, 0, 0, 0, 2])
    } else {
        IpAddr::from([10, 1, i as u8 + 1, 2])
    }
}

pub fn client_ip(v6: bool) -> IpAddr {
    if v6 {
        "fd08::2".parse().unwrap()
    } else {
        "10.8.0.2".parse().unwrap()
    }
}

impl Topo {
    /// Builds the network with `n` backends named `be0`, `be1`, …
    pub fn new(n: usize) -> Topo {
        assert!(nix::unistd::geteuid().is_root(), "traffic tests need root");
        let id = format!("{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let client = format!("nlbt-{id}-c");
        let lb = format!("nlbt-{id}-lb");
        let backends: Vec<String> = (0..n).map(|i| format!("nlbt-{id}-b{i}")).collect();
        let mut names = vec![client.clone(), lb.clone()];
        names.extend(backends.iter().cloned());
        let t = Topo {
            client,
            lb,
            backends,
            names,
            lb_serving: std::cell::Cell::new(false),
        };
        for ns in &t.names {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            // No duplicate address detection: link-local addresses would stay tentative for a
            // second or two, and neighbour discovery (so the first IPv6 flows) would stall.
            for conf in ["all", "default"] {
                sysctl(ns, &format!("net.ipv6.conf.{conf}.accept_dad=0"));
            }
        }
        let (c, lb) = (t.client.as_str(), t.lb.as_str());
        sh(&[
            "ip", "-n", lb, "link", "add", "l0", "type", "veth", "peer", "name", "c0", "netns", c,
        ]);
        for (ns, dev, a4, a6) in [
            (c, "c0", "10.8.0.2/24", "fd08::2/64"),
            (lb, "l0", "10.8.0.1/24", "fd08::1/64"),
        ] {
            sh(&["ip", "-n", ns, "addr", "add", a4, "dev", dev]);
            sh(&["ip", "-n", ns, "addr", "add", a6, "dev", dev, "nodad"]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        sh(&["ip", "-n", c, "route", "add", "default", "via", "10.8.0.1"]);
        sh(&["ip", "-n", c, "-6", "route", "add", "default", "via", "fd08::1"]);
        sysctl(lb, "net.ipv4.ip_forward=1");
        sysctl(lb, "net.ipv6.conf.all.forwarding=1");
        for (i, b) in t.backends.iter().enumerate() {
            let dev = format!("b{i}");
            sh(&[
                "ip", "-n", lb, "link", "add", &dev, "type", "veth", "peer", "name", "eth0", "netns", b,
            ]);
            let (l4, l6) = (format!("10.1.{}.1/24", i + 1), format!("fd01:{:x}::1/64", i + 1));
            let (b4, b6) = (
                format!("{}/24", backend_ip(i, false)),
                format!("{}/64", backend_ip(i, true)),
            );
            sh(&["ip", "-n", lb, "addr", "add", &l4, "dev", &dev]);
            sh(&["ip", "-n", lb, "addr", "add", &l6, "dev", &dev, "nodad"]);
            sh(&["ip", "-n", lb, "link", "set", &dev, "up"]);
            sh(&["ip", "-n", b, "addr", "add", &b4, "dev", "eth0"]);
            sh(&["ip", "-n", b, "addr", "add", &b6, "dev", "eth0", "nodad"]);
            sh(&["ip", "-n", b, "link", "set", "eth0", "up"]);
            sh(&[
                "ip",
                "-n",
                b,
                "route",
                "add",
                "default",
                "via",
                &format!("10.1.{}.1", i + 1),
            ]);
            sh(&[
                "ip",
                "-n",
                b,
                "-6",
                "route",
                "add",
                "default",
                "via",
                &format!("fd01:{:x}::1", i + 1),
            ]);
            serve(b, &format!("be{i}"));
        }
        t
    }

    /// Adds an address to the balancer's loopback (for `local` farms); the balancer's own servers
    /// (started on the first call) answer on it.
    pub fn serve_locally(&self, vip: IpAddr, name: &str) {
        let plen = if vip.is_ipv6() { "128" } else { "32" };
        sh(&[
            "ip",
            "-n",
            &self.lb,
            "addr",
            "add",
            &format!("{vip}/{plen}"),
            "dev",
            "lo",
        ]);
        if !self.lb_serving.replace(true) {
            serve(&self.lb, name);
        }
    }

    /// Runs `nftlbd` with arguments inside the balancer's namespace.
    pub fn nftlbd(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.lb, env!("CARGO_BIN_EXE_nftlbd")])
            .args(args)
            .output()
            .expect("run nftlbd")
    }

    /// `nft` inside the balancer's namespace.
    pub fn nft(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.lb, "nft"])
            .args(args)
            .output()
            .expect("run nft");
        assert!(
            out.status.success(),
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// One TCP request from the client: the answering backend's name.
    pub fn tcp(&self, vip: IpAddr, port: u16) -> String {
        run_in(&self.client, move || tcp_hello(SocketAddr::new(vip, port)))
    }

    /// `n` quick TCP attempts (300 ms each); the answers in order.
    pub fn tcp_tries(&self, vip: IpAddr, port: u16, n: usize) -> Vec<String> {
        run_in(&self.client, move || {
            (0..n)
                .map(|_| tcp_hello_within(SocketAddr::new(vip, port), Duration::from_millis(300)))
                .collect()
        })
    }

    /// `n` TCP requests; the answers in order.
    pub fn tcp_n(&self, vip: IpAddr, port: u16, n: usize) -> Vec<String> {
        run_in(&self.client, move || {
            (0..n).map(|_| tcp_hello(SocketAddr::new(vip, port))).collect()
        })
    }

    /// `n` UDP requests, each from a new socket (a new flow); the answers in order.
    pub fn udp_n(&self, vip: IpAddr, port: u16, n: usize) -> Vec<String> {
        run_in(&self.client, move || {
            (0..n).map(|_| udp_ask(SocketAddr::new(vip, port))).collect()
        })
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// The answering backend's name only (first word of the greeting).
/// The answering backend's name only (greetings read `<name>@<port> <peer address>`).
pub fn who(greeting: &str) -> String {
    let first = greeting.split_whitespace().next().unwrap_or("");
    first.split('@').next().unwrap_or("").to_string()
}

/// How many of `answers` came from backend `name`.
pub fn count(answers: &[String], name: &str) -> usize {
    answers.iter().filter(|a| who(a) == name).count()
}

pub fn tcp_hello(addr: SocketAddr) -> String {
    tcp_hello_within(addr, Duration::from_secs(2))
}

/// A TCP request that gives up after `timeout` (for connections expected to be refused: a
/// dropped SYN would otherwise wait for retransmissions).
pub fn tcp_hello_within(addr: SocketAddr, timeout: Duration) -> String {
    match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => {
            s.set_read_timeout(Some(Duration::from_secs(2))).ok();
            let mut line = String::new();
            match BufReader::new(s).read_line(&mut line) {
                Ok(_) => line.trim().to_string(),
                Err(e) => format!("ERROR read: {e}"),
            }
        }
        Err(e) => format!("ERROR connect: {e}"),
    }
}

pub fn udp_ask(addr: SocketAddr) -> String {
    let bind: SocketAddr = if addr.is_ipv6() {
        "[::]:0".parse().unwrap()
    } else {
        "0.0.0.0:0".parse().unwrap()
    };
    let s = UdpSocket::bind(bind).expect("udp bind");
    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
    if let Err(e) = s.send_to(b"who\n", addr) {
        return format!("ERROR send: {e}");
    }
    let mut buf = [0u8; 256];
    match s.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).trim().to_string(),
        Err(e) => format!("ERROR recv: {e}"),
    }
}

/// A connection held open: greeting read, then lines echoed.
pub struct Held {
    pub greeting: String,
    stream: BufReader<TcpStream>,
}

impl Held {
    pub fn open(ns: &str, addr: SocketAddr) -> Held {
        run_in(ns, move || Held::open_here(addr))
    }

    /// Opens from the calling thread's namespace.
    pub fn open_here(addr: SocketAddr) -> Held {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(3))).ok();
        let mut stream = BufReader::new(s);
        let mut greeting = String::new();
        stream.read_line(&mut greeting).expect("greeting");
        Held {
            greeting: greeting.trim().to_string(),
            stream,
        }
    }

    /// Sends a line and reads its echo: proves the connection still works.
    pub fn echo(&mut self, text: &str) -> std::io::Result<String> {
        self.stream.get_mut().write_all(format!("{text}\n").as_bytes())?;
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        Ok(line.trim().to_string())
    }
}

pub fn serve(ns: &str, name: &str) {
    for port in [80u16, 8080] {
        let name = name.to_string();
        in_ns(ns, move || {
            let l = TcpListener::bind(("::", port)).expect("bind tcp");
            for s in l.incoming().flatten() {
                let name = name.clone();
                std::thread::spawn(move || {
                    let peer = s
                        .peer_addr()
                        .map(|a| a.ip().to_canonical().to_string())
                        .unwrap_or_default();
                    let mut s = s;
                    if writeln!(s, "{name}@{port} {peer}").is_err() {
                        return;
                    }
                    let mut r = BufReader::new(s.try_clone().expect("clone"));
                    let mut line = String::new();
                    while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                        if s.write_all(line.as_bytes()).is_err() {
                            break;
                        }
                        line.clear();
                    }
                });
            }
        });
    }
    let name = name.to_string();
    // The server thread reports its bind; a failure fails the test instead of hanging it.
    let (ready, bound) = std::sync::mpsc::channel();
    in_ns(ns, move || {
        let s = match UdpSocket::bind(("::", 53)) {
            Ok(s) => {
                let _ = ready.send(Ok(()));
                s
            }
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        let mut buf = [0u8; 512];
        while let Ok((_, peer)) = s.recv_from(&mut buf) {
            let _ = s.send_to(format!("{name} {}", peer.ip().to_canonical()).as_bytes(), peer);
        }
    });
    match bound.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => {}
        other => panic!("udp server in {ns}: {other:?}"),
    }
    // Let the TCP listeners bind before the first connection.
    for _ in 0..50 {
        let ok = run_in(ns, || {
            let mut buf = [0u8; 1];
            TcpStream::connect(("::1", 8080))
                .map(|mut s| s.read(&mut buf).is_ok())
                .unwrap_or(false)
        });
        if ok {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
