//! The model: farms, backends and policies as data, and their validation. Pure: no I/O.
//!
//! Only the value types specified exactly by the public interface live here so far (names, ports);
//! farms and backends follow with the engine.

mod names;
mod ports;

pub use names::{NameError, bus_path_escape, validate_name};
pub use ports::{PortError, PortRange, parse_ports};
