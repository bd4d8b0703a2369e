//! [`List`]: the ordered lists of the configuration (farms, a farm's backends). A change to one
//! backend of a farm of 60,000 must not copy the farm, and the service keeps the configuration it
//! replaces for its readers and events; so the lists are persistent vectors: a copy is O(1) and
//! shares everything, a change to one entry copies O(log n) of it.
//!
//! A persistent vector allocates a whole leaf of [`SMALL`] entries even for two, and most farms
//! have a few backends: so a list of up to [`SMALL`] entries is a shared vector of just its
//! entries instead (a copy is O(1), a change copies at most [`SMALL`] entries). A list grows into
//! a persistent vector past [`SMALL`] entries and goes back when it shrinks to [`SHRINK`]: the gap
//! keeps a list that grows and shrinks by one at the boundary from converting on each change.
//!
//! The methods are the part of `Vec`'s interface the code base uses, so that a list reads like one.

mod iter;

use std::fmt;
use std::ops::{Index, IndexMut};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use iter::{Entries, IntoIter, Iter, IterMut};

/// The most entries of a small list: a persistent vector's leaf, below which it saves nothing.
pub const SMALL: usize = 64;
/// A persistent vector shrunk to this many entries becomes a small list again.
pub const SHRINK: usize = SMALL / 2;

/// An ordered list with O(1) copies (see the module).
#[derive(Clone)]
pub struct List<T: Clone>(Repr<T>);

#[derive(Clone)]
enum Repr<T: Clone> {
    /// At most [`SMALL`] entries; copy on write.
    Small(Arc<Vec<T>>),
    /// More than [`SHRINK`] entries.
    Big(imbl::Vector<T>),
}

impl<T: Clone> List<T> {
    pub fn new() -> Self {
        List(Repr::Small(Arc::new(Vec::new())))
    }

    fn small(v: Vec<T>) -> Self {
        let mut l = List(Repr::Small(Arc::new(v)));
        l.settle();
        l
    }

    /// Moves the list to the representation its length calls for: O(1) when it has it, else
    /// O([`SMALL`]) (or O(n) once, for a vector built past [`SMALL`] in one step).
    fn settle(&mut self) {
        match &mut self.0 {
            Repr::Small(v) if v.len() > SMALL => {
                let entries = std::mem::take(Arc::make_mut(v));
                self.0 = Repr::Big(entries.into_iter().collect());
            }
            Repr::Big(b) if b.len() <= SHRINK => {
                let entries: Vec<T> = std::mem::take(b).into_iter().collect();
                self.0 = Repr::Small(Arc::new(entries));
            }
            _ => {}
        }
    }

    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Small(v) => v.len(),
            Repr::Big(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> Iter<'_, T> {
        match &self.0 {
            Repr::Small(v) => Entries::Small(v.iter()),
            Repr::Big(b) => Entries::Big(b.iter()),
        }
    }

