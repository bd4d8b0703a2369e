//! Least privilege for the daemon: nf_tables needs CAP_NET_ADMIN and nothing else does. Started as
//! root (by hand, or by the bus's activation helper where there is no systemd), the daemon keeps
//! that one capability effective and drops every other, bounding set included, before it reads any
//! input. Exec health checks must not run as root: for them CAP_SETUID and CAP_SETGID stay
//! permitted, never effective but on the thread that starts such a check, for the fork
//! ([`SwitchUser`]); the child gives them up with its uid. Under systemd the unit already runs the
//! daemon as its own user with only CAP_NET_ADMIN, and checks run as that user.

use caps::{CapSet, Capability, CapsHashSet};

/// Why the capabilities could not be brought down to CAP_NET_ADMIN.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("CAP_NET_ADMIN is missing: run as root or with AmbientCapabilities=CAP_NET_ADMIN")]
    NoNetAdmin,
    #[error("cannot {what}: {source}")]
    Caps {
        what: &'static str,
        source: caps::errors::CapsError,
    },
    #[error("cannot forbid gaining privileges (PR_SET_NO_NEW_PRIVS): {0}")]
    NoNewPrivs(nix::Error),
}

fn caps_err(what: &'static str) -> impl FnOnce(caps::errors::CapsError) -> PrivilegeError {
    move |source| PrivilegeError::Caps { what, source }
}

/// Keeps CAP_NET_ADMIN only effective (CAP_SETUID and CAP_SETGID permitted too, for
/// [`SwitchUser`]; inheritable and ambient empty) and forbids gaining more, when running as root; elsewhere checks that CAP_NET_ADMIN is there.
/// Capabilities belong to a thread and new threads copy them, so this is called before the daemon
/// starts any. Returns what it did.
pub fn keep_only_net_admin() -> Result<&'static str, PrivilegeError> {
    if !nix::unistd::geteuid().is_root() {
        let has = caps::has_cap(None, CapSet::Effective, Capability::CAP_NET_ADMIN)
            .map_err(caps_err("read the effective capabilities"))?;
        return if has {
            Ok("running as a user with CAP_NET_ADMIN")
        } else {
            Err(PrivilegeError::NoNetAdmin)
        };
    }
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes with the rest below.
    // Only the capabilities this kernel knows are in it, so every drop must succeed.
    let permitted: CapsHashSet = [Capability::CAP_NET_ADMIN, SETUID, SETGID].into_iter().collect();
    for cap in caps::runtime::thread_all_supported() {
        if !permitted.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(caps_err("drop from the bounding set"))?;
        }
    }
    let effective: CapsHashSet = [Capability::CAP_NET_ADMIN].into_iter().collect();
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clear the ambient set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(caps_err("clear the inheritable set"))?;
    // Effective before permitted: the kernel refuses an effective set larger than the permitted.
    caps::set(None, CapSet::Effective, &effective).map_err(caps_err("set the effective set"))?;
    caps::set(None, CapSet::Permitted, &permitted).map_err(caps_err("set the permitted set"))?;
    nix::sys::prctl::set_no_new_privs().map_err(PrivilegeError::NoNewPrivs)?;
    Ok(
        "running as root with CAP_NET_ADMIN only (CAP_SETUID and CAP_SETGID permitted, raised to start exec checks as their user)",
    )
}

const SETUID: Capability = Capability::CAP_SETUID;
const SETGID: Capability = Capability::CAP_SETGID;

/// CAP_SETUID and CAP_SETGID effective on this thread while it lives, so that a child forked now
/// can take another user's ids (std's `Command::uid` and `gid`, applied in the child). Capabilities
/// belong to a thread: the daemon's other threads never have them, and this one drops them again
/// when the guard goes, right after the fork.
pub struct SwitchUser(());

impl SwitchUser {
    pub fn raise() -> Result<SwitchUser, PrivilegeError> {
        for cap in [SETUID, SETGID] {
            caps::raise(None, CapSet::Effective, cap).map_err(caps_err("raise CAP_SETUID/CAP_SETGID"))?;
        }
        Ok(SwitchUser(()))
    }
}

impl Drop for SwitchUser {
    fn drop(&mut self) {
        for cap in [SETUID, SETGID] {
            if let Err(e) = caps::drop(None, CapSet::Effective, cap) {
                // Leaving it raised on one thread beats stopping the daemon; say so.
                tracing::error!("cannot lower {cap} after starting a check: {e}");
            }
        }
    }
}
