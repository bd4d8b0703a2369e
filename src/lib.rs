//! nftlbd: a load balancer whose datapath is the kernel's nf_tables and whose control plane is a small,
//! hardened system service.
//!
//! Layers, data flowing one way: `model` → `engine` → [`netlink`] ↔ kernel; `service` drives the engine
//! and is driven by the D-Bus and varlink front ends. Present so far: the netlink layer and the first
//! value types of the model.

pub mod model;
pub mod netlink;
