//! Randomness for spreading checks and for DNS query ids: not secret, only different across
//! checks and runs (a DNS reply must still match its query's address, port and id).

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // A different stream per thread even when two start in the same nanosecond.
    let local = Cell::new(0u8);
    nanos ^ (&local as *const Cell<u8> as u64).rotate_left(32)
}

/// The next value of a splitmix64 stream.
pub fn u64() -> u64 {
    STATE.with(|s| {
        let next = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

pub fn u16() -> u16 {
    (u64() >> 48) as u16
}

/// A value in `0..bound` (0 when `bound` is 0).
pub fn below(bound: u64) -> u64 {
    if bound == 0 { 0 } else { u64() % bound }
}
