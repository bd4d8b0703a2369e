//! Layer-2 farms (`dsr`, `stlsdnat`): the `netdev nftlbd` table. Packets are taken at the
//! ingress of the farm's `iface`, before connection tracking. dsr rewrites the destination MAC to
//! a backend's and sends the frame out of `oface` (backends hold the VIP and answer clients
//! directly); stlsdnat rewrites the destination address (and port) too, and its backends'
//! replies are rewritten back at the ingress of `oface`, with no conntrack entry.
//!
//! ```text
//! ingress-<iface>  meta protocol ip:  meta l4proto . ip daddr . th dport vmap @l2-services → goto l2-<farm>
//!                  meta protocol ip6: meta l4proto . ip6 daddr . th dport vmap @l2-services6
//! l2-<farm>        [policies, log] counter name "traffic-<farm id>"
//!                  known flow (rr, weight) or known client (persistence) → its backend;
//!                  else ether daddr set jhash|numgen … map @l2slots-<shard>, remember,
//!                  update @backend-traffic-<farm id> { ether daddr }, fwd to "<oface>"
//! ingress-<oface>  (stlsdnat) meta l4proto . ip saddr . th sport vmap @l2-returns → goto l2-<farm>-back
//! ```
//!
//! Each farm speaks one family (validation); IPv6 sets and chains are the IPv4 ones with a `6`.
//! Interfaces, MACs and backend neighbours are taken from the farm or resolved here (`Resolver`).

use std::collections::BTreeMap;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use crate::model::{Config, Farm, FarmState, KeyField, LogPoint, Mode, Scheduler};
use crate::netlink::consts::reg;
use crate::netlink::sys::*;
use crate::netlink::types::concat;
use crate::netlink::*;

use super::alloc::Allocation;
use super::layout::{TABLE, shard_of, slot_base};
use super::ruleset::{ChainDef, FamilyState, FarmPart};

pub const SET_L2_SERVICES: &str = "l2-services";
/// Stateless DNAT replies: protocol . backend address . port → `goto stl-…-back`.
pub const SET_L2_RETURNS: &str = "l2-returns";
/// (replies?, protocol, address): what a range chain dispatches.
type RangeKey = (bool, u8, IpAddr);

/// Port-range dispatch: protocol . address → the address's range chain (clients, replies).
pub const SET_L2_SERVICE_ADDRS: &str = "l2-service-addrs";
pub const SET_L2_RETURN_ADDRS: &str = "l2-return-addrs";
/// Stateless DNAT: backend address → its MAC.
pub const STL_MACS: &str = "stl-macs";
/// Stateless DNAT: client address → its MAC (learnt from its packets, expiring).
pub const STL_CLIENTS: &str = "stl-clients";

pub fn l2_farm_chain(farm: &str) -> String {
    format!("l2-{farm}")
}

fn l2_slots(shard: u32) -> String {
    format!("l2slots-{shard}")
}

/// A layer-2 farm's per-backend counters: backend MAC (dsr) or address (stlsdnat) → counter.
pub fn backend_traffic_set(farm_id: u16) -> String {
    format!("backend-traffic-{farm_id}")
}

fn ingress_chain(dev: &str) -> String {
    format!("ingress-{dev}")
}

pub fn is_l2(farm: &Farm) -> bool {
    matches!(farm.mode, Mode::Dsr | Mode::Stlsdnat)
}

/// An interface of the engine's network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub mac: [u8; 6],
}

/// Looks interfaces up in a network namespace (the one the engine was opened in), whatever
/// thread asks.
pub struct Links {
    netns: Option<File>,
}

impl Links {
    /// Remembers the calling thread's network namespace.
    pub fn here() -> Links {
        Links {
            netns: File::open("/proc/thread-self/ns/net").ok(),
        }
    }

    pub fn get(&self, name: &str) -> Option<Link> {
        let name = std::ffi::CString::new(name).ok()?;
        self.run(move || {
            // SAFETY: a NUL-terminated name.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if index == 0 {
                return None;
            }
            // SAFETY: a socket for the ioctl, closed below; `ifr` is zeroed and sized.
            unsafe {
                let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                if sock < 0 {
                    return None;
                }
                let mut ifr: libc::ifreq = std::mem::zeroed();
                for (d, c) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
                    *d = *c as libc::c_char;
                }
                let r = libc::ioctl(sock, libc::SIOCGIFHWADDR, &mut ifr);
                libc::close(sock);
                if r != 0 {
                    return None;
                }
                let data = ifr.ifr_ifru.ifru_hwaddr.sa_data;
                let mut mac = [0u8; 6];
                for (m, d) in mac.iter_mut().zip(data.iter()) {
                    *m = *d as u8;
                }
                Some(Link { index, mac })
            }
        })
    }
}

/// Moves the calling thread into the network namespace of `fd`, unless it is there already
/// (the daemon's case: setns needs CAP_SYS_ADMIN, which the daemon does not keep).
fn enter_netns(fd: std::os::fd::RawFd) -> bool {
    let id = |f: std::os::fd::RawFd| {
        // SAFETY: fstat into a zeroed struct of the right type.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        (unsafe { libc::fstat(f, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
    };
    let here = File::open("/proc/thread-self/ns/net").ok();
    if here.is_some_and(|h| id(h.as_raw_fd()).is_some_and(|x| Some(x) == id(fd))) {
        return true;
    }
    // SAFETY: setns on a namespace descriptor we hold; only this thread moves.
    unsafe { libc::setns(fd, libc::CLONE_NEWNET) == 0 }
}

