//! The kernel layout: table, chain and set names, and how connection marks encode farms and
//! backends. Every name the engine writes into the kernel comes from here.
//!
//! # Datapath (per family table `ip nftlbd` / `ip6 nftlbd`)
//!
//! ```text
//! prerouting (nat, dstnat)   meta l4proto . ip daddr . th dport vmap @services  → goto farm-<f>
//!                            meta l4proto . ip daddr vmap @service-addrs         → goto ports-<proto>-<addr>
//! ports-<proto>-<addr>       th dport 8000-8100 goto farm-<f> …  (one rule per port range)
//! farm-<f>                   ct mark set <farm tag>
//!                            [persistence: look up @persist-<key>, keep a live backend, refresh]
//!                            ct mark set <numgen|jhash|symhash> mod N offset <base> jump pick-<shard>
//!                            [persistence: remember the client] goto to-backend
//! pick-<shard>               ct mark set ct mark map @slots-<shard> return; drop
//! to-backend                 [ct mark vmap @backend-limits]; ct mark @new-conns; ct mark & 0xffff0000 @new-conns
//!                            meta mark set ct mark map @user-marks
//!                            dnat to ct mark map @targets-ap / @targets-a
//! postrouting (nat, srcnat)  ct status dnat: ct mark @masq masquerade / snat to ct mark map @snat-src
//! mangle (filter, mangle)    ct status dnat meta mark set ct mark map @user-marks
//! count, count-out (filter,  ct mark @traffic                      (the backend's element, or a
//!   dstnat + 10)             ct status dnat ct mark & 0xffff0000 @traffic   local farm's; the farm's)
//! ```
//!
//! `@traffic` holds one element per farm (its tag) and per backend (its id), each with a counter:
//! `Farm.Packets`/`Bytes` and `Backend.Packets`/`Bytes` are read from it by key. The counting
//! chains run after the NAT chains, so the first packet of a connection is counted too, in both
//! directions (prerouting: clients and backends; output: local farms' replies).
//!
//! `@new-conns` holds the same keys, each counting the connections given to it (a packet counter
//! of a nat chain, which sees only a connection's first packet): `NewConnections`.
//!
//! Per new connection this is one dispatch lookup, one slot lookup and two counter lookups, and per
//! packet two counter lookups, whatever the number of farms and backends. Rules in nat chains see only the first
//! packet of a connection. Single ports are dispatched by a hash map. Port ranges are not put in an interval map: the kernel's concatenated
//! interval sets (pipapo) cost more per lookup as they grow (measured: 10,000 ranges added 40-60 µs
//! to every new connection, 3.5 times the cost of plain forwarding). Instead a hash map on
//! protocol and address leads to a small chain per address whose rules compare the port: the cost
//! depends on the ranges of that one address only.
//!
//! # Why the slot maps are sharded
//! The kernel validates every element added to a *map* against every rule that binds the map
//! (`nft_add_set_elem` walks `set->bindings`), and binding a map from a new chain walks all its
//! elements. One slot map bound from 10,000 farm chains makes a full load O(farms × elements)
//! (measured: 10k farms took 4.9-16 s with `nft -f`). So farms are grouped into shards of
//! [`FARMS_PER_SHARD`] that share one slot map: the cost per element is bounded by the shard, and
//! the number of sets stays small (157 for 10,000 farms). Plain sets (`live`, `masq`) and maps
//! bound from shared chains only (`services`, `targets-*`) do not have this cost and are global.
//!
//! # Why a farm's chain does not bind its slot map
//! Every rule added that binds a map makes the kernel walk all the map's elements
//! (`nf_tables_bind_set`, on 6.1 as on 6.18: its "already bound to the same chain" shortcut
//! compares with the new binding's chain before that is set, so it never applies). A backend
//! change that changes N replaces the farm's rules, so a rule there binding `slots-<shard>`
//! cost a walk of the whole shard (measured: 6-13 ms at 60,000 slots, 0.07 ms at 1,000;
//! `examples/slot_replace.rs`). The farm's rule only draws the slot into the connection mark;
//! the shard's `pick-<shard>` chain, which no farm change touches, maps it (0.01 ms at any
//! size). It is also the map's only binding, so each element added is checked once, not once
//! per farm of the shard.
//!
//! # Marks
//! A connection's `ct mark` is its backend id: `farm id << 16 | member id`, both 1..=65535. While
//! a new connection is being scheduled, it holds the farm tag (`farm id << 16`); persistence keys
//! use `ct mark & 0xffff0000`, so the farm stays part of the key after the backend is chosen.
//! Users' `mark` keys are separate: they set the packet mark through `@user-marks` and never
//! share bits with the ids (no OR-collisions as in nftlb).

