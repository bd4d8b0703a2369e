//! Layer-2 farms (`dsr`): the `netdev nftlbd` table. Packets are taken at the ingress of the
//! farm's `iface`, before connection tracking; the backend is chosen by a flow hash (a per-packet
//! choice would split connections, so validation allows only hash and symhash); the destination
//! MAC becomes the backend's and the packet leaves on `oface`. Backends hold the VIP themselves
//! and answer clients directly.
//!
//! ```text
//! ingress-<iface>  meta protocol ip: meta l4proto . ip daddr . th dport vmap @l2-services → goto l2-<farm>
//! l2-<farm>        ether saddr set <oface MAC>
//!                  ether daddr set jhash … mod N offset <base> map @l2slots-<shard> fwd to "<oface>"
//! ```
//!
//! Interfaces are read from the engine's network namespace (index and MAC); automatic
//! resolution of interfaces and backend MACs (routes, neighbours, rtnetlink events) is not here
//! yet, so `iface`, `oface` and every backend's `ether-addr` are required.

use std::collections::BTreeMap;
use std::fs::File;
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
type RangeKey = (bool, u8, std::net::Ipv4Addr);

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
        let fd = self.netns.as_ref().map(|f| f.as_raw_fd());
        std::thread::scope(|s| {
            s.spawn(move || {
                if let Some(fd) = fd {
                    // SAFETY: setns on a namespace descriptor we hold; only this thread moves.
                    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                        return None;
                    }
                }
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
            .join()
            .ok()
            .flatten()
        })
    }
}

