//! The public names of the API, shared by the daemon's front ends and the clients: the bus name,
//! object paths, interfaces, the varlink socket, and the key tables ([`props`]). The command
//! line links this module, never a server module.

pub mod props;

use crate::model::bus_path_escape;

/// The D-Bus well-known name, and the varlink interface.
pub const BUS_NAME: &str = "org.nftlbd1";
/// The root object: the Manager and the ObjectManager.
pub const ROOT: &str = "/org/nftlbd1";
pub const MANAGER: &str = "org.nftlbd1.Manager";
pub const FARM: &str = "org.nftlbd1.Farm";
pub const BACKEND: &str = "org.nftlbd1.Backend";
pub const POLICY: &str = "org.nftlbd1.Policy";
pub const CHECKPOINT: &str = "org.nftlbd1.Checkpoint";
/// Where the daemon serves varlink unless told otherwise.
pub const VARLINK_SOCKET: &str = "/run/nftlbd/org.nftlbd1";

/// A farm's object path (names escaped as sd_bus_path_encode does).
pub fn farm_path(farm: &str) -> String {
    format!("{ROOT}/farm/{}", bus_path_escape(farm))
}

pub fn backend_path(farm: &str, backend: &str) -> String {
    format!("{}/backend/{}", farm_path(farm), bus_path_escape(backend))
}

pub fn checkpoint_path(id: u32) -> String {
    format!("{ROOT}/checkpoint/{id}")
}

pub fn policy_path(policy: &str) -> String {
    format!("{ROOT}/policy/{}", bus_path_escape(policy))
}