    /// Every entry, mutably: copies whatever the list shares with others (O(n)); for tests and
    /// whole-list edits, not for changing one entry.
    pub fn iter_mut(&mut self) -> IterMut<'_, T> {
        match &mut self.0 {
            Repr::Small(v) => Entries::Small(Arc::make_mut(v).iter_mut()),
            Repr::Big(b) => Entries::Big(b.iter_mut()),
        }
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        match &self.0 {
            Repr::Small(v) => v.get(i),
            Repr::Big(b) => b.get(i),
        }
    }

    /// One entry, mutably: O(log n), copying only the path to it (a small list: its at most
    /// [`SMALL`] entries, when shared).
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        match &mut self.0 {
            // The bounds first: a miss must not copy the list.
            Repr::Small(v) if i < v.len() => Arc::make_mut(v).get_mut(i),
            Repr::Small(_) => None,
            Repr::Big(b) => b.get_mut(i),
        }
    }

    pub fn first(&self) -> Option<&T> {
        self.get(0)
    }

    pub fn last(&self) -> Option<&T> {
        match &self.0 {
            Repr::Small(v) => v.last(),
            Repr::Big(b) => b.back(),
        }
    }

    pub fn push(&mut self, x: T) {
        match &mut self.0 {
            Repr::Small(v) => Arc::make_mut(v).push(x),
            Repr::Big(b) => b.push_back(x),
        }
        self.settle();
    }

    pub fn pop(&mut self) -> Option<T> {
        let x = match &mut self.0 {
            Repr::Small(v) if v.is_empty() => None,
            Repr::Small(v) => Arc::make_mut(v).pop(),
            Repr::Big(b) => b.pop_back(),
        };
        self.settle();
        x
    }

    pub fn insert(&mut self, i: usize, x: T) {
        match &mut self.0 {
            Repr::Small(v) => Arc::make_mut(v).insert(i, x),
            Repr::Big(b) => b.insert(i, x),
        }
        self.settle();
    }

    pub fn remove(&mut self, i: usize) -> T {
        let x = match &mut self.0 {
            Repr::Small(v) => Arc::make_mut(v).remove(i),
            Repr::Big(b) => b.remove(i),
        };
        self.settle();
        x
    }

    pub fn retain(&mut self, f: impl FnMut(&T) -> bool) {
        match &mut self.0 {
            Repr::Small(v) => Arc::make_mut(v).retain(f),
            Repr::Big(b) => b.retain(f),
        }
        self.settle();
    }

    pub fn clear(&mut self) {
        *self = List::new();
    }

    pub fn truncate(&mut self, len: usize) {
        match &mut self.0 {
            Repr::Small(v) if len < v.len() => Arc::make_mut(v).truncate(len),
            Repr::Small(_) => {}
            Repr::Big(b) if len < b.len() => b.truncate(len),
            Repr::Big(_) => {}
        }
        self.settle();
    }

    /// Whether both lists are the same one (a copy not changed since): O(1). Empty lists are
    /// all the same.
    pub fn same(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Repr::Small(a), Repr::Small(b)) => Arc::ptr_eq(a, b) || (a.is_empty() && b.is_empty()),
            (Repr::Big(a), Repr::Big(b)) => a.ptr_eq(b),
            _ => false,
        }
    }

    /// The positions below the shorter length where the lists differ, looking only into the
    /// leaves they do not share: O(n / leaf + changed leaves) for a list changed in place or
    /// appended to. `None` when the leaves are cut differently before the end (an entry was
    /// inserted or removed in the middle): the caller compares another way. With a small list
    /// on either side, the at most [`SMALL`] common positions are compared one by one (and a
    /// removal shows as every later position).
    pub fn differences(&self, other: &Self) -> Option<Vec<usize>>
    where
        T: PartialEq,
    {
        let (Repr::Big(a), Repr::Big(b)) = (&self.0, &other.0) else {
            if self.same(other) {
                return Some(Vec::new());
            }
            let pairs = self.iter().zip(other.iter()).enumerate();
            return Some(pairs.filter(|(_, (x, y))| x != y).map(|(i, _)| i).collect());
        };
        super::whole_farm_pass();
        let common = self.len().min(other.len());
        let (mut a, mut b) = (a.leaves(), b.leaves());
        let mut out = Vec::new();
        let mut at = 0;
        while at < common {
            let (x, y) = (a.next()?, b.next()?);
            let n = x.len().min(y.len());
            if x.len() != y.len() && at + n < common {
                return None;
            }
            if !(x.len() == y.len() && std::ptr::eq(x.as_ptr(), y.as_ptr())) {
                let upto = n.min(common - at);
                out.extend((0..upto).filter(|k| x[*k] != y[*k]).map(|k| at + k));
            }
            at += n;
        }
        Some(out)
    }

    /// The first position where the lists differ (the shorter one's length when it is the
    /// other's beginning), skipping the leaves they share.
    pub fn first_difference(&self, other: &Self) -> usize
    where
        T: PartialEq,
    {
        let (Repr::Big(a), Repr::Big(b)) = (&self.0, &other.0) else {
            if self.same(other) {
                return self.len();
            }
            // A small list on either side: at most SMALL pairs.
            return self.iter().zip(other.iter()).take_while(|(x, y)| x == y).count();
        };
        super::whole_farm_pass();
        let (mut la, mut lb) = (a.leaves(), b.leaves());
        let mut at = 0;
        while let (Some(x), Some(y)) = (la.next(), lb.next()) {
            if x.len() == y.len() && std::ptr::eq(x.as_ptr(), y.as_ptr()) {
                at += x.len();
                continue;
            }
            break;
        }
        let same = a
            .skip(at)
            .iter()
            .zip(b.skip(at).iter())
            .take_while(|(x, y)| x == y)
            .count();
        at + same
    }

    /// The entries from position `from` on, in O(log n) each: `iter().skip(from)` would step
    /// through every entry before `from`.
    pub fn tail(&self, from: usize) -> impl Iterator<Item = &T> {
        (from..self.len()).filter_map(move |i| self.get(i))
    }

    /// The list without its first `n` entries, sharing the rest: O(log n) (a small list: a copy
    /// of its at most [`SMALL`] entries).
    pub fn skip(&self, n: usize) -> Self {
        match &self.0 {
            Repr::Small(v) => List::small(v.get(n..).unwrap_or_default().to_vec()),
            Repr::Big(b) => {
                let mut l = List(Repr::Big(b.skip(n)));
                l.settle();
                l
            }
        }
    }

    pub fn to_vec(&self) -> Vec<T> {
        match &self.0 {
            Repr::Small(v) => v.to_vec(),
            Repr::Big(b) => b.iter().cloned().collect(),
        }
    }
}

