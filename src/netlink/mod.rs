//! The nf_tables wire protocol, in pure Rust over a NETLINK_NETFILTER socket.
//!
//! - [`Table`], [`Chain`], [`Rule`], [`Set`], [`SetElem`], [`Obj`] and [`Expr`] are plain values
//!   that encode to and decode from netlink attributes (no I/O).
//! - [`Batch`] collects changes; [`Connection::commit`] applies a batch as one atomic transaction
//!   and names the refused object on failure.
//! - [`Connection`] also reads everything back (`list_*`), and [`Monitor`] follows every change
//!   made by anyone.
//! - [`Connection::probe`] finds which optional features this kernel has.

mod attr;
mod batch;
mod bytes;
mod conn;
pub mod conntrack;
pub mod consts;
mod data;
mod error;
mod expr;
#[doc(hidden)]
pub mod fuzzing;
mod monitor;
mod objects;
mod probe;
mod request;
pub mod rtnl;
mod socket;
#[allow(clippy::all)]
pub mod sys;
pub mod types;

pub use batch::Batch;
pub use bytes::Bytes;
pub use conn::{Connection, QUIET_BATCH_BYTES, Quiet};
pub use consts::reg;
pub use data::{ChainType, Data, Family, Hook, HookPoint, Verdict};
pub use error::{Error, Result};
pub use expr::{CmpOp, DynsetOp, Expr, Limit, NatType, RateUnit, Reject};
pub use monitor::{Change, Event, Monitor, Paused};
pub use objects::{Chain, NAME_MAX, Obj, ObjKind, Rule, Set, SetElem, Table};
pub use probe::{KernelFeatures, add_flowtable};
pub use types::{ByteOrder, DataType, PayloadField, SetUserdata, TypeSpec, Typeof, concat};