use crate::model::{Farm, KeyField, Mode};

/// The table name in every family we use.
pub const TABLE: &str = "nftlbd";

/// Whether a farm lives in the `netdev` table (layer-2 modes) instead of the `ip`/`ip6` ones.
pub fn is_l2(farm: &Farm) -> bool {
    matches!(farm.mode, Mode::Dsr | Mode::Stlsdnat)
}

pub const CHAIN_PREROUTING: &str = "prerouting";
pub const CHAIN_POSTROUTING: &str = "postrouting";
pub const CHAIN_MANGLE: &str = "mangle";
pub const CHAIN_TO_BACKEND: &str = "to-backend";

/// Dispatch of single ports (hash).
pub const SET_SERVICES: &str = "services";
/// The same dispatch for connections the balancer itself opens (`intra-connect` farms only).
pub const SET_SERVICES_LOCAL: &str = "services-local";
pub const SET_SERVICE_ADDRS_LOCAL: &str = "service-addrs-local";
pub const CHAIN_OUTPUT: &str = "output";
pub const CHAIN_FORWARD: &str = "forward";
/// Farm tag → `jump fwd-<farm>` for farms that log forwarded packets (`log: forward`).
pub const SET_FORWARD_LOG: &str = "forward-log";

pub fn forward_log_chain(farm: &str) -> String {
    format!("fwd-{farm}")
}

/// The chain that logs (rate-limited) and refuses what one security rule of a farm refuses.
pub fn refuse_chain(farm: &str, kind: &str) -> String {
    format!("refuse-{farm}-{kind}")
}

/// The kinds of refusal, in [`refuse_chain`] names and log prefixes: a farm's `new-rtlimit`, its
/// `est-connlimit`, and one per attached policy ([`policy_refusal`]).
pub const REFUSE_NEW_RTLIMIT: &str = "new-rtlimit";
pub const REFUSE_EST_CONNLIMIT: &str = "est-connlimit";

/// The refusal kind of a policy: `policy-WL-<name>` (whitelist) or `policy-BL-<name>`.
pub fn policy_refusal(whitelist: bool, policy: &str) -> String {
    format!("policy-{}-{policy}", if whitelist { "WL" } else { "BL" })
}

/// `tcp-strict`: the services (exact) and addresses (port ranges) whose TCP packets are checked.
pub const SET_STRICT_SERVICES: &str = "strict-services";
pub const SET_STRICT_ADDRS: &str = "strict-addrs";
/// The chain that drops invalid or bogus TCP packets.
pub const CHAIN_STRICT: &str = "tcp-strict";
/// Farm tag → `jump rst-rtlimit-…` for farms with an `rst-rtlimit`.
pub const SET_RST_LIMITS: &str = "rst-limits";

/// Chain and set that limit one client's TCP resets to `rate` with `burst`.
pub fn rst_rtlimit_name(rate: &crate::model::Rate, burst: u32, ttl: u32) -> String {
    format!("rst-rtlimit-{}-{burst}-{ttl}", rate.to_string().replace('/', "-"))
}

/// Dispatch of port ranges, first step: protocol and address → the `ports-…` chain of that pair.
pub const SET_SERVICE_ADDRS: &str = "service-addrs";
pub const SET_TARGETS_ADDR_PORT: &str = "targets-ap";
pub const SET_TARGETS_ADDR: &str = "targets-a";
pub const SET_MASQ: &str = "masq";
pub const SET_SNAT: &str = "snat-src";
pub const SET_USER_MARKS: &str = "user-marks";
pub const SET_LIVE: &str = "live";
/// Farm tags and backend ids, each element with a counter of its connections' packets.
pub const SET_TRAFFIC: &str = "traffic";
/// Farm tags and backend ids again, each element with a counter of the connections given to it:
/// `to-backend` (a nat chain: the first packet of a connection only) looks the chosen backend and
/// its farm up here once, after the backend's connection limit let it through.
pub const SET_NEW_CONNS: &str = "new-conns";
pub const CHAIN_COUNT: &str = "count";
pub const CHAIN_COUNT_OUT: &str = "count-out";
/// Per farm and client, one set per limit value: the new-connection rate (`new-rtlimit`). A set
/// per value because an element keeps the limit it was created with: a farm whose limit changes
/// moves to another set instead of keeping stale limits.
pub fn new_rtlimit_set(rate: &crate::model::Rate, burst: u32) -> String {
    format!("new-rtlimit-{}-{burst}", rate.to_string().replace('/', "-"))
}

