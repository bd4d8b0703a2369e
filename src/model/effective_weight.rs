//! The weight the scheduler uses: the operator's `weight` scaled by what the checks say now (an
//! agent's percentage, `health-weight`, and a slow start's ramp, `health-ramp`). The configured
//! `weight` is never changed by them: it is what the operator set and what is saved as such.
//!
//! Rounding: to the nearest whole weight, halves up, and never below 1 while the shares are above
//! 0. A backend of weight 1 at 50 % (or at a slow start's first 9 %) stays 1: rounding it to 0
//! would take it out, which only an agent's 0 % (or its `drain`) asks for. Slots are whole, so a
//! farm of small weights shows a share only as far as whole slots can (weights 1 and 1 at 50 %
//! stay an even split; weights 4 and 4 at 50 % split 2 to 4).

use super::config::Backend;

/// A whole share, in percent.
const ALL: u64 = 100;

/// `backend`'s weight as the scheduler counts it: 0 only when an agent asked for 0 %.
pub fn effective_weight(backend: &Backend) -> u32 {
    scaled(
        backend.weight,
        backend.health_weight.unwrap_or(100),
        backend.health_ramp.unwrap_or(100),
    )
}

/// `weight` × `agent` % × `ramp` %, rounded as the module says. Shares above 100 count as 100.
pub fn scaled(weight: u32, agent: u8, ramp: u8) -> u32 {
    let share = u64::from(agent).min(ALL) * u64::from(ramp).min(ALL);
    if share == 0 || weight == 0 {
        return 0;
    }
    let whole = ALL * ALL;
    let w = (u64::from(weight) * share + whole / 2) / whole;
    // At most `weight` (the share is at most whole), so it fits.
    u32::try_from(w.max(1)).unwrap_or(weight)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shares_multiply_and_round_to_the_nearest_weight_halves_up() {
        assert_eq!(scaled(10, 100, 100), 10);
        assert_eq!(scaled(10, 50, 100), 5);
        assert_eq!(scaled(10, 50, 50), 3); // 2.5
        assert_eq!(scaled(3, 50, 100), 2); // 1.5
        assert_eq!(scaled(4, 30, 100), 1); // 1.2
        assert_eq!(scaled(100, 75, 10), 8); // 7.5
        assert_eq!(scaled(10_000, 1, 1), 1);
        assert_eq!(scaled(u32::MAX, 100, 100), u32::MAX);
        assert_eq!(scaled(u32::MAX, 50, 100), u32::MAX / 2 + 1);
    }

    #[test]
    fn a_share_above_zero_never_takes_the_backend_out_and_zero_does() {
        assert_eq!(scaled(1, 50, 100), 1);
        assert_eq!(scaled(1, 1, 9), 1);
        assert_eq!(scaled(7, 0, 100), 0);
        assert_eq!(scaled(7, 100, 0), 0);
        // Out-of-range shares (refused by validation) count as whole.
        assert_eq!(scaled(7, 200, 255), 7);
    }

    #[test]
    fn a_backend_s_shares_are_its_checks_and_default_to_whole() {
        let mut b = Backend::new("a", "10.0.0.1".parse().unwrap());
        b.weight = 8;
        assert_eq!(effective_weight(&b), 8);
        b.health_weight = Some(50);
        assert_eq!(effective_weight(&b), 4);
        b.health_ramp = Some(25);
        assert_eq!(effective_weight(&b), 1);
        b.health_weight = Some(0);
        assert_eq!(effective_weight(&b), 0);
        // The operator's weight is left as set.
        assert_eq!(b.weight, 8);
    }
}