impl<T: Clone> Default for List<T> {
    fn default() -> Self {
        List::new()
    }
}

impl<T: Clone + PartialEq> PartialEq for List<T> {
    /// Leaves the two lists share are equal without looking at their entries: comparing a
    /// configuration with the one it was made from costs a pointer per leaf, not an entry.
    fn eq(&self, other: &Self) -> bool {
        if self.len() != other.len() {
            return false;
        }
        if self.same(other) {
            return true;
        }
        let (Repr::Big(a), Repr::Big(b)) = (&self.0, &other.0) else {
            // A small list on either side, so at most SMALL entries each.
            return self.iter().eq(other.iter());
        };
        super::whole_farm_pass();
        let (mut la, mut lb) = (a.leaves(), b.leaves());
        loop {
            match (la.next(), lb.next()) {
                (None, None) => return true,
                (Some(x), Some(y)) if x.len() == y.len() => {
                    if !std::ptr::eq(x.as_ptr(), y.as_ptr()) && x != y {
                        return false;
                    }
                }
                // Leaves cut differently (entries were inserted or removed): entry by entry.
                _ => return a.iter().eq(b.iter()),
            }
        }
    }
}

impl<T: Clone + fmt::Debug> fmt::Debug for List<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Clone> Index<usize> for List<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        match &self.0 {
            Repr::Small(v) => &v[i],
            Repr::Big(b) => &b[i],
        }
    }
}

impl<T: Clone> IndexMut<usize> for List<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        match &mut self.0 {
            Repr::Small(v) => &mut Arc::make_mut(v)[i],
            Repr::Big(b) => &mut b[i],
        }
    }
}

impl<T: Clone> From<Vec<T>> for List<T> {
    fn from(v: Vec<T>) -> Self {
        List::small(v)
    }
}

impl<T: Clone, const N: usize> From<[T; N]> for List<T> {
    fn from(v: [T; N]) -> Self {
        List::small(Vec::from(v))
    }
}

impl<T: Clone> FromIterator<T> for List<T> {
    fn from_iter<I: IntoIterator<Item = T>>(it: I) -> Self {
        List::small(it.into_iter().collect())
    }
}

impl<T: Clone> Extend<T> for List<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, it: I) {
        match &mut self.0 {
            Repr::Small(v) => Arc::make_mut(v).extend(it),
            Repr::Big(b) => b.extend(it),
        }
        self.settle();
    }
}