/// Per farm and client: established connections (`est-connlimit` of `n`; no timeout, conntrack
/// counts them).
pub fn est_connlimit_set(n: u32) -> String {
    format!("est-connlimit-{n}")
}
/// Backend id → `jump climit-<N>` for backends with an `est-connlimit` of N.
pub const SET_BACKEND_LIMITS: &str = "backend-limits";
/// Established connections per backend with a limit of `n` (conntrack counts them).
pub fn backend_conns_set(n: u32) -> String {
    format!("backend-conns-{n}")
}

/// The chain that refuses a new connection to a backend that has `n` already.
pub fn climit_chain(n: u32) -> String {
    format!("climit-{n}")
}

/// Maximum number of clients tracked by each limit set.
pub const LIMIT_SIZE: u32 = 262_144;

/// The conntrack helper object of a helper and layer-4 protocol, e.g. `helper-ftp-tcp`.
pub fn helper_obj(helper: &str, proto: &str) -> String {
    format!("helper-{helper}-{proto}")
}

/// The set holding a policy's addresses.
pub fn policy_set(policy: &str) -> String {
    format!("policy-{policy}")
}

/// How many farms share one slot map (see the module documentation).
pub const FARMS_PER_SHARD: u32 = 64;
/// Bits of a farm's slot range inside its shard's key space: 2^20 slots (sum of weights).
pub const SLOT_BITS: u32 = 20;
/// Maximum number of dynamic persistence entries per persistence key kind.
pub const PERSIST_SIZE: u32 = 262_144;

pub const FARM_MASK: u32 = 0xffff_0000;
pub const MEMBER_MASK: u32 = 0x0000_ffff;

/// The chain that dispatches the port ranges of one protocol and address.
pub fn ports_chain(proto: u8, addr: &std::net::IpAddr) -> String {
    let hex: String = match addr {
        std::net::IpAddr::V4(a) => a.octets().iter().map(|b| format!("{b:02x}")).collect(),
        std::net::IpAddr::V6(a) => a.octets().iter().map(|b| format!("{b:02x}")).collect(),
    };
    format!("{PORTS_CHAIN_PREFIX}{proto}-{hex}")
}

/// What the names of [`ports_chain`]s start with.
pub const PORTS_CHAIN_PREFIX: &str = "ports-";
const FARM_CHAIN_PREFIX: &str = "farm-";

pub fn farm_chain(farm: &str) -> String {
    format!("{FARM_CHAIN_PREFIX}{farm}")
}

/// The farm name of a chain we created, if it is a farm chain.
pub fn chain_farm(chain: &str) -> Option<&str> {
    chain.strip_prefix(FARM_CHAIN_PREFIX)
}

pub fn shard_of(farm_id: u16) -> u32 {
    u32::from(farm_id) / FARMS_PER_SHARD
}

pub fn slots_set(shard: u32) -> String {
    format!("slots-{shard}")
}

/// The chain of a shard that turns the slot in the connection mark into the backend id. The only
/// rule that binds the shard's slot map: a farm's chain never does (see the module documentation).
pub fn pick_chain(shard: u32) -> String {
    format!("pick-{shard}")
}

/// First slot number of a farm in its shard's map.
pub fn slot_base(farm_id: u16) -> u32 {
    (u32::from(farm_id) % FARMS_PER_SHARD) << SLOT_BITS
}

pub fn farm_tag(farm_id: u16) -> u32 {
    u32::from(farm_id) << 16
}

pub fn backend_id(farm_id: u16, member: u16) -> u32 {
    farm_tag(farm_id) | u32::from(member)
}

/// The persistence map of one key kind, e.g. `persist-srcip-srcport`.
pub fn persist_set(keys: &[KeyField]) -> String {
    let mut name = String::from("persist");
    for k in keys {
        name.push('-');
        name.push_str(k.as_str());
    }
    name
}

// --- The `netdev nftlbd` table of layer-2 farms (`dsr`, `stlsdnat`) ----------------------------

/// A layer-2 set's or chain's name in an IP family: the IPv6 one is the IPv4 one with a `6`.
pub fn l2_family_name(v6: bool, base: &str) -> String {
    if v6 { format!("{base}6") } else { base.to_string() }
}

