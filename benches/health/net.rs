//! The network: the bench's own namespace holds the backends, the daemon gets one of its own
//! joined by a veth pair. The backends are one listening socket: the bench's namespace routes
//! a whole /16 to itself (`ip route add local`), so a socket bound to 0.0.0.0 accepts
//! connections to any of its 65,536 addresses. No address is added and one descriptor serves
//! every backend.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::OwnedFd;
use std::process::Command;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen, setsockopt, socket, sockopt,
};

use crate::error::{BenchError, Result};

/// The first backend address: backend `i` is this plus `i`.
pub const FIRST_BACKEND: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 0);
pub const BACKEND_PORT: u16 = 8080;
const LB_ADDR: &str = "10.100.0.1/24";
const BE_ADDR: &str = "10.100.0.2/24";
const BE_GATEWAY: &str = "10.100.0.2";
const BACKEND_NET: &str = "10.200.0.0/16";

/// Runs `cmd` with `args` and checks its exit status.
pub fn run(cmd: &str, args: &[&str]) -> Result<()> {
    let command = format!("{cmd} {}", args.join(" "));
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(BenchError::io(command.clone()))?;
    if !out.status.success() {
        return Err(BenchError::Command {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

/// The daemon's namespace, deleted on drop (with the veth end it holds).
pub struct Netns(pub String);

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "del", &self.0]) {
            eprintln!("health bench: {e}");
        }
    }
}

/// Moves the bench into a new network namespace (the backends' side) and builds the daemon's,
/// routed to the backends' /16. Call before any thread is started.
pub fn build(name: String) -> Result<Netns> {
    // SAFETY: no other thread exists yet (unshare of the network namespace applies to the
    // calling thread only, so it must be the only one); it has no memory effects.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(BenchError::io("unshare(CLONE_NEWNET)")(
            std::io::Error::last_os_error(),
        ));
    }
    // Per namespace: the accept queue's bound, set before the socket listens.
    for (path, value) in [
        ("/proc/sys/net/core/somaxconn", "65535"),
        ("/proc/sys/net/ipv4/tcp_max_syn_backlog", "65535"),
    ] {
        std::fs::write(path, value).map_err(BenchError::io(format!("write {path}")))?;
    }
    run("ip", &["netns", "add", &name])?;
    let ns = Netns(name);
    let lb = |args: &[&str]| {
        let mut all = vec!["-n", ns.0.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    };
    run("ip", &["link", "set", "lo", "up"])?;
    run(
        "ip",
        &[
            "link", "add", "hc-be", "type", "veth", "peer", "name", "hc-lb", "netns", &ns.0,
        ],
    )?;
    run("ip", &["addr", "add", BE_ADDR, "dev", "hc-be"])?;
    run("ip", &["link", "set", "hc-be", "up"])?;
    run("ip", &["route", "add", "local", BACKEND_NET, "dev", "lo"])?;
    lb(&["link", "set", "lo", "up"])?;
    lb(&["addr", "add", LB_ADDR, "dev", "hc-lb"])?;
    lb(&["link", "set", "hc-lb", "up"])?;
    lb(&["route", "add", BACKEND_NET, "via", BE_GATEWAY])?;
    Ok(ns)
}

/// The socket every backend is: 0.0.0.0:[`BACKEND_PORT`] with a deep accept queue (std's
/// listener asks for 128).
pub fn listener() -> Result<TcpListener> {
    let fd: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| BenchError::io("socket")(e.into()))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| BenchError::io("SO_REUSEADDR")(e.into()))?;
    let addr = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, BACKEND_PORT));
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).map_err(|e| BenchError::io("bind")(e.into()))?;
    // The deepest queue the namespace allows (its somaxconn, raised in `build`): a whole round
    // of checks may arrive within a few milliseconds.
    listen(&fd, Backlog::MAXALLOWABLE).map_err(|e| BenchError::io("listen")(e.into()))?;
    Ok(TcpListener::from(fd))
}

/// Backend `i`'s address.
pub fn backend(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(FIRST_BACKEND) + i as u32)
}

/// The backend an address is, if it is one of the first `n`.
pub fn index(addr: Ipv4Addr, n: usize) -> Option<usize> {
    let i = u32::from(addr).checked_sub(u32::from(FIRST_BACKEND))? as usize;
    (i < n).then_some(i)
}
