use super::*;
use crate::engine::alloc::FreeIds;
use crate::engine::alloc::slot_index::SlotIndex;
use crate::model::{BackendState, effective_priority};

/// xorshift64*: deterministic, so a failing case is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const STATES: [BackendState; 4] = [
    BackendState::Up,
    BackendState::Drain,
    BackendState::Down,
    BackendState::Off,
];

fn random_backend(r: &mut Rng, name: String) -> Backend {
    let ip = if r.below(3) == 0 {
        format!("2001:db8::{}", r.below(200) + 1)
    } else {
        format!("10.0.0.{}", r.below(200) + 1)
    };
    let mut b = Backend::new(&name, ip.parse().unwrap());
    b.weight = r.below(4) as u32 + 1;
    b.priority = r.below(3) as u32 + 1;
    // Mostly up, so that tiers stay put in most steps and the incremental path runs.
    b.state = if r.below(4) == 0 {
        STATES[r.below(4)]
    } else {
        BackendState::Up
    };
    // A few sorry backends: with the farm's quorum they make the sorry tier come and go.
    b.sorry = r.below(6) == 0;
    b
}

/// One random change of `farm`: the backend before and after.
fn random_change(r: &mut Rng, farm: &mut Farm, serial: &mut usize) -> (Option<Backend>, Option<Backend>) {
    let n = farm.backends.len();
    let mut fresh = |r: &mut Rng| {
        *serial += 1;
        random_backend(r, format!("n{serial}"))
    };
    match r.below(8) {
        0 | 1 if n < 40 => {
            let b = fresh(r);
            farm.backends.insert(r.below(n + 1), b.clone());
            (None, Some(b))
        }
        2 if n > 0 => {
            let old = farm.backends.remove(r.below(n));
            (Some(old), None)
        }
        3 if n > 0 => {
            let i = r.below(n);
            let old = farm.backends[i].clone();
            let mut new = fresh(r);
            new.weight = old.weight;
            farm.backends[i] = new.clone();
            (Some(old), Some(new))
        }
        _ if n > 0 => {
            let i = r.below(n);
            let old = farm.backends[i].clone();
            let b = &mut farm.backends[i];
            match r.below(5) {
                0 => b.weight = r.below(6) as u32 + 1,
                1 => b.state = STATES[r.below(4)],
                2 => b.priority = r.below(3) as u32 + 1,
                3 => b.sorry = !b.sorry,
                _ => {
                    b.ip_addr = if b.ip_addr.is_ipv6() {
                        "10.0.1.1".parse().unwrap()
                    } else {
                        "2001:db8:1::1".parse().unwrap()
                    }
                }
            }
            (Some(old), Some(b.clone()))
        }
        _ => (None, None),
    }
}

/// Runs `steps` random changes of a random farm, each through `change_backend` and through
/// `update`, and checks they agree, that the delta is the exact difference and that the index
/// stays true. Returns how many steps took the incremental path.
fn agree(seed: u64, steps: usize) -> usize {
    let mut r = Rng(seed);
    let mut farm = Farm::new("f");
    farm.quorum = r.below(4) as u32;
    let mut serial = 0;
    for _ in 0..r.below(30) {
        serial += 1;
        let b = random_backend(&mut r, format!("n{serial}"));
        farm.backends.push(b);
    }
    let mut inc = FarmAlloc::default();
    inc.update(&farm).unwrap();
    let mut incremental_steps = 0;
    let start = inc.clone();
    let mut composed = SlotDelta::default();
    composed.v4.old_len = start.slots4.len() as u32;
    composed.v4.new_len = composed.v4.old_len;
    composed.v6.old_len = start.slots6.len() as u32;
    composed.v6.new_len = composed.v6.old_len;
    for step in 0..steps {
        let old_p = effective_priority(&farm);
        let (old, new) = random_change(&mut r, &mut farm, &mut serial);
        if old.is_none() && new.is_none() {
            continue;
        }
        let new_p = effective_priority(&farm);
        let mut full = inc.clone();
        full.update(&farm).unwrap();
        let before = inc.clone();
        let delta = inc
            .change_backend(&farm, old.as_ref(), new.as_ref(), old_p, new_p)
            .unwrap();
        let at = format!("seed {seed} step {step}: {old:?} -> {new:?}");
        assert_eq!(inc, full, "{at}");
        assert_eq!(inc.next_member, full.next_member, "{at}");
        assert_eq!(
            delta,
            SlotDelta {
                v4: FamilyDelta::between(&before.slots4, &inc.slots4),
                v6: FamilyDelta::between(&before.slots6, &inc.slots6),
            },
            "{at}"
        );
        // The delta alone puts the slots back (an undo copies no farm's slots).
        let (mut s4, mut s6) = (inc.slots4.clone(), inc.slots6.clone());
        delta.v4.undo(&mut s4);
        delta.v6.undo(&mut s6);
        assert_eq!((&s4, &s6), (&before.slots4, &before.slots6), "{at}: undone");
        let ix = inc.index.0.as_ref().expect("the index is kept");
        assert!(ix.describes(&inc), "{at}");
        incremental_steps += usize::from(old_p == new_p);
        composed = composed.then(&delta);
        // The steps so far as one delta: it undoes them all, and names every slot that differs
        // (with what it had) and no slot twice.
        let (mut s4, mut s6) = (inc.slots4.clone(), inc.slots6.clone());
        composed.v4.undo(&mut s4);
        composed.v6.undo(&mut s6);
        assert_eq!((&s4, &s6), (&start.slots4, &start.slots6), "{at}: composed undo");
        for (d, before, after) in [
            (&composed.v4, &start.slots4, &inc.slots4),
            (&composed.v6, &start.slots6, &inc.slots6),
        ] {
            let exact = FamilyDelta::between(before, after);
            let differing: Vec<(u32, u16)> = d
                .changed
                .iter()
                .zip(&d.was)
                .filter(|(i, was)| after.get(**i as usize) != Some(*was))
                .map(|(i, was)| (*i, *was))
                .collect();
            let want: Vec<(u32, u16)> = exact.changed.iter().copied().zip(exact.was).collect();
            assert_eq!(differing, want, "{at}: composed");
            assert_eq!(
                (d.old_len, d.new_len, &d.gone),
                (exact.old_len, exact.new_len, &exact.gone),
                "{at}"
            );
            assert!(d.changed.windows(2).all(|w| w[0] < w[1]), "{at}");
        }
    }
    incremental_steps
}