/// Client dispatch of single ports: protocol . VIP . port → `goto l2-<farm>`.
pub const SET_L2_SERVICES: &str = "l2-services";
/// Client dispatch of port ranges: protocol . VIP → the address's range chain.
pub const SET_L2_SERVICE_ADDRS: &str = "l2-service-addrs";
/// Stateless DNAT replies: protocol . backend address . port → `goto l2-<farm>-back`.
pub const SET_L2_RETURNS: &str = "l2-returns";
/// Stateless DNAT replies from port ranges: protocol . backend address → its range chain.
pub const SET_L2_RETURN_ADDRS: &str = "l2-return-addrs";
/// Flows of round-robin and weight dsr farms: client address . VIP . client port → backend MAC.
pub const SET_L2_FLOWS: &str = "l2-flows";
/// Flows of round-robin and weight stlsdnat farms: client . VIP . client port → backend address.
pub const STL_FLOWS: &str = "stl-flows";
/// Stateless DNAT: backend address → its MAC.
pub const STL_MACS: &str = "stl-macs";
/// Stateless DNAT: client address → its MAC (learnt from its packets, expiring).
pub const STL_CLIENTS: &str = "stl-clients";
/// Stateless DNAT with backend ports: backend address → its port.
pub const STL_PORTS: &str = "stl-ports";

/// A layer-2 farm's chain.
pub fn l2_farm_chain(farm: &str) -> String {
    format!("l2-{farm}")
}

/// The chain that rewrites a stateless DNAT farm's replies back.
pub fn l2_back_chain(farm: &str) -> String {
    format!("{}-back", l2_farm_chain(farm))
}

/// The netdev base chain at the ingress of one device.
pub fn ingress_chain(dev: &str) -> String {
    format!("ingress-{dev}")
}

/// A dsr slot map of a shard: slot → backend MAC.
pub fn l2_slots(shard: u32) -> String {
    format!("l2slots-{shard}")
}

/// A stateless DNAT slot map of a shard: slot → backend address.
pub fn stl_slots(v6: bool, shard: u32) -> String {
    format!("{}-{shard}", l2_family_name(v6, "stl-slots"))
}

/// The persistence map of a layer-2 key kind: VIP . fields → backend MAC (dsr, `l2-persist-…`)
/// or address (stlsdnat, `stl-persist-…`).
pub fn l2_persist_set(stateless: bool, v6: bool, keys: &[KeyField]) -> String {
    let kind = if stateless { "stl" } else { "l2" };
    l2_family_name(v6, &format!("{kind}-{}", persist_set(keys)))
}

/// A layer-2 farm's named counter (`netdev nftlbd`): layer-2 packets carry no connection mark to
/// look up, so each farm chain names its counter.
pub fn l2_counter(farm_id: u16) -> String {
    format!("traffic-{farm_id}")
}

/// A layer-2 farm's per-backend counters: backend MAC (dsr) or address (stlsdnat) → counter.
pub fn backend_traffic_set(farm_id: u16) -> String {
    format!("backend-traffic-{farm_id}")
}

/// The chain that dispatches the port ranges of one protocol and address, for clients or (stateless
/// DNAT) for backends' replies.
pub fn l2_ports_chain(replies: bool, proto: u8, addr: &std::net::IpAddr) -> String {
    let addr = match addr {
        std::net::IpAddr::V4(a) => u32::from(*a).to_string(),
        std::net::IpAddr::V6(a) => format!("6-{:x}", u128::from(*a)),
    };
    format!("l2{}ports-{proto}-{addr}", if replies { "r" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_farm_and_member_apart() {
        assert_eq!(backend_id(5, 7), 0x0005_0007);
        assert_eq!(backend_id(5, 7) & FARM_MASK, farm_tag(5));
        assert_eq!(backend_id(65535, 65535), u32::MAX);
        assert_eq!(shard_of(63), 0);
        assert_eq!(shard_of(64), 1);
        // The largest slot of the last farm of a shard still fits in 32 bits.
        assert_eq!(slot_base(63) + (1 << SLOT_BITS) - 1, 0x03ff_ffff);
        assert_eq!(
            persist_set(&[KeyField::Srcip, KeyField::Srcport]),
            "persist-srcip-srcport"
        );
        assert_eq!(chain_farm(&farm_chain("web")), Some("web"));
    }
}
