//! nftlbd: a load balancer whose datapath is the kernel's nf_tables and whose control plane is a small,
//! hardened system service.
//!
//! Layers, data flowing one way: [`model`] (pure configuration and validation) → [`engine`] (objects,
//! diff, one transaction) → [`netlink`] (the nf_tables wire protocol) ↔ kernel; [`state`] persists what
//! was committed. The service and its D-Bus and varlink front ends will drive the engine.

pub mod ctl;
pub mod dbus;
pub mod engine;
pub mod farms_dir;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod logging;
pub mod model;
pub mod netlink;
pub mod notify;
pub mod polkit;
pub mod privileges;
pub mod reference;
pub mod schema;
pub mod service;
pub mod signals;
pub mod state;
#[cfg(test)]
mod testkit;
pub mod varlink;