impl Links {
    /// Runs `f` on a thread inside the remembered network namespace.
    fn run<T: Send>(&self, f: impl FnOnce() -> Option<T> + Send) -> Option<T> {
        let fd = self.netns.as_ref().map(|f| f.as_raw_fd());
        std::thread::scope(|s| {
            s.spawn(move || {
                if let Some(fd) = fd {
                    // SAFETY: setns on a namespace descriptor we hold; only this thread moves.
                    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                        return None;
                    }
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
    fn poke(&self, ip: std::net::Ipv4Addr) {
        self.run(move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
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
        let vip = farm.virtual_addresses.iter().find_map(|a| match a {
            std::net::IpAddr::V4(v) => Some(*v),
            std::net::IpAddr::V6(_) => None,
        });
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
        let first = farm.backends.iter().find_map(|b| match b.ip_addr {
            std::net::IpAddr::V4(v) => Some(v),
            std::net::IpAddr::V6(_) => None,
        });
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
                (None, std::net::IpAddr::V4(ip)) => self.neighbour(ip, output.index).ok_or_else(|| {
                    (
                        format!("farms[{}].backends[{}].ether-addr", farm.name, b.name),
                        format!("{ip} does not answer ARP on {oface}; set ether-addr"),
                    )
                })?,
                (None, std::net::IpAddr::V6(_)) => continue,
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
    fn neighbour(&self, ip: std::net::Ipv4Addr, index: u32) -> Option<[u8; 6]> {
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

fn ipv4_dependency(e: &mut Vec<Expr>) {
    e.push(Expr::meta(NFT_META_PROTOCOL, reg::R1));
    e.push(Expr::cmp(reg::R1, CmpOp::Eq, 0x0800u16.to_be_bytes().to_vec()));
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
/// Register of a flow's backend MAC (after a 3-word key).
const FLOW_DATA: u32 = reg::R3;

/// `ip saddr . ip daddr . th sport` into R1…
fn flow_key(e: &mut Vec<Expr>) {
    e.push(Expr::payload(PayloadField::IpSaddr, reg::R1));
    e.push(Expr::payload(PayloadField::IpDaddr, reg::r32(1)));
    e.push(Expr::payload(PayloadField::ThSport, reg::r32(2)));
}

/// Register of a persistent client's backend MAC (after a key of up to 12 words).
const PERSIST_DATA: u32 = reg::R4;

/// The persistence map of a dsr farm's key kind: VIP . persistence fields → backend MAC.
fn l2_persist_set(keys: &[KeyField]) -> String {
    format!("l2-{}", super::layout::persist_set(keys))
}

/// `ip daddr . <persistence fields>` into R1…
fn persist_key(e: &mut Vec<Expr>, keys: &[KeyField]) {
    e.push(Expr::payload(PayloadField::IpDaddr, reg::R1));
    let mut word = 1u32;
    for k in keys {
        let field = match k {
            KeyField::Srcip => PayloadField::IpSaddr,
            KeyField::Dstip => PayloadField::IpDaddr,
            KeyField::Srcport => PayloadField::ThSport,
            KeyField::Dstport => PayloadField::ThDport,
            KeyField::Srcmac => PayloadField::EtherSaddr,
            KeyField::Dstmac => PayloadField::EtherDaddr,
        };
        e.push(Expr::payload(field, reg::r32(word)));
        word += types::reg_len(field.location().2) / 4;
    }
}

fn persist_update(keys: &[KeyField], ttl: u32, data: u32) -> Expr {
    Expr::Dynset {
        set: l2_persist_set(keys),
        op: DynsetOp::Update,
        sreg_key: reg::R1,
        sreg_data: Some(data),
        timeout_ms: Some(u64::from(ttl.max(1)) * 1000),
        exprs: Vec::new(),
    }
}

/// After a backend was chosen (its MAC is the frame's destination): remember the client.
fn remember_client(e: &mut Vec<Expr>, farm: &Farm) {
    if !farm.persistence.is_empty() {
        persist_key(e, &farm.persistence);
        e.push(Expr::payload(PayloadField::EtherDaddr, PERSIST_DATA));
        e.push(persist_update(&farm.persistence, farm.persist_ttl, PERSIST_DATA));
    }
}

fn persist_map(keys: &[KeyField]) -> Set {
    let mut fields = vec![DataType::Ipv4Addr];
    fields.extend(keys.iter().map(|k| match k {
        KeyField::Srcip | KeyField::Dstip => DataType::Ipv4Addr,
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
    let name = l2_persist_set(keys);
    let mut s = Set::map(
        Family::Netdev,
        TABLE,
        &name,
        key,
        TypeSpec::of(DataType::EtherAddr),
    )
    .with_flags(NFT_SET_TIMEOUT | NFT_SET_EVAL);
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
    let ports = crate::model::parse_ports(&farm.virtual_ports).ok()?;
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

/// The flow key of a stlsdnat farm once its destination is rewritten: the VIP is a constant.
fn stl_flow_key(e: &mut Vec<Expr>, vip: std::net::Ipv4Addr) {
    e.push(Expr::payload(PayloadField::IpSaddr, reg::R1));
    e.push(Expr::immediate(reg::r32(1), vip.octets().to_vec()));
    e.push(Expr::payload(PayloadField::ThSport, reg::r32(2)));
}

/// The persistence key of a stlsdnat farm once its destination is rewritten: the VIP is a
/// constant wherever `persist_key` reads the destination address.
fn stl_persist_key(e: &mut Vec<Expr>, keys: &[KeyField], vip: std::net::Ipv4Addr) {
    let start = e.len();
    persist_key(e, keys);
    let daddr = Expr::payload(PayloadField::IpDaddr, 0);
    for x in &mut e[start..] {
        if let (
            Expr::Payload {
                dreg, base, offset, ..
            },
            Expr::Payload {
                base: b, offset: o, ..
            },
        ) = (&*x, &daddr)
            && (base, offset) == (b, o)
        {
            *x = Expr::immediate(*dreg, vip.octets().to_vec());
        }
    }
}

fn stl_flow_update(data: u32) -> Expr {
    Expr::Dynset {
        set: STL_FLOWS.into(),
        op: DynsetOp::Update,
        sreg_key: reg::R1,
        sreg_data: Some(data),
        timeout_ms: Some(FLOW_TTL_MS),
        exprs: Vec::new(),
    }
}

fn stl_persist_set(keys: &[KeyField]) -> String {
    format!("stl-{}", super::layout::persist_set(keys))
}

fn stl_persist_update(keys: &[KeyField], ttl: u32, data: u32) -> Expr {
    Expr::Dynset {
        set: stl_persist_set(keys),
        op: DynsetOp::Update,
        sreg_key: reg::R1,
        sreg_data: Some(data),
        timeout_ms: Some(u64::from(ttl.max(1)) * 1000),
        exprs: Vec::new(),
    }
}

/// VIP . persistence fields → backend address.
fn stl_persist_map(keys: &[KeyField]) -> Set {
    let mut s = persist_map(keys);
    s.name = stl_persist_set(keys);
    s.data = Some(TypeSpec::of(DataType::Ipv4Addr));
    s.userdata.data_byteorder = Some(TypeSpec::of(DataType::Ipv4Addr).byteorder());
    s
}

fn flow_update(data: u32) -> Expr {
    Expr::Dynset {
        set: SET_L2_FLOWS.into(),
        op: DynsetOp::Update,
        sreg_key: reg::R1,
        sreg_data: Some(data),
        timeout_ms: Some(FLOW_TTL_MS),
        exprs: Vec::new(),
    }
}

/// The flow hash a layer-2 farm chooses with, into R1 (slot number).
fn hash(e: &mut Vec<Expr>, farm: &Farm, slots: u32, offset: u32) {
    let fields: Vec<KeyField> = farm.hash_fields();
    let mut word = 0u32;
    for k in &fields {
        let field = match k {
            KeyField::Srcip => PayloadField::IpSaddr,
            KeyField::Dstip => PayloadField::IpDaddr,
            KeyField::Srcport => PayloadField::ThSport,
            KeyField::Dstport => PayloadField::ThDport,
            KeyField::Srcmac => PayloadField::EtherSaddr,
            KeyField::Dstmac => PayloadField::EtherDaddr,
        };
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
            len: if fields.len() == 1 {
                fields_len(&fields)
            } else {
                word * 4
            },
            modulus: slots,
            seed: Some(0),
            offset,
        }),
    }
}

/// `ip saddr set`/`ip daddr set` from `sreg`, with the IP and transport checksums updated.
fn set_ip(e: &mut Vec<Expr>, offset: u32, sreg: u32) {
    e.push(Expr::PayloadSet {
        sreg,
        base: NFT_PAYLOAD_NETWORK_HEADER,
        offset,
        len: 4,
        csum_type: NFT_PAYLOAD_CSUM_INET,
        csum_offset: 10,
        csum_flags: NFT_PAYLOAD_L4CSUM_PSEUDOHDR,
    });
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
pub fn render(config: &Config, alloc: &Allocation, resolver: &Resolver) -> Option<FamilyState> {
    let f = Family::Netdev;
    let mut sets = BTreeMap::new();
    let mut farms = BTreeMap::new();
    let mut services = Vec::new();
    let mut returns = Vec::new();
    // Devices whose ingress dispatches clients' packets, and devices that take backends' replies.
    let mut in_devs = std::collections::BTreeSet::new();
    let mut needs_flows = false;
    let mut needs_stl_flows = false;
    let mut needs_stl_ports = false;
    // Port ranges, by (dispatch kind, protocol, address): (first, last, target chain).
    let mut ranges: BTreeMap<RangeKey, Vec<(u16, u16, String)>> = BTreeMap::new();
    let mut back_devs = std::collections::BTreeSet::new();
    for farm in config.farms.iter().filter(|x| is_l2(x)) {
        let Some(fa) = alloc.farms.get(&farm.name) else {
            continue;
        };
        let Ok(res) = resolver.resolve(farm) else { continue };
        let (iface, oface, inl, out) = (&res.iface, &res.oface, res.input, res.output);
        let Some(std::net::IpAddr::V4(vip)) = farm.virtual_addresses.first().copied() else {
            continue;
        };
        let stateless = farm.mode == Mode::Stlsdnat;
        let chain = l2_farm_chain(&farm.name);
        let shard = if stateless {
            format!("stl-slots-{}", shard_of(fa.id))
        } else {
            l2_slots(shard_of(fa.id))
        };
        sets.entry(shard.clone()).or_insert_with(|| {
            if stateless {
                slot_map(f, &shard, DataType::Ipv4Addr, PayloadField::IpDaddr)
            } else {
                slot_map(f, &shard, DataType::EtherAddr, PayloadField::EtherDaddr)
            }
        });
        in_devs.insert(iface.clone());
        let slots = fa.slots4.len() as u32;
        let mut rules = Vec::new();
        let mut extra = Vec::new();
        let mut e = Vec::new();
        if farm.log.contains(&LogPoint::Output) {
            // What the farm sends out, as nftlb's `OUT-<farm>` log (rate-limited if asked).
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
            let prefix =
                crate::engine::render::log_prefix(farm, "farm", "OUT", format!("OUT-{} ", farm.name));
            e.push(Expr::Log {
                prefix: Some(prefix.chars().take(127).collect()),
                group: None,
                snaplen: None,
                qthreshold: None,
                level: Some(4),
                flags: 0,
            });
            rules.push(Rule::new(f, TABLE, &chain, std::mem::take(&mut e)));
        }
        let per_flow = !stateless && matches!(farm.scheduler, Scheduler::Rr | Scheduler::Weight);
        if slots > 0 && per_flow {
            // Round robin and weight choose per packet; before conntrack that would split a
            // connection. So the first packet of a flow chooses and `l2-flows` remembers the
            // choice (refreshed by every packet): a known flow keeps its backend.
            ipv4_dependency(&mut e);
            ether_dependency(&mut e);
            flow_key(&mut e);
            e.push(Expr::map(SET_L2_FLOWS, reg::R1, FLOW_DATA));
            // Written, then read back for the update: nft 1.0.6 cannot list a dynset whose
            // data comes straight from a map lookup (it aborts).
            set_ether(&mut e, 0, FLOW_DATA);
            e.push(Expr::payload(PayloadField::EtherDaddr, FLOW_DATA));
            e.push(flow_update(FLOW_DATA));
            e.push(Expr::immediate(reg::R1, out.mac.to_vec()));
            set_ether(&mut e, 6, reg::R1);
            fwd(&mut e, out.index);
            rules.push(Rule::new(f, TABLE, &chain, std::mem::take(&mut e)));
        }
        if slots > 0 && !stateless && !farm.persistence.is_empty() {
            // A known client goes back to its backend (and, per flow, stays there).
            let keys = &farm.persistence;
            sets.entry(l2_persist_set(keys))
                .or_insert_with(|| persist_map(keys));
            ipv4_dependency(&mut e);
            ether_dependency(&mut e);
            persist_key(&mut e, keys);
            e.push(Expr::map(&l2_persist_set(keys), reg::R1, PERSIST_DATA));
            set_ether(&mut e, 0, PERSIST_DATA);
            e.push(Expr::payload(PayloadField::EtherDaddr, PERSIST_DATA));
            e.push(persist_update(keys, farm.persist_ttl, PERSIST_DATA));
            if per_flow {
                flow_key(&mut e);
                e.push(flow_update(PERSIST_DATA));
            }
            e.push(Expr::immediate(reg::R1, out.mac.to_vec()));
            set_ether(&mut e, 6, reg::R1);
            fwd(&mut e, out.index);
            rules.push(Rule::new(f, TABLE, &chain, std::mem::take(&mut e)));
        }
        if slots > 0 && per_flow {
            ipv4_dependency(&mut e);
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
            flow_key(&mut e);
            e.push(Expr::payload(PayloadField::EtherDaddr, FLOW_DATA));
            e.push(flow_update(FLOW_DATA));
            remember_client(&mut e, farm);
            fwd(&mut e, out.index);
            rules.push(Rule::new(f, TABLE, &chain, std::mem::take(&mut e)));
            needs_flows = true;
        }
        if slots > 0 && !stateless && !per_flow {
            // Direct server return: rewrite both MACs, send out of `oface`.
            ipv4_dependency(&mut e);
            ether_dependency(&mut e);
            e.push(Expr::immediate(reg::R1, out.mac.to_vec()));
            set_ether(&mut e, 6, reg::R1);
            hash(&mut e, farm, slots, slot_base(fa.id));
            e.push(Expr::map(&shard, reg::R1, reg::R1));
            set_ether(&mut e, 0, reg::R1);
            remember_client(&mut e, farm);
            fwd(&mut e, out.index);
            rules.push(Rule::new(f, TABLE, &chain, std::mem::take(&mut e)));
        }
        if slots > 0 && stateless {
            // Stateless DNAT: remember the client's MAC, rewrite the destination address and
            // MACs, send out of `oface`; replies are rewritten back in `stl-<farm>-back`.
            // (Each rule names its own IPv4 and Ethernet dependencies so nft can show it.)
            ipv4_dependency(&mut e);
            ether_dependency(&mut e);
            e.push(Expr::payload(PayloadField::IpSaddr, reg::R1));
            e.push(Expr::payload(PayloadField::EtherSaddr, reg::R2));
            e.push(Expr::Dynset {
                set: STL_CLIENTS.into(),
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
                set_ip(e, 16, reg);
                e.push(Expr::payload(PayloadField::IpDaddr, reg));
            };
            let rewrite = stl_port_rewrite(farm);
            let finish = |e: &mut Vec<Expr>| {
                if let Some((_, csum)) = rewrite {
                    // The backend's port, looked up by its address (every backend has one here).
                    e.push(Expr::payload(PayloadField::IpDaddr, reg::R1));
                    e.push(Expr::map(STL_PORTS, reg::R1, reg::R1));
                    set_port(e, 2, reg::R1, csum);
                }
                e.push(Expr::payload(PayloadField::IpDaddr, reg::R1));
                e.push(Expr::map(STL_MACS, reg::R1, reg::R1));
                set_ether(e, 0, reg::R1);
                e.push(Expr::immediate(reg::R1, out.mac.to_vec()));
                set_ether(e, 6, reg::R1);
                fwd(e, out.index);
            };
            let stl_flows = matches!(farm.scheduler, Scheduler::Rr | Scheduler::Weight);
            let keys = &farm.persistence;
            if stl_flows {
                // A known flow keeps its backend (the choice is per flow, not per packet).
                ipv4_dependency(&mut e);
                ether_dependency(&mut e);
                flow_key(&mut e);
                e.push(Expr::map(STL_FLOWS, reg::R1, FLOW_DATA));
                rewrite_ip(&mut e, FLOW_DATA);
                stl_flow_key(&mut e, vip);
                e.push(stl_flow_update(FLOW_DATA));
                finish(&mut e);
                rules.push(Rule::new(f, TABLE, &chain, std::mem::take(&mut e)));
                needs_stl_flows = true;
            }
            if !keys.is_empty() {
                // A known client goes back to its backend.
                sets.entry(stl_persist_set(keys))
                    .or_insert_with(|| stl_persist_map(keys));
                ipv4_dependency(&mut e);
                ether_dependency(&mut e);
                persist_key(&mut e, keys);
                e.push(Expr::map(&stl_persist_set(keys), reg::R1, PERSIST_DATA));
                rewrite_ip(&mut e, PERSIST_DATA);
                stl_persist_key(&mut e, keys, vip);
                e.push(stl_persist_update(keys, farm.persist_ttl, PERSIST_DATA));
                if stl_flows {
                    stl_flow_key(&mut e, vip);
                    e.push(stl_flow_update(PERSIST_DATA));
                }
                finish(&mut e);
                rules.push(Rule::new(f, TABLE, &chain, std::mem::take(&mut e)));
            }
            // Choose: the slot is computed on the client's packet, then the packet is
            // rewritten and the choice remembered.
            ipv4_dependency(&mut e);
            ether_dependency(&mut e);
            if stl_flows {
                e.push(Expr::Numgen {
                    dreg: reg::R1,
                    modulus: slots,
                    random: farm.scheduler == Scheduler::Weight,
                    offset: slot_base(fa.id),
                });
            } else {
                hash(&mut e, farm, slots, slot_base(fa.id));
            }
            e.push(Expr::map(&shard, reg::R1, PERSIST_DATA));
            rewrite_ip(&mut e, PERSIST_DATA);
            if stl_flows {
                stl_flow_key(&mut e, vip);
                e.push(stl_flow_update(PERSIST_DATA));
            }
            if !keys.is_empty() {
                stl_persist_key(&mut e, keys, vip);
                e.push(stl_persist_update(keys, farm.persist_ttl, PERSIST_DATA));
            }
            finish(&mut e);
            rules.push(Rule::new(f, TABLE, &chain, std::mem::take(&mut e)));
            let back = format!("{chain}-back");
            let mut r = Vec::new();
            ipv4_dependency(&mut r);
            ether_dependency(&mut r);
            if let Some((vport, csum)) = rewrite {
                r.push(Expr::immediate(reg::R1, vport.to_be_bytes().to_vec()));
                set_port(&mut r, 0, reg::R1, csum);
            }
            r.push(Expr::immediate(reg::R1, vip.octets().to_vec()));
            set_ip(&mut r, 12, reg::R1);
            r.push(Expr::payload(PayloadField::IpDaddr, reg::R1));
            r.push(Expr::map(STL_CLIENTS, reg::R1, reg::R1));
            set_ether(&mut r, 0, reg::R1);
            r.push(Expr::immediate(reg::R1, inl.mac.to_vec()));
            set_ether(&mut r, 6, reg::R1);
            fwd(&mut r, inl.index);
            extra.push(ChainDef {
                chain: Chain::regular(f, TABLE, &back),
                rules: vec![Rule::new(f, TABLE, &back, r)],
            });
            back_devs.insert(oface.clone());
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
            .slots4
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let b = members.get(m)?;
                let data = if stateless {
                    match b.ip_addr {
                        std::net::IpAddr::V4(a) => a.octets().to_vec(),
                        std::net::IpAddr::V6(_) => return None,
                    }
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
        let ports = crate::model::parse_ports(&farm.virtual_ports).unwrap_or_default();
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
                let (std::net::IpAddr::V4(a), Some(mac)) = (b.ip_addr, res.macs.get(&b.name)) else {
                    continue;
                };
                macs.push(SetElem::mapping(a.octets().to_vec(), Data::Value(mac.to_vec())));
                // With port rewriting, replies come from the backend's own port.
                let own: Vec<crate::model::PortRange> = match rewrite {
                    Some((vport, _)) => {
                        let p = b.port.unwrap_or(vport);
                        backend_ports.push(SetElem::mapping(
                            a.octets().to_vec(),
                            Data::Value(p.to_be_bytes().to_vec()),
                        ));
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
                        let key = concat(&[&[*proto], &a.octets(), &r.first.to_be_bytes()]);
                        returns.push(SetElem::mapping(
                            key,
                            Data::Verdict(Verdict::Goto(format!("{chain}-back"))),
                        ));
                    }
                }
            }
            part.elems.insert(STL_MACS.into(), macs);
            if rewrite.is_some() {
                part.elems.insert(STL_PORTS.into(), backend_ports);
                needs_stl_ports = true;
            }
        }
        if farm.state == FarmState::Up {
            // A stateless farm has one address (its replies are rewritten to it); dsr may have more.
            let vips = farm.virtual_addresses.iter().filter_map(|a| match a {
                std::net::IpAddr::V4(v) => Some(*v),
                std::net::IpAddr::V6(_) => None,
            });
            for vip in vips {
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
                        let key = concat(&[&[*proto], &vip.octets(), &r.first.to_be_bytes()]);
                        services.push(SetElem::mapping(key, Data::Verdict(Verdict::Goto(chain.clone()))));
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
    let (mut addr_services, mut addr_returns) = (Vec::new(), Vec::new());
    for ((back, proto, addr), mut claims) in ranges {
        claims.sort();
        let name = format!(
            "l2{}ports-{proto}-{}",
            if back { "r" } else { "" },
            u32::from(addr)
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
                ipv4_dependency(&mut e);
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
            concat(&[&[proto], &addr.octets()]),
            Data::Verdict(Verdict::Goto(name.clone())),
        );
        if back {
            addr_returns.push(elem);
        } else {
            addr_services.push(elem);
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
    let addr_type = TypeSpec::concat(&[DataType::InetProto, DataType::Ipv4Addr]);
    sets.insert(
        SET_L2_SERVICE_ADDRS.into(),
        Set::map(
            f,
            TABLE,
            SET_L2_SERVICE_ADDRS,
            addr_type.clone(),
            TypeSpec::of(DataType::Verdict),
        ),
    );
    let service_type = TypeSpec::concat(&[DataType::InetProto, DataType::Ipv4Addr, DataType::InetService]);
    sets.insert(
        SET_L2_SERVICES.into(),
        Set::map(
            f,
            TABLE,
            SET_L2_SERVICES,
            service_type.clone(),
            TypeSpec::of(DataType::Verdict),
        ),
    );
    if needs_stl_ports {
        sets.insert(
            STL_PORTS.into(),
            Set::map(
                f,
                TABLE,
                STL_PORTS,
                TypeSpec::of(DataType::Ipv4Addr),
                TypeSpec::of(DataType::InetService),
            ),
        );
    }
    if needs_stl_flows {
        let mut flows = Set::map(
            f,
            TABLE,
            STL_FLOWS,
            TypeSpec::concat(&[DataType::Ipv4Addr, DataType::Ipv4Addr, DataType::InetService]),
            TypeSpec::of(DataType::Ipv4Addr),
        )
        .with_flags(NFT_SET_TIMEOUT | NFT_SET_EVAL);
        flows.size = Some(super::layout::LIMIT_SIZE);
        sets.insert(STL_FLOWS.into(), flows);
    }
    if needs_flows {
        let mut flows = Set::map(
            f,
            TABLE,
            SET_L2_FLOWS,
            TypeSpec::concat(&[DataType::Ipv4Addr, DataType::Ipv4Addr, DataType::InetService]),
            TypeSpec::of(DataType::EtherAddr),
        )
        .with_flags(NFT_SET_TIMEOUT | NFT_SET_EVAL);
        flows.size = Some(super::layout::LIMIT_SIZE);
        sets.insert(SET_L2_FLOWS.into(), flows);
    }
    if !back_devs.is_empty() {
        sets.insert(
            SET_L2_RETURN_ADDRS.into(),
            Set::map(
                f,
                TABLE,
                SET_L2_RETURN_ADDRS,
                addr_type,
                TypeSpec::of(DataType::Verdict),
            ),
        );
        sets.insert(
            SET_L2_RETURNS.into(),
            Set::map(
                f,
                TABLE,
                SET_L2_RETURNS,
                service_type,
                TypeSpec::of(DataType::Verdict),
            ),
        );
        sets.insert(
            STL_MACS.into(),
            Set::map(
                f,
                TABLE,
                STL_MACS,
                TypeSpec::of(DataType::Ipv4Addr),
                TypeSpec::of(DataType::EtherAddr),
            ),
        );
        let mut clients = Set::map(
            f,
            TABLE,
            STL_CLIENTS,
            TypeSpec::of(DataType::Ipv4Addr),
            TypeSpec::of(DataType::EtherAddr),
        )
        .with_flags(NFT_SET_TIMEOUT | NFT_SET_EVAL);
        clients.size = Some(super::layout::LIMIT_SIZE);
        sets.insert(STL_CLIENTS.into(), clients);
    }
    // One ingress chain per device: client dispatch where farms listen, reply dispatch where
    // stateless farms' backends answer.
    let mut chains = Vec::new();
    for dev in in_devs.union(&back_devs) {
        let name = ingress_chain(dev);
        let mut rules = Vec::new();
        if in_devs.contains(dev) {
            let mut e = Vec::new();
            ipv4_dependency(&mut e);
            e.push(Expr::meta(NFT_META_L4PROTO, reg::R1));
            e.push(Expr::payload(PayloadField::IpDaddr, reg::r32(1)));
            e.push(Expr::payload(PayloadField::ThDport, reg::r32(2)));
            e.push(Expr::map(SET_L2_SERVICES, reg::R1, reg::VERDICT));
            rules.push(Rule::new(f, TABLE, &name, e));
            let mut e = Vec::new();
            ipv4_dependency(&mut e);
            e.push(Expr::meta(NFT_META_L4PROTO, reg::R1));
            e.push(Expr::payload(PayloadField::IpDaddr, reg::r32(1)));
            e.push(Expr::map(SET_L2_SERVICE_ADDRS, reg::R1, reg::VERDICT));
            rules.push(Rule::new(f, TABLE, &name, e));
        }
        if back_devs.contains(dev) {
            let mut e = Vec::new();
            ipv4_dependency(&mut e);
            e.push(Expr::meta(NFT_META_L4PROTO, reg::R1));
            e.push(Expr::payload(PayloadField::IpSaddr, reg::r32(1)));
            e.push(Expr::payload(PayloadField::ThSport, reg::r32(2)));
            e.push(Expr::map(SET_L2_RETURNS, reg::R1, reg::VERDICT));
            rules.push(Rule::new(f, TABLE, &name, e));
            let mut e = Vec::new();
            ipv4_dependency(&mut e);
            e.push(Expr::meta(NFT_META_L4PROTO, reg::R1));
            e.push(Expr::payload(PayloadField::IpSaddr, reg::r32(1)));
            e.push(Expr::map(SET_L2_RETURN_ADDRS, reg::R1, reg::VERDICT));
            rules.push(Rule::new(f, TABLE, &name, e));
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
    let mut shared_elems = BTreeMap::from([
        (SET_L2_SERVICES.to_string(), services),
        (SET_L2_SERVICE_ADDRS.to_string(), addr_services),
    ]);
    if !back_devs.is_empty() {
        shared_elems.insert(SET_L2_RETURNS.to_string(), returns);
        shared_elems.insert(SET_L2_RETURN_ADDRS.to_string(), addr_returns);
    }
    let mut shared = range_parts;
    shared.extend([(
        SET_L2_SERVICES.to_string(),
        FarmPart {
            chain: None,
            extra: Vec::new(),
            elems: shared_elems,
        },
    )]);
    Some(FamilyState {
        table: Table::new(f, TABLE),
        sets,
        objs: BTreeMap::new(),
        chains,
        shared,
        farms,
    })
}

fn fields_len(fields: &[KeyField]) -> u32 {
    fields
        .iter()
        .map(|k| match k {
            KeyField::Srcip | KeyField::Dstip => 4,
            KeyField::Srcport | KeyField::Dstport => 2,
            KeyField::Srcmac | KeyField::Dstmac => 6,
        })
        .sum()
}