#[test]
fn one_backend_changes_give_what_update_gives() {
    let mut incremental = 0;
    for seed in 1..=300 {
        incremental += agree(seed, 60);
    }
    // Most steps must have taken the incremental path, or the comparison proved little.
    assert!(incremental > 10_000, "{incremental}");
}

fn farm_of(weights: &[(&str, &str, u32)]) -> Farm {
    let mut f = Farm::new("f");
    for (name, ip, w) in weights {
        let mut b = Backend::new(name, ip.parse().unwrap());
        b.weight = *w;
        f.backends.push(b);
    }
    f
}

#[test]
fn removing_a_backend_moves_tail_slots_into_its_holes() {
    let mut farm = farm_of(&[("a", "10.0.0.1", 2), ("b", "10.0.0.2", 1), ("c", "10.0.0.3", 3)]);
    let mut fa = FarmAlloc::default();
    fa.update(&farm).unwrap();
    assert_eq!(fa.slots4, [1, 1, 2, 3, 3, 3]);
    let a = farm.backends.remove(0);
    let d = fa.change_backend(&farm, Some(&a), None, 1, 1).unwrap();
    assert_eq!(fa.slots4, [3, 3, 2, 3]);
    assert_eq!(
        d.v4,
        FamilyDelta {
            old_len: 6,
            new_len: 4,
            changed: vec![0, 1],
            was: vec![1, 1],
            gone: vec![3, 3],
        }
    );
    assert_eq!(d.v4.removed(), 4..6);
    assert!(!fa.members.contains_key("a"));
    assert_eq!(d.v6, FamilyDelta::default());
}

#[test]
fn an_added_backend_takes_the_next_id_and_appends_its_slots() {
    let mut farm = farm_of(&[("a", "10.0.0.1", 1), ("b", "2001:db8::1", 1)]);
    let mut fa = FarmAlloc::default();
    fa.update(&farm).unwrap();
    let mut c = Backend::new("c", "2001:db8::2".parse().unwrap());
    c.weight = 2;
    farm.backends.insert(0, c.clone());
    let d = fa.change_backend(&farm, None, Some(&c), 1, 1).unwrap();
    assert_eq!((fa.members["c"], fa.next_member), (3, 3));
    assert_eq!(fa.slots6, [2, 3, 3]);
    assert_eq!(d.v6.changed, [1, 2]);
    assert!(d.v4.changed.is_empty() && d.v4.old_len == d.v4.new_len);
    assert!(!d.is_empty());
}

#[test]
fn a_tier_failover_rebalances_the_farm_and_reports_every_edit() {
    let mut farm = farm_of(&[("a", "10.0.0.1", 1), ("b", "10.0.0.2", 2), ("c", "10.0.0.3", 1)]);
    farm.backends[1].priority = 2;
    farm.backends[2].priority = 2;
    let mut fa = FarmAlloc::default();
    fa.update(&farm).unwrap();
    assert_eq!(fa.slots4, [1]);
    let old = farm.backends[0].clone();
    farm.backends[0].state = BackendState::Down;
    let p = effective_priority(&farm);
    assert_eq!(p, 2);
    let d = fa
        .change_backend(&farm, Some(&old), Some(&farm.backends[0]), 1, p)
        .unwrap();
    assert_eq!(fa.slots4, [2, 2, 3]);
    assert_eq!(d.v4.changed, [0, 1, 2]);
    assert_eq!((d.v4.old_len, d.v4.new_len), (1, 3));
}