impl Links {
    /// Runs `f` on a thread inside the remembered network namespace.
    fn run<T: Send>(&self, f: impl FnOnce() -> Option<T> + Send) -> Option<T> {
        let fd = self.netns.as_ref().map(|f| f.as_raw_fd());
        std::thread::scope(|s| {
            s.spawn(move || {
                if let Some(fd) = fd
                    && !enter_netns(fd)
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

    fn name_of(&self, index: u32) -> Option<String> {
        self.run(move || {
            let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
            // SAFETY: buf holds IF_NAMESIZE bytes, as if_indextoname requires.
            let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
            if p.is_null() {
                return None;
            }
            // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
            Some(
                unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
                    .to_string_lossy()
                    .into_owned(),
            )
        })
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

/// Finds what a layer-2 farm is not told: the interface that owns its address, the interface
/// towards its backends, its backends' MACs (asking the kernel to resolve them when unknown).
pub struct Resolver {
    pub links: Links,
    route: Option<std::sync::Mutex<crate::netlink::rtnl::RouteSocket>>,
}

/// What a layer-2 farm resolves to.
pub struct Resolved {
    pub iface: String,
    pub input: Link,
    pub oface: String,
    pub output: Link,
    /// Backend name → MAC.
    pub macs: BTreeMap<String, [u8; 6]>,
}

impl Resolver {
    /// Resolves in the calling thread's network namespace.
    pub fn here() -> Resolver {
        Resolver {
            links: Links::here(),
            route: crate::netlink::rtnl::RouteSocket::new()
                .ok()
                .map(std::sync::Mutex::new),
        }
    }

    fn with_route<T>(
        &self,
        f: impl FnOnce(&mut crate::netlink::rtnl::RouteSocket) -> Option<T>,
    ) -> Option<T> {
        let m = self.route.as_ref()?;
        let mut g = m.lock().ok()?;
        f(&mut g)
    }

    /// Resolves a farm, or says which field cannot be and why.
    pub fn resolve(&self, farm: &Farm) -> Result<Resolved, (String, String)> {
        let at = |k: &str| format!("farms[{}].{k}", farm.name);
        let vip = farm.virtual_addresses.first().copied();
        let iface = match (&farm.iface, vip) {
            (Some(i), _) => i.clone(),
            (None, Some(v)) => self
                .with_route(|r| r.owner_of(v).ok().flatten())
                .and_then(|i| self.links.name_of(i))
                .ok_or_else(|| {
                    (
                        at("iface"),
                        format!("no interface of this host has {v}; set iface"),
                    )
                })?,
            (None, None) => return Err((at("iface"), "set iface".into())),
        };
        let input = self
            .links
            .get(&iface)
            .ok_or_else(|| (at("iface"), format!("no interface named {iface:?} on this host")))?;
        let first = farm.backends.first().map(|b| b.ip_addr);
        let oface = match (&farm.oface, first) {
            (Some(o), _) => o.clone(),
            (None, Some(b)) => self
                .with_route(|r| r.route_oif(b).ok().flatten())
                .and_then(|i| self.links.name_of(i))
                .ok_or_else(|| {
                    (
                        at("oface"),
                        format!("no route to backend {b} from this host; set oface"),
                    )
                })?,
            (None, None) => iface.clone(),
        };
        let output = self
            .links
            .get(&oface)
            .ok_or_else(|| (at("oface"), format!("no interface named {oface:?} on this host")))?;
        let mut macs = BTreeMap::new();
        for b in &farm.backends {
            let mac = match (b.ether_addr, b.ip_addr) {
                (Some(m), _) => m.0,
                (None, ip) => self.neighbour(ip, output.index).ok_or_else(|| {
                    let how = if ip.is_ipv6() {
                        "neighbour discovery"
                    } else {
                        "ARP"
                    };
                    (
                        format!("farms[{}].backends[{}].ether-addr", farm.name, b.name),
                        format!("{ip} does not answer {how} on {oface}; set ether-addr"),
                    )
                })?,
            };
            macs.insert(b.name.clone(), mac);
        }
        Ok(Resolved {
            iface,
            input,
            oface,
            output,
            macs,
        })
    }

    /// The MAC of `ip` on interface `index`; when the kernel does not know it, one datagram
    /// makes it ask (ARP), and the answer is awaited for up to a second.
    fn neighbour(&self, ip: IpAddr, index: u32) -> Option<[u8; 6]> {
        let look = || self.with_route(|r| r.neighbour(ip, index).ok().flatten());
        if let Some(m) = look() {
            return Some(m);
        }
        self.links.poke(ip);
        for _ in 0..20 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            if let Some(m) = look() {
                return Some(m);
            }
        }
        None
    }
}

/// Checks what layer-2 farms need that only this host can tell; the first problem, by field.
pub fn check_links(config: &Config, resolver: &Resolver) -> Result<(), (String, String)> {
    for f in config.farms.iter().filter(|f| is_l2(f)) {
        resolver.resolve(f)?;
    }
    Ok(())
}

/// The IP family of a layer-2 farm (its addresses'), and what differs between the two: the
/// EtherType, the header fields, the sets' key types and names (IPv6 ones end in `6`), and
/// which registers are free after a key (IPv6 keys are four times as long).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Ipf {
    v6: bool,
}

const V4: Ipf = Ipf { v6: false };
const V6: Ipf = Ipf { v6: true };

impl Ipf {
    fn of(ip: IpAddr) -> Ipf {
        Ipf { v6: ip.is_ipv6() }
    }

    /// `meta protocol ip|ip6`.
    fn dependency(self, e: &mut Vec<Expr>) {
        let ethertype: u16 = if self.v6 { 0x86dd } else { 0x0800 };
        e.push(Expr::meta(NFT_META_PROTOCOL, reg::R1));
        e.push(Expr::cmp(reg::R1, CmpOp::Eq, ethertype.to_be_bytes().to_vec()));
    }

    fn saddr(self) -> PayloadField {
        if self.v6 {
            PayloadField::Ip6Saddr
        } else {
            PayloadField::IpSaddr
        }
    }

    fn daddr(self) -> PayloadField {
        if self.v6 {
            PayloadField::Ip6Daddr
        } else {
            PayloadField::IpDaddr
        }
    }

    fn addr_type(self) -> DataType {
        if self.v6 {
            DataType::Ipv6Addr
        } else {
            DataType::Ipv4Addr
        }
    }

    /// 32-bit registers an address takes.
    fn words(self) -> u32 {
        if self.v6 { 4 } else { 1 }
    }

    /// A set's name in this family.
    fn name(self, base: &str) -> String {
        if self.v6 {
            format!("{base}6")
        } else {
            base.to_string()
        }
    }

    /// Where a flow's backend goes: after the flow key (3 words, or 9 over IPv6).
    fn flow_data(self) -> u32 {
        if self.v6 { reg::R4 } else { reg::R3 }
    }

    /// `ip[6] saddr|daddr set` from `sreg`, with the checksums updated (IPv4's header checksum,
    /// and the transport checksum's pseudo-header in both families).
    fn set_addr(self, e: &mut Vec<Expr>, dst: bool, sreg: u32) {
        let (_, offset, len) = if dst { self.daddr() } else { self.saddr() }.location();
        let (csum_type, csum_offset) = if self.v6 {
            (NFT_PAYLOAD_CSUM_NONE, 0)
        } else {
            (NFT_PAYLOAD_CSUM_INET, 10)
        };
        e.push(Expr::PayloadSet {
            sreg,
            base: NFT_PAYLOAD_NETWORK_HEADER,
            offset,
            len,
            csum_type,
            csum_offset,
            csum_flags: NFT_PAYLOAD_L4CSUM_PSEUDOHDR,
        });
    }
}

fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn ether_dependency(e: &mut Vec<Expr>) {
    e.push(Expr::meta(NFT_META_IFTYPE, reg::R1));
    e.push(Expr::cmp(reg::R1, CmpOp::Eq, 1u16.to_ne_bytes().to_vec()));
}

fn set_ether(e: &mut Vec<Expr>, offset: u32, sreg: u32) {
    e.push(Expr::PayloadSet {
        sreg,
        base: NFT_PAYLOAD_LL_HEADER,
        offset,
        len: 6,
        csum_type: 0,
        csum_offset: 0,
        csum_flags: 0,
    });
}

/// Flows of round-robin and weight layer-2 farms: client address . VIP . client port → backend MAC.
pub const SET_L2_FLOWS: &str = "l2-flows";
/// How long an idle flow keeps its backend.
const FLOW_TTL_MS: u64 = 300_000;

/// `ip saddr . ip daddr . th sport` into R1… The VIP is a constant when given (a stlsdnat
/// packet's destination is already rewritten when its memories are updated).
fn flow_key(e: &mut Vec<Expr>, ipf: Ipf, vip: Option<IpAddr>) {
    let w = ipf.words();
    e.push(Expr::payload(ipf.saddr(), reg::R1));
    match vip {
        Some(v) => e.push(Expr::immediate(reg::r32(w), octets(v))),
        None => e.push(Expr::payload(ipf.daddr(), reg::r32(w))),
    }
    e.push(Expr::payload(PayloadField::ThSport, reg::r32(2 * w)));
}

/// Register of a persistent client's backend (after a key of up to 12 words).
const PERSIST_DATA: u32 = reg::R4;
/// Bytes a persistence key may take before PERSIST_DATA.
pub const PERSIST_KEY_MAX: u32 = 48;

/// The persistence map of a layer-2 farm's key kind: VIP . persistence fields → backend MAC
/// (dsr, `l2-…`) or address (stlsdnat, `stl-…`).
fn persist_set(stateless: bool, ipf: Ipf, keys: &[KeyField]) -> String {
    let kind = if stateless { "stl" } else { "l2" };
    ipf.name(&format!("{kind}-{}", super::layout::persist_set(keys)))
}

fn key_field(ipf: Ipf, k: KeyField) -> PayloadField {
    match k {
        KeyField::Srcip => ipf.saddr(),
        KeyField::Dstip => ipf.daddr(),
        KeyField::Srcport => PayloadField::ThSport,
        KeyField::Dstport => PayloadField::ThDport,
        KeyField::Srcmac => PayloadField::EtherSaddr,
        KeyField::Dstmac => PayloadField::EtherDaddr,
    }
}

/// Bytes of a layer-2 persistence key in registers: the VIP, then each field.
pub fn persist_key_len(v6: bool, keys: &[KeyField]) -> u32 {
    let ipf = Ipf { v6 };
    ipf.words() * 4
        + keys
            .iter()
            .map(|k| types::reg_len(key_field(ipf, *k).location().2))
            .sum::<u32>()
}

/// VIP . persistence fields into R1… (the VIP and destination as constants when given).
fn persist_key(e: &mut Vec<Expr>, ipf: Ipf, keys: &[KeyField], vip: Option<IpAddr>) {
    let daddr = |e: &mut Vec<Expr>, reg: u32| match vip {
        Some(v) => e.push(Expr::immediate(reg, octets(v))),
        None => e.push(Expr::payload(ipf.daddr(), reg)),
    };
    daddr(e, reg::R1);
    let mut word = ipf.words();
    for k in keys {
        let field = key_field(ipf, *k);
        if *k == KeyField::Dstip {
            daddr(e, reg::r32(word));
        } else {
            e.push(Expr::payload(field, reg::r32(word)));
        }
        word += types::reg_len(field.location().2) / 4;
    }
}

fn update(set: String, ttl_ms: u64, data: u32) -> Expr {
    Expr::Dynset {
        set,
        op: DynsetOp::Update,
        sreg_key: reg::R1,
        sreg_data: Some(data),
        timeout_ms: Some(ttl_ms),
        exprs: Vec::new(),
    }
}

fn persist_update(stateless: bool, ipf: Ipf, farm: &Farm, data: u32) -> Expr {
    let ttl = u64::from(farm.persist_ttl.max(1)) * 1000;
    update(persist_set(stateless, ipf, &farm.persistence), ttl, data)
}

/// After a backend was chosen (its MAC is the frame's destination): remember the client.
fn remember_client(e: &mut Vec<Expr>, ipf: Ipf, farm: &Farm) {
    if !farm.persistence.is_empty() {
        persist_key(e, ipf, &farm.persistence, None);
        e.push(Expr::payload(PayloadField::EtherDaddr, PERSIST_DATA));
        e.push(persist_update(false, ipf, farm, PERSIST_DATA));
    }
}

fn persist_map(stateless: bool, ipf: Ipf, keys: &[KeyField]) -> Set {
    let mut fields = vec![ipf.addr_type()];
    fields.extend(keys.iter().map(|k| match k {
        KeyField::Srcip | KeyField::Dstip => ipf.addr_type(),
        KeyField::Srcport | KeyField::Dstport => DataType::InetService,
        KeyField::Srcmac | KeyField::Dstmac => DataType::EtherAddr,
    }));
    let key = if fields.len() <= 5 {
        TypeSpec::concat(&fields)
    } else {
        TypeSpec::of(DataType::Integer(
            fields.iter().map(|f| types::reg_len(f.byte_len())).sum(),
        ))
    };
    let data = if stateless {
        ipf.addr_type()
    } else {
        DataType::EtherAddr
    };
    let mut s = Set::map(
        Family::Netdev,
        TABLE,
        &persist_set(stateless, ipf, keys),
        key,
        TypeSpec::of(data),
    )
    .with_flags(NFT_SET_TIMEOUT | NFT_SET_EVAL);
    s.userdata.data_byteorder = Some(TypeSpec::of(data).byteorder());
    s.size = Some(super::layout::PERSIST_SIZE);
    s
}

/// Stateless DNAT with backend ports: backend address → its port.
pub const STL_PORTS: &str = "stl-ports";

/// `th dport|sport set` from `sreg`, with the transport checksum updated (`csum_offset` is the
/// checksum's offset in the TCP or UDP header).
fn set_port(e: &mut Vec<Expr>, offset: u32, sreg: u32, csum_offset: u32) {
    e.push(Expr::PayloadSet {
        sreg,
        base: NFT_PAYLOAD_TRANSPORT_HEADER,
        offset,
        len: 2,
        csum_type: NFT_PAYLOAD_CSUM_INET,
        csum_offset,
        csum_flags: 0,
    });
}

/// The port a stlsdnat farm rewrites to and from: its one port, when a backend has its own.
pub fn stl_port_rewrite(farm: &Farm) -> Option<(u16, u32)> {
    if farm.mode != Mode::Stlsdnat || farm.backends.iter().all(|b| b.port.is_none()) {
        return None;
    }
    let ports = &farm.virtual_ports;
    let vport = match ports.as_slice() {
        [r] if r.first == r.last => r.first,
        _ => return None,
    };
    let csum = match farm.protocol {
        crate::model::Protocol::Tcp => 16,
        crate::model::Protocol::Udp => 6,
        _ => return None,
    };
    Some((vport, csum))
}

/// Flows of round-robin and weight stlsdnat farms: client . VIP . client port → backend address.
pub const STL_FLOWS: &str = "stl-flows";

fn flow_update(stateless: bool, ipf: Ipf, data: u32) -> Expr {
    let set = if stateless { STL_FLOWS } else { SET_L2_FLOWS };
    update(ipf.name(set), FLOW_TTL_MS, data)
}

/// The flow hash a layer-2 farm chooses with, into R1 (slot number).
fn hash(e: &mut Vec<Expr>, ipf: Ipf, farm: &Farm, slots: u32, offset: u32) {
    let fields: Vec<KeyField> = farm.hash_fields();
    let mut word = 0u32;
    for k in &fields {
        let field = key_field(ipf, *k);
        e.push(Expr::payload(
            field,
            if word == 0 { reg::R1 } else { reg::r32(word) },
        ));
        word += types::reg_len(field.location().2) / 4;
    }
    match farm.scheduler {
        Scheduler::Symhash => e.push(Expr::Symhash {
            dreg: reg::R1,
            modulus: slots,
            offset,
        }),
        _ => e.push(Expr::Jhash {
            sreg: reg::R1,
            dreg: reg::R1,
            len: if let [k] = fields.as_slice() {
                key_field(ipf, *k).location().2
            } else {
                word * 4
            },
            modulus: slots,
            seed: Some(0),
            offset,
        }),
    }
}

/// A log statement with the farm's prefix, rate-limited by `log-rtlimit` when set.
fn farm_log(e: &mut Vec<Expr>, farm: &Farm, prefix: String) {
    if let Some(rate) = farm.log_rtlimit.filter(|r| r.count > 0) {
        e.push(Expr::Limit(Limit {
            rate: rate.count,
            unit: match rate.unit {
                crate::model::RateUnit::Second => RateUnit::Second,
                crate::model::RateUnit::Minute => RateUnit::Minute,
                crate::model::RateUnit::Hour => RateUnit::Hour,
                crate::model::RateUnit::Day => RateUnit::Day,
                crate::model::RateUnit::Week => RateUnit::Week,
            },
            burst: 5,
            bytes: false,
            over: false,
        }));
    }
    e.push(crate::engine::render::log(prefix));
}

fn fwd(e: &mut Vec<Expr>, index: u32) {
    e.push(Expr::immediate(reg::R2, index.to_ne_bytes().to_vec()));
    e.push(Expr::Fwd {
        sreg_dev: reg::R2,
        addr: None,
    });
}

/// A slot map of a shard: slot → backend MAC (dsr) or backend address (stlsdnat).
fn slot_map(f: Family, name: &str, data: DataType, data_typeof: PayloadField) -> Set {
    let mut s = Set::map(
        f,
        TABLE,
        name,
        TypeSpec::of(DataType::Integer(4)),
        TypeSpec::of(data),
    );
    s.userdata.key_typeof = Some(Typeof::Numgen {
        random: false,
        modulus: 2,
        offset: 0,
    });
    s.userdata.data_typeof = Some(Typeof::Payload(data_typeof));
    s
}

/// The whole `netdev nftlbd` table, or `None` when no farm is a layer-2 farm that can render.
/// The MAC each dsr backend was resolved to (farm, backend → MAC): its traffic is counted under
/// it, so reading the count must not resolve again.
pub type BackendMacs = BTreeMap<(String, String), [u8; 6]>;

/// The `netdev` table of the layer-2 farms, and the backend MACs it was made with.
pub fn render(
    config: &Config,
    alloc: &Allocation,
    resolver: &Resolver,
) -> (Option<FamilyState>, BackendMacs) {
    let mut macs = BackendMacs::new();
    let state = render_table(config, alloc, resolver, &mut macs);
    (state, macs)
}

fn render_table(
    config: &Config,
    alloc: &Allocation,
    resolver: &Resolver,
    backend_macs: &mut BackendMacs,
) -> Option<FamilyState> {
    let f = Family::Netdev;
    let mut sets = BTreeMap::new();
    let mut farms = BTreeMap::new();
    // Dispatch elements, by family.
    let mut services: BTreeMap<Ipf, Vec<SetElem>> = BTreeMap::new();
    let mut returns: BTreeMap<Ipf, Vec<SetElem>> = BTreeMap::new();
    // Devices whose ingress dispatches clients' packets, and devices that take backends'
    // replies, with the families they see; the families that need each dynamic memory.
    let mut in_devs = std::collections::BTreeSet::new();
    let mut back_devs = std::collections::BTreeSet::new();
    let mut needs_flows = std::collections::BTreeSet::new();
    let mut needs_stl_flows = std::collections::BTreeSet::new();
    let mut needs_stl_ports = std::collections::BTreeSet::new();
    // Port ranges, by (dispatch kind, protocol, address): (first, last, target chain).
    let mut ranges: BTreeMap<RangeKey, Vec<(u16, u16, String)>> = BTreeMap::new();
    // Policies some layer-2 farm attaches: their sets are copied into this table.
    let mut used_policies = std::collections::BTreeSet::new();
    // The farms' named counters.
    let mut counters = Vec::new();
    for farm in config.farms.iter().filter(|x| is_l2(x)) {
        let Some(fa) = alloc.farms.get(&farm.name) else {
            continue;
        };
        let Ok(res) = resolver.resolve(farm) else { continue };
        for (b, mac) in &res.macs {
            backend_macs.insert((farm.name.clone(), b.clone()), *mac);
        }
        let (iface, oface, inl, out) = (&res.iface, &res.oface, res.input, res.output);
        let Some(vip) = farm.virtual_addresses.first().copied() else {
            continue;
        };
        let ipf = Ipf::of(vip);
        let stateless = farm.mode == Mode::Stlsdnat;
        let chain = l2_farm_chain(&farm.name);
        let shard = if stateless {
            format!("{}-{}", ipf.name("stl-slots"), shard_of(fa.id))
        } else {
            l2_slots(shard_of(fa.id))
        };
        sets.entry(shard.clone()).or_insert_with(|| {
            if stateless {
                slot_map(f, &shard, ipf.addr_type(), ipf.daddr())
            } else {
                slot_map(f, &shard, DataType::EtherAddr, PayloadField::EtherDaddr)
            }
        });
        in_devs.insert((iface.clone(), ipf));
        let slots = fa.slots(ipf.v6).len() as u32;
        let mut rules = Vec::new();
        let mut extra = Vec::new();
        let mut e = Vec::new();
        // Policies first, in the farm's order, on every client packet (there is no connection
        // state here): a blacklist refuses what it lists, a whitelist what it does not. Each
        // policy of the farm's family has a copy of its set in this table.
        for p in crate::engine::render::attached(farm, &config.policies)
            .into_iter()
            .filter(|p| (p.family == crate::model::PolicyFamily::Ipv6) == ipf.v6)
        {
            let set = super::layout::policy_set(&p.name);
            used_policies.insert(p.name.clone());
            let white = p.kind == crate::model::PolicyType::Whitelist;
            let matches = |e: &mut Vec<Expr>| {
                ipf.dependency(e);
                e.push(Expr::payload(ipf.saddr(), reg::R1));
                e.push(Expr::Lookup {
                    set: set.clone(),
                    sreg: reg::R1,
                    dreg: None,
                    invert: white,
                });
            };
            let kind = format!("policy-{}-{}", if white { "WL" } else { "BL" }, p.name);
            if farm.verdict.contains(&crate::model::VerdictAction::Log) {
                // The log has a rule of its own, so a rate limit on it cannot spare a drop.
                matches(&mut e);
                let fallback = format!("{kind}-{} ", farm.name);
                let prefix = match &farm.log_prefix {
                    None => fallback,
                    Some(_) => crate::engine::render::log_prefix(farm, &kind, "DROP", format!("{kind} ")),
                };
                farm_log(&mut e, farm, prefix);
                rules.push(Rule::new(f, TABLE, &chain, std::mem::take(&mut e)));
            }
            if farm.verdict.contains(&crate::model::VerdictAction::Drop) {
                matches(&mut e);
                e.push(Expr::verdict(Verdict::Drop));
                rules.push(Rule::new(f, TABLE, &chain, std::mem::take(&mut e)));
            }
        }
        if farm.log.contains(&LogPoint::Output) {
            // What the farm sends out, as nftlb's `OUT-<farm>` log (rate-limited if asked).
            let prefix =
                crate::engine::render::log_prefix(farm, "farm", "OUT", format!("OUT-{} ", farm.name));
            farm_log(&mut e, farm, prefix);
            rules.push(Rule::new(f, TABLE, &chain, std::mem::take(&mut e)));
        }
        // Counting (`Farm.Packets`): every client packet that is balanced. (The backends of
        // layer-2 farms are not counted: the datapath knows them by MAC or address, not by id.)
        let counter = super::layout::l2_counter(fa.id);
        let count = |e: &mut Vec<Expr>| {
            e.push(Expr::Objref {
                obj_type: NFT_OBJECT_COUNTER,
                name: counter.clone(),
            });
        };
        if slots > 0 {
            count(&mut e);
            rules.push(Rule::new(f, TABLE, &chain, std::mem::take(&mut e)));
            counters.push(counter.clone());
        }
        // Per backend: the datapath knows the backend by the MAC (dsr) or address (stlsdnat) it
        // wrote into the packet, so each packet updates that key's counter in a set of the farm
        // (an update, not a lookup: a key not there yet is added, and the packet goes on). The
        // new element takes the set's counter (the kernel does not show it on the dynset).
        let backend_key = if stateless {
            ipf.daddr()
        } else {
            PayloadField::EtherDaddr
        };
        let traffic = backend_traffic_set(fa.id);
        let count_backend = |e: &mut Vec<Expr>, key: PayloadField| {
            e.push(Expr::payload(key, reg::R1));
            e.push(Expr::Dynset {
                set: traffic.clone(),
                op: DynsetOp::Update,
                sreg_key: reg::R1,
                sreg_data: None,
                timeout_ms: None,
                exprs: Vec::new(),
            });
        };
        if slots > 0 {
            let key_type = if stateless {
                ipf.addr_type()
            } else {
                DataType::EtherAddr
            };
            let mut set = Set::new(f, TABLE, &traffic, TypeSpec::of(key_type)).with_flags(NFT_SET_EVAL);
            set.size = Some(65_536);
            set.exprs = vec![Expr::counter()];
            sets.insert(traffic.clone(), set);
        }
        let per_flow = !stateless && matches!(farm.scheduler, Scheduler::Rr | Scheduler::Weight);
        if slots > 0 && per_flow {
            // Round robin and weight choose per packet; before conntrack that would split a
            // connection. So the first packet of a flow chooses and `l2-flows` remembers the
            // choice (refreshed by every packet): a known flow keeps its backend.
            ipf.dependency(&mut e);
            ether_dependency(&mut e);
            flow_key(&mut e, ipf, None);
            e.push(Expr::map(&ipf.name(SET_L2_FLOWS), reg::R1, ipf.flow_data()));
            // Written, then read back for the update: nft 1.0.6 cannot list a dynset whose
            // data comes straight from a map lookup (it aborts).
            set_ether(&mut e, 0, ipf.flow_data());
            e.push(Expr::payload(PayloadField::EtherDaddr, ipf.flow_data()));
            e.push(flow_update(false, ipf, ipf.flow_data()));
            e.push(Expr::immediate(reg::R1, out.mac.to_vec()));
            set_ether(&mut e, 6, reg::R1);
            count_backend(&mut e, backend_key);
            fwd(&mut e, out.index);
            rules.push(Rule::new(f, TABLE, &chain, std::mem::take(&mut e)));
        }
        if slots > 0 && !stateless && !farm.persistence.is_empty() {
            // A known client goes back to its backend (and, per flow, stays there).
            let keys = &farm.persistence;
            sets.entry(persist_set(false, ipf, keys))
                .or_insert_with(|| persist_map(false, ipf, keys));
            ipf.dependency(&mut e);
            ether_dependency(&mut e);
            persist_key(&mut e, ipf, keys, None);
            e.push(Expr::map(&persist_set(false, ipf, keys), reg::R1, PERSIST_DATA));
            set_ether(&mut e, 0, PERSIST_DATA);
            e.push(Expr::payload(PayloadField::EtherDaddr, PERSIST_DATA));
            e.push(persist_update(false, ipf, farm, PERSIST_DATA));
            if per_flow {
                flow_key(&mut e, ipf, None);
                e.push(flow_update(false, ipf, PERSIST_DATA));
            }
            e.push(Expr::immediate(reg::R1, out.mac.to_vec()));
            set_ether(&mut e, 6, reg::R1);
            count_backend(&mut e, backend_key);
            fwd(&mut e, out.index);
            rules.push(Rule::new(f, TABLE, &chain, std::mem::take(&mut e)));
        }
        if slots > 0 && per_flow {
            ipf.dependency(&mut e);
            ether_dependency(&mut e);
            e.push(Expr::immediate(reg::R1, out.mac.to_vec()));
            set_ether(&mut e, 6, reg::R1);
            e.push(Expr::Numgen {
                dreg: reg::R1,
                modulus: slots,
                random: farm.scheduler == Scheduler::Weight,
                offset: slot_base(fa.id),
            });
            e.push(Expr::map(&shard, reg::R1, reg::R1));
            set_ether(&mut e, 0, reg::R1);
            flow_key(&mut e, ipf, None);
            e.push(Expr::payload(PayloadField::EtherDaddr, ipf.flow_data()));
            e.push(flow_update(false, ipf, ipf.flow_data()));
            remember_client(&mut e, ipf, farm);
            count_backend(&mut e, backend_key);
            fwd(&mut e, out.index);
            rules.push(Rule::new(f, TABLE, &chain, std::mem::take(&mut e)));
            needs_flows.insert(ipf);
        }
        if slots > 0 && !stateless && !per_flow {
            // Direct server return: rewrite both MACs, send out of `oface`.
            ipf.dependency(&mut e);
            ether_dependency(&mut e);
            e.push(Expr::immediate(reg::R1, out.mac.to_vec()));
            set_ether(&mut e, 6, reg::R1);
            hash(&mut e, ipf, farm, slots, slot_base(fa.id));
            e.push(Expr::map(&shard, reg::R1, reg::R1));
            set_ether(&mut e, 0, reg::R1);
            remember_client(&mut e, ipf, farm);
            count_backend(&mut e, backend_key);
            fwd(&mut e, out.index);
            rules.push(Rule::new(f, TABLE, &chain, std::mem::take(&mut e)));
        }
        if slots > 0 && stateless {
            // Stateless DNAT: remember the client's MAC, rewrite the destination address and
            // MACs, send out of `oface`; replies are rewritten back in `stl-<farm>-back`.
            // (Each rule names its own IPv4 and Ethernet dependencies so nft can show it.)
            ipf.dependency(&mut e);
            ether_dependency(&mut e);
            e.push(Expr::payload(ipf.saddr(), reg::R1));
            e.push(Expr::payload(PayloadField::EtherSaddr, reg::R2));
            e.push(Expr::Dynset {
                set: ipf.name(STL_CLIENTS),
                op: DynsetOp::Update,
                sreg_key: reg::R1,
                sreg_data: Some(reg::R2),
                timeout_ms: Some(u64::from(farm.persist_ttl.max(1)) * 1000),
                exprs: Vec::new(),
            });
            rules.push(Rule::new(f, TABLE, &chain, std::mem::take(&mut e)));
            // nft 1.0.6 cannot list a dynset whose data comes straight from a map lookup (it
            // aborts), so each rule writes the backend address into the packet first, reads it
            // back, and only then updates the memories. Their keys use the farm's one VIP as a
            // constant, since the destination is already rewritten by then; ports and MACs are
            // rewritten last, so key fields on them still see the client's packet.
            let rewrite_ip = |e: &mut Vec<Expr>, reg: u32| {
                ipf.set_addr(e, true, reg);
                e.push(Expr::payload(ipf.daddr(), reg));
            };
            let rewrite = stl_port_rewrite(farm);
            let finish = |e: &mut Vec<Expr>| {
                if let Some((_, csum)) = rewrite {
                    // The backend's port, looked up by its address (every backend has one here).
                    e.push(Expr::payload(ipf.daddr(), reg::R1));
                    e.push(Expr::map(&ipf.name(STL_PORTS), reg::R1, reg::R1));
                    set_port(e, 2, reg::R1, csum);
                }
                e.push(Expr::payload(ipf.daddr(), reg::R1));
                e.push(Expr::map(&ipf.name(STL_MACS), reg::R1, reg::R1));
                set_ether(e, 0, reg::R1);
                e.push(Expr::immediate(reg::R1, out.mac.to_vec()));
                set_ether(e, 6, reg::R1);
                count_backend(e, backend_key);
                fwd(e, out.index);
            };
            let stl_flows = matches!(farm.scheduler, Scheduler::Rr | Scheduler::Weight);
            let keys = &farm.persistence;
            if stl_flows {
                // A known flow keeps its backend (the choice is per flow, not per packet).
                ipf.dependency(&mut e);
                ether_dependency(&mut e);
                flow_key(&mut e, ipf, None);
                e.push(Expr::map(&ipf.name(STL_FLOWS), reg::R1, ipf.flow_data()));
                rewrite_ip(&mut e, ipf.flow_data());
                flow_key(&mut e, ipf, Some(vip));
                e.push(flow_update(true, ipf, ipf.flow_data()));
                finish(&mut e);
                rules.push(Rule::new(f, TABLE, &chain, std::mem::take(&mut e)));
                needs_stl_flows.insert(ipf);
            }
            if !keys.is_empty() {
                // A known client goes back to its backend.
                sets.entry(persist_set(true, ipf, keys))
                    .or_insert_with(|| persist_map(true, ipf, keys));
                ipf.dependency(&mut e);
                ether_dependency(&mut e);
                persist_key(&mut e, ipf, keys, None);
                e.push(Expr::map(&persist_set(true, ipf, keys), reg::R1, PERSIST_DATA));
                rewrite_ip(&mut e, PERSIST_DATA);
                persist_key(&mut e, ipf, keys, Some(vip));
                e.push(persist_update(true, ipf, farm, PERSIST_DATA));
                if stl_flows {
                    flow_key(&mut e, ipf, Some(vip));
                    e.push(flow_update(true, ipf, PERSIST_DATA));
                }
                finish(&mut e);
                rules.push(Rule::new(f, TABLE, &chain, std::mem::take(&mut e)));
            }
            // Choose: the slot is computed on the client's packet, then the packet is
            // rewritten and the choice remembered.
            ipf.dependency(&mut e);
            ether_dependency(&mut e);
            if stl_flows {
                e.push(Expr::Numgen {
                    dreg: reg::R1,
                    modulus: slots,
                    random: farm.scheduler == Scheduler::Weight,
                    offset: slot_base(fa.id),
                });
            } else {
                hash(&mut e, ipf, farm, slots, slot_base(fa.id));
            }
            e.push(Expr::map(&shard, reg::R1, PERSIST_DATA));
            rewrite_ip(&mut e, PERSIST_DATA);
            if stl_flows {
                flow_key(&mut e, ipf, Some(vip));
                e.push(flow_update(true, ipf, PERSIST_DATA));
            }
            if !keys.is_empty() {
                persist_key(&mut e, ipf, keys, Some(vip));
                e.push(persist_update(true, ipf, farm, PERSIST_DATA));
            }
            finish(&mut e);
            rules.push(Rule::new(f, TABLE, &chain, std::mem::take(&mut e)));
            let back = format!("{chain}-back");
            let mut r = Vec::new();
            ipf.dependency(&mut r);
            ether_dependency(&mut r);
            // A reply counts for the backend that sent it (before it is rewritten to the VIP).
            count_backend(&mut r, ipf.saddr());
            if let Some((vport, csum)) = rewrite {
                r.push(Expr::immediate(reg::R1, vport.to_be_bytes().to_vec()));
                set_port(&mut r, 0, reg::R1, csum);
            }
            r.push(Expr::immediate(reg::R1, octets(vip)));
            ipf.set_addr(&mut r, false, reg::R1);
            r.push(Expr::payload(ipf.daddr(), reg::R1));
            r.push(Expr::map(&ipf.name(STL_CLIENTS), reg::R1, reg::R1));
            set_ether(&mut r, 0, reg::R1);
            r.push(Expr::immediate(reg::R1, inl.mac.to_vec()));
            set_ether(&mut r, 6, reg::R1);
            fwd(&mut r, inl.index);
            let mut c = Vec::new();
            count(&mut c);
            extra.push(ChainDef {
                chain: Chain::regular(f, TABLE, &back),
                rules: vec![Rule::new(f, TABLE, &back, c), Rule::new(f, TABLE, &back, r)],
            });
            back_devs.insert((oface.clone(), ipf));
        }
        rules.push(Rule::new(f, TABLE, &chain, vec![Expr::verdict(Verdict::Drop)]));
        let mut part = FarmPart {
            chain: Some(ChainDef {
                chain: Chain::regular(f, TABLE, &chain),
                rules,
            }),
            extra,
            elems: BTreeMap::new(),
        };
        let members: BTreeMap<u16, &crate::model::Backend> = farm
            .backends
            .iter()
            .filter_map(|b| Some((*fa.members.get(&b.name)?, b)))
            .collect();
        let slot_elems: Vec<SetElem> = fa
            .slots(ipf.v6)
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let b = members.get(m)?;
                let data = if stateless {
                    if Ipf::of(b.ip_addr) != ipf {
                        return None;
                    }
                    octets(b.ip_addr)
                } else {
                    res.macs.get(&b.name)?.to_vec()
                };
                Some(SetElem::mapping(
                    (slot_base(fa.id) + i as u32).to_ne_bytes().to_vec(),
                    Data::Value(data),
                ))
            })
            .collect();
        part.elems.insert(shard, slot_elems);
        let ports = farm.virtual_ports.as_slice().to_vec();
        // Every port is the range 0-65535.
        let port_list: Vec<crate::model::PortRange> = if ports.is_empty() {
            vec![crate::model::PortRange {
                first: 0,
                last: 65535,
            }]
        } else {
            ports.clone()
        };
        if stateless {
            let mut macs = Vec::new();
            let mut backend_ports = Vec::new();
            let rewrite = stl_port_rewrite(farm);
            for b in &farm.backends {
                let (a, Some(mac)) = (b.ip_addr, res.macs.get(&b.name)) else {
                    continue;
                };
                if Ipf::of(a) != ipf {
                    continue;
                }
                macs.push(SetElem::mapping(octets(a), Data::Value(mac.to_vec())));
                // With port rewriting, replies come from the backend's own port.
                let own: Vec<crate::model::PortRange> = match rewrite {
                    Some((vport, _)) => {
                        let p = b.port.unwrap_or(vport);
                        backend_ports
                            .push(SetElem::mapping(octets(a), Data::Value(p.to_be_bytes().to_vec())));
                        vec![crate::model::PortRange { first: p, last: p }]
                    }
                    None => port_list.clone(),
                };
                for proto in farm.protocol.numbers() {
                    for r in &own {
                        if r.first != r.last {
                            ranges.entry((true, *proto, a)).or_default().push((
                                r.first,
                                r.last,
                                format!("{chain}-back"),
                            ));
                            continue;
                        }
                        let key = concat(&[&[*proto], &octets(a), &r.first.to_be_bytes()]);
                        returns.entry(ipf).or_default().push(SetElem::mapping(
                            key,
                            Data::Verdict(Verdict::Goto(format!("{chain}-back"))),
                        ));
                    }
                }
            }
            part.elems.insert(ipf.name(STL_MACS), macs);
            if rewrite.is_some() {
                part.elems.insert(ipf.name(STL_PORTS), backend_ports);
                needs_stl_ports.insert(ipf);
            }
        }
        if farm.state == FarmState::Up {
            // A stateless farm has one address (its replies are rewritten to it); dsr may have more.
            let vips = farm.virtual_addresses.iter().filter(|a| Ipf::of(**a) == ipf);
            for &vip in vips {
                for proto in farm.protocol.numbers() {
                    for r in &port_list {
                        if r.first != r.last {
                            ranges.entry((false, *proto, vip)).or_default().push((
                                r.first,
                                r.last,
                                chain.clone(),
                            ));
                            continue;
                        }
                        let key = concat(&[&[*proto], &octets(vip), &r.first.to_be_bytes()]);
                        services
                            .entry(ipf)
                            .or_default()
                            .push(SetElem::mapping(key, Data::Verdict(Verdict::Goto(chain.clone()))));
                    }
                }
            }
        }
        farms.insert(farm.name.clone(), part);
    }
    if farms.is_empty() {
        return None;
    }
    // Range dispatch: protocol . address → a chain of `th dport|sport A-B goto …` rules.
    let mut range_parts = BTreeMap::new();
    let (mut addr_services, mut addr_returns): (BTreeMap<Ipf, Vec<SetElem>>, BTreeMap<Ipf, Vec<SetElem>>) =
        Default::default();
    for ((back, proto, addr), mut claims) in ranges {
        claims.sort();
        let ipf = Ipf::of(addr);
        let name = format!(
            "l2{}ports-{proto}-{}",
            if back { "r" } else { "" },
            match addr {
                IpAddr::V4(a) => u32::from(a).to_string(),
                IpAddr::V6(a) => format!("6-{:x}", u128::from(a)),
            }
        );
        let field = if back {
            PayloadField::ThSport
        } else {
            PayloadField::ThDport
        };
        let rules = claims
            .iter()
            .map(|(lo, hi, target)| {
                let mut e = Vec::new();
                ipf.dependency(&mut e);
                if (*lo, *hi) != (0, 65535) {
                    e.push(Expr::payload(field, reg::R1));
                    e.push(Expr::Range {
                        sreg: reg::R1,
                        op: CmpOp::Eq,
                        from: lo.to_be_bytes().to_vec(),
                        to: hi.to_be_bytes().to_vec(),
                    });
                }
                e.push(Expr::verdict(Verdict::Goto(target.clone())));
                Rule::new(f, TABLE, &name, e)
            })
            .collect();
        let elem = SetElem::mapping(
            concat(&[&[proto], &octets(addr)]),
            Data::Verdict(Verdict::Goto(name.clone())),
        );
        if back {
            addr_returns.entry(ipf).or_default().push(elem);
        } else {
            addr_services.entry(ipf).or_default().push(elem);
        }
        range_parts.insert(
            name.clone(),
            FarmPart {
                chain: Some(ChainDef {
                    chain: Chain::regular(f, TABLE, &name),
                    rules,
                }),
                extra: Vec::new(),
                elems: BTreeMap::new(),
            },
        );
    }
    let families_in: std::collections::BTreeSet<Ipf> = in_devs.iter().map(|(_, i)| *i).collect();
    let families_back: std::collections::BTreeSet<Ipf> = back_devs.iter().map(|(_, i)| *i).collect();
    let verdict_map =
        |name: &str, key: TypeSpec| Set::map(f, TABLE, name, key, TypeSpec::of(DataType::Verdict));
    let memory = |name: &str, key: TypeSpec, data: DataType| {
        let mut s =
            Set::map(f, TABLE, name, key, TypeSpec::of(data)).with_flags(NFT_SET_TIMEOUT | NFT_SET_EVAL);
        s.size = Some(super::layout::LIMIT_SIZE);
        s
    };
    let mut shared_elems = BTreeMap::new();
    for ipf in [V4, V6] {
        let addr = ipf.addr_type();
        let addr_type = TypeSpec::concat(&[DataType::InetProto, addr]);
        let service_type = TypeSpec::concat(&[DataType::InetProto, addr, DataType::InetService]);
        let flow_type = TypeSpec::concat(&[addr, addr, DataType::InetService]);
        if families_in.contains(&ipf) {
            for (name, key) in [
                (SET_L2_SERVICE_ADDRS, &addr_type),
                (SET_L2_SERVICES, &service_type),
            ] {
                sets.insert(ipf.name(name), verdict_map(&ipf.name(name), key.clone()));
            }
            shared_elems.insert(
                ipf.name(SET_L2_SERVICES),
                services.remove(&ipf).unwrap_or_default(),
            );
            shared_elems.insert(
                ipf.name(SET_L2_SERVICE_ADDRS),
                addr_services.remove(&ipf).unwrap_or_default(),
            );
        }
        if families_back.contains(&ipf) {
            for (name, key) in [(SET_L2_RETURN_ADDRS, &addr_type), (SET_L2_RETURNS, &service_type)] {
                sets.insert(ipf.name(name), verdict_map(&ipf.name(name), key.clone()));
            }
            shared_elems.insert(ipf.name(SET_L2_RETURNS), returns.remove(&ipf).unwrap_or_default());
            shared_elems.insert(
                ipf.name(SET_L2_RETURN_ADDRS),
                addr_returns.remove(&ipf).unwrap_or_default(),
            );
            let macs = ipf.name(STL_MACS);
            sets.insert(
                macs.clone(),
                Set::map(
                    f,
                    TABLE,
                    &macs,
                    TypeSpec::of(addr),
                    TypeSpec::of(DataType::EtherAddr),
                ),
            );
            let clients = ipf.name(STL_CLIENTS);
            sets.insert(
                clients.clone(),
                memory(&clients, TypeSpec::of(addr), DataType::EtherAddr),
            );
        }
        if needs_stl_ports.contains(&ipf) {
            let name = ipf.name(STL_PORTS);
            sets.insert(
                name.clone(),
                Set::map(
                    f,
                    TABLE,
                    &name,
                    TypeSpec::of(addr),
                    TypeSpec::of(DataType::InetService),
                ),
            );
        }
        if needs_stl_flows.contains(&ipf) {
            let name = ipf.name(STL_FLOWS);
            sets.insert(name.clone(), memory(&name, flow_type.clone(), addr));
        }
        if needs_flows.contains(&ipf) {
            let name = ipf.name(SET_L2_FLOWS);
            sets.insert(name.clone(), memory(&name, flow_type, DataType::EtherAddr));
        }
    }
    // One ingress chain per device: client dispatch where farms listen, reply dispatch where
    // stateless farms' backends answer; per family the device sees.
    let mut chains = Vec::new();
    let devs: std::collections::BTreeSet<&String> =
        in_devs.iter().chain(&back_devs).map(|(d, _)| d).collect();
    for dev in devs {
        let name = ingress_chain(dev);
        let mut rules = Vec::new();
        for ipf in [V4, V6] {
            let w = ipf.words();
            // (set of exact ports, set of ranged addresses, address field, port field)
            let mut dispatch = Vec::new();
            if in_devs.contains(&(dev.clone(), ipf)) {
                dispatch.push((
                    SET_L2_SERVICES,
                    SET_L2_SERVICE_ADDRS,
                    ipf.daddr(),
                    PayloadField::ThDport,
                ));
            }
            if back_devs.contains(&(dev.clone(), ipf)) {
                dispatch.push((
                    SET_L2_RETURNS,
                    SET_L2_RETURN_ADDRS,
                    ipf.saddr(),
                    PayloadField::ThSport,
                ));
            }
            for (exact, ranged, addr, port) in dispatch {
                let mut e = Vec::new();
                ipf.dependency(&mut e);
                e.push(Expr::meta(NFT_META_L4PROTO, reg::R1));
                e.push(Expr::payload(addr, reg::r32(1)));
                e.push(Expr::payload(port, reg::r32(1 + w)));
                e.push(Expr::map(&ipf.name(exact), reg::R1, reg::VERDICT));
                rules.push(Rule::new(f, TABLE, &name, e));
                let mut e = Vec::new();
                ipf.dependency(&mut e);
                e.push(Expr::meta(NFT_META_L4PROTO, reg::R1));
                e.push(Expr::payload(addr, reg::r32(1)));
                e.push(Expr::map(&ipf.name(ranged), reg::R1, reg::VERDICT));
                rules.push(Rule::new(f, TABLE, &name, e));
            }
        }
        let hook = Hook {
            point: HookPoint::Ingress,
            priority: 101,
            device: Some(dev.clone()),
        };
        chains.push(ChainDef {
            chain: Chain::base(f, TABLE, &name, ChainType::Filter, hook, Verdict::Accept),
            rules,
        });
    }
    let mut shared = range_parts;
    for p in config.policies.iter().filter(|p| used_policies.contains(&p.name)) {
        let v6 = p.family == crate::model::PolicyFamily::Ipv6;
        let fam = if v6 {
            crate::engine::render::IpFamily::V6
        } else {
            crate::engine::render::IpFamily::V4
        };
        let set = super::layout::policy_set(&p.name);
        sets.insert(set.clone(), crate::engine::render::policy_map_in(f, p));
        if let Some(part) = crate::engine::render::policy_part(fam, p) {
            shared.insert(set, part);
        }
    }
    shared.extend([(
        SET_L2_SERVICES.to_string(),
        FarmPart {
            chain: None,
            extra: Vec::new(),
            elems: shared_elems,
        },
    )]);
    let objs = counters
        .into_iter()
        .map(|name| {
            let o = Obj {
                family: f,
                table: TABLE.into(),
                name: name.clone(),
                handle: None,
                kind: ObjKind::Counter { packets: 0, bytes: 0 },
            };
            (name, o)
        })
        .collect();
    Some(FamilyState {
        table: Table::new(f, TABLE),
        sets,
        objs,
        chains,
        shared,
        farms,
    })
}
