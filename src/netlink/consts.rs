//! Constants the generated `sys` module lacks: newer than the build host's uapi headers, defined as
//! macros the generator does not follow, or from headers it does not read (nf_nat.h, netlink.h).

/// `NLMSG_MIN_TYPE`: nfnetlink batch delimiters.
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub const NFNL_MSG_BATCH_END: u16 = 0x11;
/// Table flag: the table survives its owner's exit (kernel 6.9+).
pub const NFT_TABLE_F_PERSIST: u32 = 0x4;

// linux/netfilter/nf_nat.h
pub const NF_NAT_RANGE_MAP_IPS: u32 = 1 << 0;
pub const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 1 << 1;
pub const NF_NAT_RANGE_PROTO_RANDOM: u32 = 1 << 2;
pub const NF_NAT_RANGE_PERSISTENT: u32 = 1 << 3;
pub const NF_NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 1 << 4;
pub const NF_NAT_RANGE_PROTO_OFFSET: u32 = 1 << 5;
pub const NF_NAT_RANGE_NETMAP: u32 = 1 << 6;

// linux/netlink.h
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
pub const NLM_F_ACK_TLVS: u16 = 0x200;
pub const NLMSGERR_ATTR_MSG: u16 = 1;
pub const NLMSGERR_ATTR_OFFS: u16 = 2;
pub const NLA_F_NESTED: u16 = 0x8000;
pub const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000);
pub const SOL_NETLINK: i32 = 270;
pub const NETLINK_ADD_MEMBERSHIP: i32 = 1;
pub const NETLINK_DROP_MEMBERSHIP: i32 = 2;
pub const NETLINK_CAP_ACK: i32 = 10;
pub const NETLINK_EXT_ACK: i32 = 11;

/// Size of `struct nlmsghdr` and of `struct nfgenmsg`.
pub const NLMSG_HDRLEN: usize = 16;
pub const NFGENMSG_LEN: usize = 4;

/// Registers: 0 is the verdict register, 1-4 are 16-byte registers, 8-23 the 4-byte ones.
pub mod reg {
    pub const VERDICT: u32 = 0;
    pub const R1: u32 = 1;
    pub const R2: u32 = 2;
    pub const R3: u32 = 3;
    pub const R4: u32 = 4;
    /// The n-th 4-byte register (n < 16), numbered as the kernel reports it back: registers that
    /// start a 16-byte register are dumped as `NFT_REG_1..4` (`NFT_REG32_04` comes back as
    /// `NFT_REG_2`), so using that number keeps what we send equal to what we read.
    pub const fn r32(n: u32) -> u32 {
        if n % 4 == 0 { 1 + n / 4 } else { 8 + n }
    }
}

/// `ct state` bits (linux/netfilter/nf_conntrack_common.h: NF_CT_STATE_BIT).
pub const NF_CT_STATE_INVALID_BIT: u32 = 1 << 0;
pub const NF_CT_STATE_BIT_ESTABLISHED: u32 = 1 << 1;
pub const NF_CT_STATE_BIT_RELATED: u32 = 1 << 2;
pub const NF_CT_STATE_BIT_NEW: u32 = 1 << 3;
pub const NF_CT_STATE_UNTRACKED_BIT: u32 = 1 << 6;