impl<T: Clone> IntoIterator for List<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        match self.0 {
            Repr::Small(v) => Entries::Small(Arc::unwrap_or_clone(v).into_iter()),
            Repr::Big(b) => Entries::Big(b.into_iter()),
        }
    }
}

impl<'a, T: Clone> IntoIterator for &'a List<T> {
    type Item = &'a T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a, T: Clone> IntoIterator for &'a mut List<T> {
    type Item = &'a mut T;
    type IntoIter = IterMut<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

impl<T: Clone + Serialize> Serialize for List<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de, T: Clone + Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<T>::deserialize(d).map(List::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_shares_and_compares_by_leaf() {
        let a: List<u32> = (0..10_000).collect();
        let mut b = a.clone();
        assert!(a.same(&b));
        b[5_000] = 7;
        assert!(!a.same(&b));
        assert_ne!(a, b);
        b[5_000] = 5_000;
        assert_eq!(a, b, "equal again although no longer the same list");
        b.remove(3);
        b.insert(3, 3);
        assert_eq!(a, b, "differently cut leaves compare entry by entry");
        b.push(1);
        assert_ne!(a, b);
        let mut c = a.clone();
        c[17] = 0;
        c[9_000] = 1;
        c.push(5);
        assert_eq!(a.differences(&c), Some(vec![17, 9_000]));
        let mut d = a.clone();
        d.remove(10);
        let diff = a.differences(&d);
        assert!(
            diff.is_none() || diff.is_some_and(|v| v.len() > 1_000),
            "a removal is not one change"
        );
        assert_eq!(a.first_difference(&d), 10);
        assert_eq!(a.skip(11), d.skip(10));
        assert_eq!(c.tail(9_999).copied().collect::<Vec<_>>(), [9_999, 5]);
        assert_eq!(c.tail(10_001).count(), 0);
        assert_eq!(a.first_difference(&a.clone()), a.len());
        assert_eq!(serde_json::to_string(&List::from(vec![1, 2])).unwrap(), "[1,2]");
        let back: List<u32> = serde_json::from_str("[3,4]").unwrap();
        assert_eq!(back.to_vec(), [3, 4]);
    }

    fn is_small<T: Clone>(l: &List<T>) -> bool {
        matches!(l.0, Repr::Small(_))
    }

    #[test]
    fn a_small_copy_is_the_same_until_changed_and_then_independent() {
        let a = List::from(vec![1, 2, 3]);
        let mut b = a.clone();
        assert!(is_small(&a));
        assert!(a.same(&b));
        assert!(List::<u32>::new().same(&List::new()), "empty lists are the same");
        b[1] = 20;
        assert!(!a.same(&b));
        assert_eq!(a.to_vec(), [1, 2, 3], "the original is untouched");
        assert_eq!(b.to_vec(), [1, 20, 3]);
        assert_eq!(a.differences(&b), Some(vec![1]));
        assert_eq!(a.first_difference(&b), 1);
        assert_ne!(a, b);
        *b.get_mut(1).unwrap() = 2;
        assert_eq!(a, b, "equal again although no longer the same list");
        assert!(!a.same(&b));
        assert_eq!(a.differences(&b), Some(vec![]));
        assert_eq!(a.first_difference(&b), 3);
        let mut c = a.clone();
        assert_eq!(c.get_mut(3), None);
        assert!(c.same(&a), "a miss does not copy");
        c.push(4);
        c[0] = 0;
        assert_eq!(
            a.differences(&c),
            Some(vec![0]),
            "the appended entry is past the common part"
        );
        assert_eq!(a.first_difference(&c), 0);
        let mut d = a.clone();
        d.remove(0);
        assert_eq!(a.first_difference(&d), 0);
        assert_eq!(a.skip(1), d);
        assert_eq!(a.skip(5).len(), 0);
        assert_eq!(a.tail(1).copied().collect::<Vec<_>>(), [2, 3]);
        assert_eq!(a.iter().rev().copied().collect::<Vec<_>>(), [3, 2, 1]);
        assert_eq!(a.iter().len(), 3);
        assert_eq!(format!("{a:?}"), "[1, 2, 3]");
        assert_eq!(serde_json::to_string(&a).unwrap(), "[1,2,3]");
        assert_eq!(a.clone().into_iter().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(a.to_vec(), [1, 2, 3], "consuming a copy leaves the original");
    }

    #[test]
    fn a_list_grows_past_small_and_shrinks_back_below_shrink() {
        let mut l: List<usize> = (0..SMALL).collect();
        assert!(is_small(&l));
        let before = l.clone();
        l.push(SMALL);
        assert!(!is_small(&l), "{} entries are a persistent vector", SMALL + 1);
        assert_eq!(l.to_vec(), (0..=SMALL).collect::<Vec<_>>());
        assert!(is_small(&before), "the copy kept its representation");
        assert_eq!(before.len(), SMALL);
        assert_eq!(l.first_difference(&before), SMALL);
        assert_eq!(before.differences(&l), Some(vec![]));
        assert_eq!(l.skip(1), (1..=SMALL).collect::<List<_>>());
        l.remove(0);
        assert!(!is_small(&l), "no conversion back until SHRINK");
        assert_eq!(l.differences(&before), Some((0..SMALL).collect::<Vec<_>>()));
        l.truncate(SHRINK + 1);
        assert!(!is_small(&l));
        l.pop();
        assert!(is_small(&l), "{SHRINK} entries are small again");
        assert_eq!(l.to_vec(), (1..=SHRINK).collect::<Vec<_>>());
        l.insert(0, 0);
        assert_eq!(l.to_vec(), (0..=SHRINK).collect::<Vec<_>>());
        l.extend(SHRINK + 1..=SMALL);
        assert!(!is_small(&l));
        assert_eq!(l.to_vec(), (0..=SMALL).collect::<Vec<_>>());
        l.retain(|x| *x % 8 == 0);
        assert!(is_small(&l));
        assert_eq!(l.to_vec(), (0..=SMALL).step_by(8).collect::<Vec<_>>());
        let big: List<usize> = (0..1_000).collect();
        assert!(!is_small(&big));
        assert!(is_small(&big.skip(1_000 - SHRINK)));
        assert_eq!(big.skip(1_000 - 2).to_vec(), [998, 999]);
    }

    mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            // Per thread: the tests run in parallel, each counts its own allocations only.
            static HELD: Cell<isize> = const { Cell::new(0) };
        }

        fn count(bytes: isize) {
            // `try_with`: the allocator also serves threads whose locals are being torn down.
            let _ = HELD.try_with(|h| h.set(h.get() + bytes));
        }

        /// The bytes this thread holds from the allocator.
        pub fn held() -> isize {
            HELD.with(Cell::get)
        }

        pub struct Counting;

        // SAFETY: every call is passed unchanged to `System`, which upholds `GlobalAlloc`'s
        // contract; the counting beside it neither allocates nor touches the memory.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                count(layout.size() as isize);
                // SAFETY: the caller's guarantees for `alloc` are those of `System.alloc`.
                unsafe { System.alloc(layout) }
            }

            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                count(-(layout.size() as isize));
                // SAFETY: `ptr` came from `System` with this layout (every allocation above does).
                unsafe { System.dealloc(ptr, layout) }
            }
        }

        #[global_allocator]
        static COUNTING: Counting = Counting;
    }

    #[test]
    fn a_list_of_two_large_entries_holds_less_than_2_kb() {
        #[derive(Clone, PartialEq)]
        struct Wide([u8; 400]);
        let before = counting::held();
        let l: List<Wide> = (0..2u8).map(|i| Wide([i; 400])).collect();
        let held = counting::held() - before;
        assert_eq!(l.len(), 2);
        assert!(
            held < 2_048,
            "a list of 2 entries of 400 bytes holds {held} bytes"
        );
        assert!(held >= 800, "the count sees the entries ({held} bytes)");
        let copy = l.clone();
        assert_eq!(counting::held() - before, held, "a copy allocates nothing");
        drop((l, copy));
        assert_eq!(counting::held(), before);
    }
}
