//! Least privilege for the daemon: nf_tables needs CAP_NET_ADMIN and nothing else does. Started as
//! root (by hand, or by the bus's activation helper where there is no systemd), the daemon keeps
//! that one capability and drops every other, bounding set included, before it reads any input.
//! Under systemd the unit already runs it as its own user with only that capability.

const CAP_NET_ADMIN: u32 = 12;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// The calling process's effective capabilities, as a bit set.
pub fn effective() -> Result<u64, String> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget with a v3 header and room for its two data structs.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut CapHeader, data.as_mut_ptr()) };
    if r != 0 {
        return Err(format!("capget: {}", std::io::Error::last_os_error()));
    }
    Ok(u64::from(data[0].effective) | (u64::from(data[1].effective) << 32))
}

/// Keeps CAP_NET_ADMIN only (effective, permitted, bounding set) and forbids gaining more, when
/// running as root; elsewhere checks that CAP_NET_ADMIN is there. Returns what it did.
pub fn keep_only_net_admin() -> Result<&'static str, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return if effective()? & (1 << CAP_NET_ADMIN) != 0 {
            Ok("running as a user with CAP_NET_ADMIN")
        } else {
            Err("CAP_NET_ADMIN is missing: run as root or with AmbientCapabilities=CAP_NET_ADMIN".into())
        };
    }
    for cap in 0..=last_cap() {
        if cap != CAP_NET_ADMIN {
            // SAFETY: prctl with plain integer arguments; dropping a capability the kernel does
            // not know fails harmlessly (EINVAL).
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        }
    }
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let keep = 1u32 << CAP_NET_ADMIN;
    let data = [
        CapData {
            effective: keep,
            permitted: keep,
            inheritable: 0,
        },
        CapData::default(),
    ];
    // SAFETY: capset with a v3 header and its two data structs.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if r != 0 {
        return Err(format!("capset: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: prctl with plain integer arguments.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    Ok("running as root with CAP_NET_ADMIN only")
}