#[test]
fn no_free_member_id_is_an_error_that_changes_nothing() {
    let mut farm = farm_of(&[("a", "10.0.0.1", 1)]);
    let mut fa = FarmAlloc::default();
    fa.update(&farm).unwrap();
    for id in 2..=65535u16 {
        fa.members.insert(format!("x{id}"), id);
    }
    fa.forget_index();
    let before = fa.clone();
    let b = Backend::new("b", "10.0.0.2".parse().unwrap());
    farm.backends.push(b.clone());
    assert_eq!(
        fa.change_backend(&farm, None, Some(&b), 1, 1),
        Err(AllocError::MemberIds("f".into()))
    );
    assert_eq!((&fa, fa.next_member), (&before, before.next_member));
    // A rename frees the old id first, as `update` does, and reuses it when it is the only one.
    let a = farm.backends.remove(0);
    farm.backends.pop();
    farm.backends.push(b.clone());
    fa.change_backend(&farm, Some(&a), Some(&b), 1, 1).unwrap();
    assert_eq!((fa.members.get("a"), fa.members["b"]), (None, 1));
    assert_eq!(fa.slots4, [1]);
}

#[test]
fn an_index_edited_behind_its_back_is_rebuilt_and_clones_start_without_one() {
    let mut farm = farm_of(&[("a", "10.0.0.1", 2), ("b", "10.0.0.2", 2)]);
    let mut fa = FarmAlloc::default();
    fa.update(&farm).unwrap();
    fa.build_index();
    assert!(fa.clone().index.0.is_none());
    // Put back as an undo does, through the public fields, without `forget_index`.
    fa.slots4 = vec![2, 1, 2, 1];
    let old = farm.backends[0].clone();
    farm.backends[0].weight = 1;
    fa.change_backend(&farm, Some(&old), Some(&farm.backends[0]), 1, 1)
        .unwrap();
    assert_eq!(fa.slots4, [2, 1, 2]);
    assert!(fa.index.0.as_ref().unwrap().describes(&fa));
    // Serialized content only: a built index does not make allocations differ.
    let mut plain: FarmAlloc = serde_json::from_str(&serde_json::to_string(&fa).unwrap()).unwrap();
    assert_eq!(plain, fa);
    plain.build_index();
    assert_eq!(plain, fa);
}

#[test]
fn the_free_id_search_follows_the_cursor_and_wraps() {
    let mut fa = FarmAlloc::default();
    for id in [1u16, 2, 3, 64, 65534] {
        fa.members.insert(format!("m{id}"), id);
    }
    let ix = SlotIndex::build(&fa);
    assert_eq!(ix.next_free(0), Some(4));
    assert_eq!(ix.next_free(63), Some(65));
    assert_eq!(ix.next_free(65533), Some(65535));
    assert_eq!(ix.next_free(65535), Some(4));
    for cursor in (0..=65535u16).step_by(61).chain([64, 65534, 65535]) {
        let mut free = FreeIds::new(fa.members.values().copied(), cursor);
        assert_eq!(ix.next_free(cursor), free.take(), "cursor {cursor}");
    }
}

#[test]
fn crossing_the_quorum_gives_the_slots_to_the_sorry_backend_and_back() {
    let mut farm = farm_of(&[("a", "10.0.0.1", 1), ("b", "10.0.0.2", 1), ("s", "10.0.0.9", 2)]);
    farm.quorum = 2;
    farm.backends[2].sorry = true;
    let mut fa = FarmAlloc::default();
    fa.update(&farm).unwrap();
    let (a, b, s) = (fa.members["a"], fa.members["b"], fa.members["s"]);
    assert_eq!(fa.slots4, [a, b]);
    let up = farm.backends[0].clone();
    farm.backends[0].state = BackendState::Down;
    let p = effective_priority(&farm);
    assert_eq!(p, crate::model::SORRY_TIER);
    fa.change_backend(&farm, Some(&up), Some(&farm.backends[0]), 1, p)
        .unwrap();
    assert_eq!(fa.slots4, [s, s]);
    // Below the quorum, a regular backend's change is its own alone: it takes no slot.
    let old = farm.backends[1].clone();
    farm.backends[1].weight = 3;
    let d = fa
        .change_backend(&farm, Some(&old), Some(&farm.backends[1]), p, p)
        .unwrap();
    assert!(d.is_empty(), "{d:?}");
    let down = farm.backends[0].clone();
    farm.backends[0].state = BackendState::Up;
    fa.change_backend(&farm, Some(&down), Some(&farm.backends[0]), p, 1)
        .unwrap();
    assert_eq!(fa.slots4, [a, b, b, b]);
}
