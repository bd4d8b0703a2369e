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

use crate::model::{Config, Farm, FarmState, KeyField, Mode, Scheduler};
use crate::netlink::consts::reg;
use crate::netlink::sys::*;
use crate::netlink::types::concat;
use crate::netlink::*;

use super::alloc::Allocation;
use super::layout::{TABLE, shard_of, slot_base};
use super::ruleset::{ChainDef, FamilyState, FarmPart};

pub const SET_L2_SERVICES: &str = "l2-services";

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

/// Checks what a layer-2 farm needs that only this host can tell (its interfaces exist).
pub fn check_links(config: &Config, links: &Links) -> Result<(), (String, String)> {
    for f in config.farms.iter().filter(|f| is_l2(f)) {
        for (key, dev) in [("iface", &f.iface), ("oface", &f.oface)] {
            let Some(dev) = dev else { continue };
            if links.get(dev).is_none() {
                return Err((
                    format!("farms[{}].{key}", f.name),
                    format!("no interface named {dev:?} on this host"),
                ));
            }
        }
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

/// The whole `netdev nftlbd` table, or `None` when no farm is a layer-2 farm that can render.
pub fn render(config: &Config, alloc: &Allocation, links: &Links) -> Option<FamilyState> {
    let f = Family::Netdev;
    let mut sets = BTreeMap::new();
    let mut chains: BTreeMap<String, ChainDef> = BTreeMap::new();
    let mut farms = BTreeMap::new();
    let mut services = Vec::new();
    for farm in config.farms.iter().filter(|x| x.mode == Mode::Dsr) {
        let (Some(fa), Some(iface), Some(oface)) = (alloc.farms.get(&farm.name), &farm.iface, &farm.oface)
        else {
            continue;
        };
        let (Some(_), Some(out)) = (links.get(iface), links.get(oface)) else {
            continue;
        };
        let chain = l2_farm_chain(&farm.name);
        let shard = l2_slots(shard_of(fa.id));
        sets.entry(shard.clone()).or_insert_with(|| {
            let mut s = Set::map(
                f,
                TABLE,
                &shard,
                TypeSpec::of(DataType::Integer(4)),
                TypeSpec::of(DataType::EtherAddr),
            );
            s.userdata.key_typeof = Some(Typeof::Numgen {
                random: false,
                modulus: 2,
                offset: 0,
            });
            s.userdata.data_typeof = Some(Typeof::Payload(PayloadField::EtherDaddr));
            s
        });
        chains.entry(ingress_chain(iface)).or_insert_with(|| {
            let mut e = Vec::new();
            ipv4_dependency(&mut e);
            e.push(Expr::meta(NFT_META_L4PROTO, reg::R1));
            e.push(Expr::payload(PayloadField::IpDaddr, reg::r32(1)));
            e.push(Expr::payload(PayloadField::ThDport, reg::r32(2)));
            e.push(Expr::map(SET_L2_SERVICES, reg::R1, reg::VERDICT));
            let hook = Hook {
                point: HookPoint::Ingress,
                priority: 101,
                device: Some(iface.clone()),
            };
            let name = ingress_chain(iface);
            ChainDef {
                chain: Chain::base(f, TABLE, &name, ChainType::Filter, hook, Verdict::Accept),
                rules: vec![Rule::new(f, TABLE, &name, e)],
            }
        });
        // The farm's chain: rewrite both MACs, send out of `oface`.
        let mut e = Vec::new();
        ether_dependency(&mut e);
        e.push(Expr::immediate(reg::R1, out.mac.to_vec()));
        set_ether(&mut e, 6, reg::R1);
        let slots = fa.slots4.len() as u32;
        let mut rules = Vec::new();
        if slots > 0 {
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
                    offset: slot_base(fa.id),
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
                    offset: slot_base(fa.id),
                }),
            }
            e.push(Expr::map(&shard, reg::R1, reg::R1));
            set_ether(&mut e, 0, reg::R1);
            e.push(Expr::immediate(reg::R2, out.index.to_ne_bytes().to_vec()));
            e.push(Expr::Fwd {
                sreg_dev: reg::R2,
                addr: None,
            });
            rules.push(Rule::new(f, TABLE, &chain, e));
        }
        rules.push(Rule::new(f, TABLE, &chain, vec![Expr::verdict(Verdict::Drop)]));
        let mut part = FarmPart {
            chain: Some(ChainDef {
                chain: Chain::regular(f, TABLE, &chain),
                rules,
            }),
            extra: Vec::new(),
            elems: BTreeMap::new(),
        };
        let macs: BTreeMap<u16, [u8; 6]> = farm
            .backends
            .iter()
            .filter_map(|b| Some((*fa.members.get(&b.name)?, b.ether_addr?.0)))
            .collect();
        let slot_elems: Vec<SetElem> = fa
            .slots4
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let mac = macs.get(m)?;
                Some(SetElem::mapping(
                    (slot_base(fa.id) + i as u32).to_ne_bytes().to_vec(),
                    Data::Value(mac.to_vec()),
                ))
            })
            .collect();
        part.elems.insert(shard, slot_elems);
        if farm.state == FarmState::Up {
            let ports = crate::model::parse_ports(&farm.virtual_ports).unwrap_or_default();
            for proto in farm.protocol.numbers() {
                for vip in &farm.virtual_addresses {
                    let std::net::IpAddr::V4(a) = vip else { continue };
                    for r in ports.iter().filter(|r| r.first == r.last) {
                        let key = concat(&[&[*proto], &a.octets(), &r.first.to_be_bytes()]);
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
    sets.insert(
        SET_L2_SERVICES.into(),
        Set::map(
            f,
            TABLE,
            SET_L2_SERVICES,
            TypeSpec::concat(&[DataType::InetProto, DataType::Ipv4Addr, DataType::InetService]),
            TypeSpec::of(DataType::Verdict),
        ),
    );
    let shared = BTreeMap::from([(
        SET_L2_SERVICES.to_string(),
        FarmPart {
            chain: None,
            extra: Vec::new(),
            elems: BTreeMap::from([(SET_L2_SERVICES.to_string(), services)]),
        },
    )]);
    Some(FamilyState {
        table: Table::new(f, TABLE),
        sets,
        objs: BTreeMap::new(),
        chains: chains.into_values().collect(),
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
