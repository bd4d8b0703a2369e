//! Host discovery for layer-2 farms: the interface that owns a farm's address, the route to its
//! backends, interfaces' indexes and MACs, backends' MACs (asking the kernel to resolve them
//! with one datagram when unknown). Everything is looked up in the network namespace the engine
//! was opened in, whatever thread asks, and comes back as [`HostFacts`].

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

use nix::net::if_::{if_indextoname, if_nametoindex};
use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use nix::sys::stat::fstat;

use crate::model::{Config, Farm};
use crate::netlink::rtnl::RouteSocket;

use super::super::layout::is_l2;
use super::facts::{HostFacts, Link, iface_of, oface_of};

/// `struct ifreq` as SIOCGIFHWADDR fills it: the name, then the hardware address as a
/// `struct sockaddr`, padded to the size of the union.
#[repr(C)]
#[derive(Default)]
struct IfreqHwaddr {
    name: [u8; libc::IF_NAMESIZE],
    family: libc::sa_family_t,
    data: [u8; 14],
    pad: [u8; 8],
}

const _: () = assert!(std::mem::size_of::<IfreqHwaddr>() == std::mem::size_of::<libc::ifreq>());

nix::ioctl_read_bad!(siocgifhwaddr, libc::SIOCGIFHWADDR, IfreqHwaddr);

/// The identity of a network namespace (device and inode of its file).
fn netns_id(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    fstat(fd).ok().map(|st| (st.st_dev, st.st_ino))
}

fn current_netns() -> Option<File> {
    File::open("/proc/thread-self/ns/net").ok()
}

/// Moves the calling thread into the network namespace `ns`, unless it is there already (the
/// daemon's case: setns needs CAP_SYS_ADMIN, which the daemon does not keep).
fn enter_netns(ns: BorrowedFd<'_>) -> bool {
    let here = current_netns();
    if here.is_some_and(|h| netns_id(h.as_fd()).is_some_and(|x| Some(x) == netns_id(ns))) {
        return true;
    }
    setns(ns, CloneFlags::CLONE_NEWNET).is_ok()
}

/// Looks interfaces up in the network namespace the engine was opened in.
struct Links {
    netns: Option<File>,
}

impl Links {
    /// Runs `f` on a thread inside the remembered network namespace.
    fn run<T: Send>(&self, f: impl FnOnce() -> Option<T> + Send) -> Option<T> {
        let ns = self.netns.as_ref().map(|f| f.as_fd());
        std::thread::scope(|s| {
            s.spawn(move || {
                if let Some(ns) = ns
                    && !enter_netns(ns)
                {
                    return None;
                }
                f()
            })
            .join()
            .ok()
            .flatten()
        })
    }

    fn get(&self, name: &str) -> Option<Link> {
        let mut ifr = IfreqHwaddr::default();
        // One byte stays NUL: the kernel reads a NUL-terminated name.
        if name.len() >= ifr.name.len() {
            return None;
        }
        ifr.name[..name.len()].copy_from_slice(name.as_bytes());
        self.run(move || {
            let index = if_nametoindex(name).ok()?;
            let sock: OwnedFd =
                socket(AddressFamily::Inet, SockType::Datagram, SockFlag::empty(), None).ok()?;
            // SAFETY: `sock` is an open socket for the duration of the call, and `ifr` is a
            // `struct ifreq` (same size and layout as libc's, asserted above) holding a
            // NUL-terminated name, which SIOCGIFHWADDR reads and then fills in place.
            unsafe { siocgifhwaddr(std::os::fd::AsRawFd::as_raw_fd(&sock), &mut ifr) }.ok()?;
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&ifr.data[..6]);
            Some(Link { index, mac })
        })
    }

    fn name_of(&self, index: u32) -> Option<String> {
        self.run(move || if_indextoname(index).ok()?.into_string().ok())
    }

    /// Sends one datagram to `ip` (discard port) so the kernel resolves its MAC.
    fn poke(&self, ip: IpAddr) {
        self.run(move || {
            let any = if ip.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
            let s = std::net::UdpSocket::bind(any).ok()?;
            s.send_to(b"", (ip, 9)).ok().map(|_| ())
        });
    }
}

/// The host's side of layer-2 farms: finds what they are not told.
pub struct Host {
    links: Links,
    route: Option<Mutex<RouteSocket>>,
}

impl Host {
    /// Looks things up in the calling thread's network namespace (now and later).
    pub fn here() -> Host {
        Host {
            links: Links {
                netns: current_netns(),
            },
            route: RouteSocket::new().ok().map(Mutex::new),
        }
    }

    fn with_route<T>(&self, f: impl FnOnce(&mut RouteSocket) -> Option<T>) -> Option<T> {
        let mut g = self.route.as_ref()?.lock().ok()?;
        f(&mut g)
    }

    /// The facts the layer-2 farms of `config` need. A farm's lookups stop at the first one that
    /// fails: resolving it from the facts then names that field.
    pub fn discover(&self, config: &Config) -> HostFacts {
        let mut facts = HostFacts::default();
        for farm in config.farms.iter().filter(|f| is_l2(f)) {
            self.discover_farm(farm, &mut facts);
        }
        facts
    }

    fn discover_farm(&self, farm: &Farm, facts: &mut HostFacts) -> Option<()> {
        if let (None, Some(&vip)) = (&farm.iface, farm.virtual_addresses.first())
            && !facts.owners.contains_key(&vip)
        {
            let name = self
                .with_route(|r| r.owner_of(vip).ok().flatten())
                .and_then(|i| self.links.name_of(i))?;
            facts.owners.insert(vip, name);
        }
        let iface = iface_of(farm, facts).ok()?;
        self.link(&iface, facts)?;
        if let (None, Some(b)) = (&farm.oface, farm.backends.first().map(|b| b.ip_addr))
            && !facts.routes.contains_key(&b)
        {
            let name = self
                .with_route(|r| r.route_oif(b).ok().flatten())
                .and_then(|i| self.links.name_of(i))?;
            facts.routes.insert(b, name);
        }
        let oface = oface_of(farm, &iface, facts).ok()?;
        let output = self.link(&oface, facts)?;
        for b in farm.backends.iter().filter(|b| b.ether_addr.is_none()) {
            if let std::collections::btree_map::Entry::Vacant(v) =
                facts.neighbours.entry((oface.clone(), b.ip_addr))
            {
                v.insert(self.neighbour(b.ip_addr, output.index)?);
            }
        }
        Some(())
    }

    fn link(&self, name: &str, facts: &mut HostFacts) -> Option<Link> {
        if let Some(l) = facts.links.get(name) {
            return Some(*l);
        }
        let l = self.links.get(name)?;
        facts.links.insert(name.to_string(), l);
        Some(l)
    }

    /// The MAC of `ip` on interface `index`; when the kernel does not know it, one datagram
    /// makes it ask (ARP or neighbour discovery), and the answer is awaited for up to a second.
    fn neighbour(&self, ip: IpAddr, index: u32) -> Option<[u8; 6]> {
        let look = || self.with_route(|r| r.neighbour(ip, index).ok().flatten());
        if let Some(m) = look() {
            return Some(m);
        }
        self.links.poke(ip);
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(50));
            if let Some(m) = look() {
                return Some(m);
            }
        }
        None
    }
}
