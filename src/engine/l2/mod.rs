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
//! Interfaces, MACs and backend neighbours are taken from the farm or from the host: `discover`
//! asks the host and returns plain [`HostFacts`]; rendering (`table`, `farm`, `dsr`, `stl`) is a
//! pure function of the configuration, the allocation and those facts.
//!
//! - `facts`: the facts, and what a farm resolves to from them; `discover`: where they come from.
//! - `table`: the whole table and its shared part; `farm`: one farm's chain and elements;
//!   `draft`: the table in the making and a farm's context;
//!   `dsr`, `stl`: the rules of each mode; `exprs`, `sets`: expressions and set definitions.

mod discover;
mod draft;
mod dsr;
mod exprs;
mod facts;
mod farm;
mod sets;
mod stl;
mod table;
#[cfg(test)]
mod tests;

pub use discover::Host;
pub use draft::BackendMacs;
pub use facts::{HostFacts, Link, Resolved, Unresolved, check, resolve};
pub use stl::stl_port_rewrite;
pub use table::render;
