//! [`List`]: the ordered lists of the configuration (farms, a farm's backends). A change to one
//! backend of a farm of 60,000 must not copy the farm, and the service keeps the configuration it
//! replaces for its readers and events; so the lists are persistent vectors: a copy is O(1) and
//! shares everything, a change to one entry copies O(log n) of it.
//!
//! The methods are the part of `Vec`'s interface the code base uses, so that a list reads like one.

use std::fmt;
use std::ops::{Index, IndexMut};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An ordered list with O(1) copies (see the module).
#[derive(Clone)]
pub struct List<T: Clone>(imbl::Vector<T>);

impl<T: Clone> List<T> {
    pub fn new() -> Self {
        List(imbl::Vector::new())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> imbl::vector::Iter<'_, T, imbl::shared_ptr::DefaultSharedPtr> {
        self.0.iter()
    }

    /// Every entry, mutably: copies whatever the list shares with others (O(n)); for tests and
    /// whole-list edits, not for changing one entry.
    pub fn iter_mut(&mut self) -> imbl::vector::IterMut<'_, T, imbl::shared_ptr::DefaultSharedPtr> {
        self.0.iter_mut()
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        self.0.get(i)
    }

    /// One entry, mutably: O(log n), copying only the path to it.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.0.get_mut(i)
    }

    pub fn first(&self) -> Option<&T> {
        self.0.front()
    }

    pub fn last(&self) -> Option<&T> {
        self.0.back()
    }

    pub fn push(&mut self, x: T) {
        self.0.push_back(x)
    }

    pub fn pop(&mut self) -> Option<T> {
        self.0.pop_back()
    }

    pub fn insert(&mut self, i: usize, x: T) {
        self.0.insert(i, x)
    }

    pub fn remove(&mut self, i: usize) -> T {
        self.0.remove(i)
    }

    pub fn retain(&mut self, f: impl FnMut(&T) -> bool) {
        self.0.retain(f)
    }

    pub fn clear(&mut self) {
        self.0.clear()
    }

    pub fn truncate(&mut self, len: usize) {
        self.0.truncate(len)
    }

    /// Whether both lists are the same one (a copy not changed since): O(1).
    pub fn same(&self, other: &Self) -> bool {
        self.0.ptr_eq(&other.0)
    }

    /// The positions below the shorter length where the lists differ, looking only into the
    /// leaves they do not share: O(n / leaf + changed leaves) for a list changed in place or
    /// appended to. `None` when the leaves are cut differently before the end (an entry was
    /// inserted or removed in the middle): the caller compares another way.
    pub fn differences(&self, other: &Self) -> Option<Vec<usize>>
    where
        T: PartialEq,
    {
        let common = self.len().min(other.len());
        let (mut a, mut b) = (self.0.leaves(), other.0.leaves());
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
        let (mut a, mut b) = (self.0.leaves(), other.0.leaves());
        let mut at = 0;
        while let (Some(x), Some(y)) = (a.next(), b.next()) {
            if x.len() == y.len() && std::ptr::eq(x.as_ptr(), y.as_ptr()) {
                at += x.len();
                continue;
            }
            break;
        }
        let same = self
            .0
            .skip(at)
            .iter()
            .zip(other.0.skip(at).iter())
            .take_while(|(x, y)| x == y)
            .count();
        at + same
    }

    /// The entries from position `from` on, in O(log n) each: `iter().skip(from)` would step
    /// through every entry before `from`.
    pub fn tail(&self, from: usize) -> impl Iterator<Item = &T> {
        (from..self.len()).filter_map(move |i| self.0.get(i))
    }

    /// The list without its first `n` entries, sharing the rest: O(log n).
    pub fn skip(&self, n: usize) -> Self {
        List(self.0.skip(n))
    }

    pub fn to_vec(&self) -> Vec<T> {
        self.0.iter().cloned().collect()
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
        let (mut a, mut b) = (self.0.leaves(), other.0.leaves());
        loop {
            match (a.next(), b.next()) {
                (None, None) => return true,
                (Some(x), Some(y)) if x.len() == y.len() => {
                    if !std::ptr::eq(x.as_ptr(), y.as_ptr()) && x != y {
                        return false;
                    }
                }
                // Leaves cut differently (entries were inserted or removed): entry by entry.
                _ => return self.0.iter().eq(other.0.iter()),
            }
        }
    }
}

impl<T: Clone + fmt::Debug> fmt::Debug for List<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl<T: Clone> Index<usize> for List<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        &self.0[i]
    }
}

impl<T: Clone> IndexMut<usize> for List<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.0[i]
    }
}

impl<T: Clone> From<Vec<T>> for List<T> {
    fn from(v: Vec<T>) -> Self {
        List(v.into_iter().collect())
    }
}

impl<T: Clone, const N: usize> From<[T; N]> for List<T> {
    fn from(v: [T; N]) -> Self {
        List(v.into_iter().collect())
    }
}

impl<T: Clone> FromIterator<T> for List<T> {
    fn from_iter<I: IntoIterator<Item = T>>(it: I) -> Self {
        List(it.into_iter().collect())
    }
}

impl<T: Clone> Extend<T> for List<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, it: I) {
        self.0.extend(it)
    }
}

impl<T: Clone> IntoIterator for List<T> {
    type Item = T;
    type IntoIter = imbl::vector::ConsumingIter<T, imbl::shared_ptr::DefaultSharedPtr>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a, T: Clone> IntoIterator for &'a List<T> {
    type Item = &'a T;
    type IntoIter = imbl::vector::Iter<'a, T, imbl::shared_ptr::DefaultSharedPtr>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'a, T: Clone> IntoIterator for &'a mut List<T> {
    type Item = &'a mut T;
    type IntoIter = imbl::vector::IterMut<'a, T, imbl::shared_ptr::DefaultSharedPtr>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter_mut()
    }
}

impl<T: Clone + Serialize> Serialize for List<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
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
}
