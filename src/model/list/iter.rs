//! The iterators of [`List`](super::List): one type over either representation, so that callers
//! keep `rev()`, `len()` and the rest whichever one a list has.

use std::iter::FusedIterator;

/// Over a small list's vector or a large list's persistent vector.
#[derive(Clone)]
pub enum Entries<S, B> {
    Small(S),
    Big(B),
}

/// The entries of a list, by reference.
pub type Iter<'a, T> =
    Entries<std::slice::Iter<'a, T>, imbl::vector::Iter<'a, T, imbl::shared_ptr::DefaultSharedPtr>>;

/// The entries of a list, mutably.
pub type IterMut<'a, T> =
    Entries<std::slice::IterMut<'a, T>, imbl::vector::IterMut<'a, T, imbl::shared_ptr::DefaultSharedPtr>>;

/// The entries of a list, by value.
pub type IntoIter<T> =
    Entries<std::vec::IntoIter<T>, imbl::vector::ConsumingIter<T, imbl::shared_ptr::DefaultSharedPtr>>;

impl<S: Iterator, B: Iterator<Item = S::Item>> Iterator for Entries<S, B> {
    type Item = S::Item;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Entries::Small(s) => s.next(),
            Entries::Big(b) => b.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Entries::Small(s) => s.size_hint(),
            Entries::Big(b) => b.size_hint(),
        }
    }

    // Forwarded so that `skip` and `nth` keep the inner iterators' shortcuts.
    fn nth(&mut self, n: usize) -> Option<Self::Item> {
        match self {
            Entries::Small(s) => s.nth(n),
            Entries::Big(b) => b.nth(n),
        }
    }
}

impl<S: DoubleEndedIterator, B: DoubleEndedIterator<Item = S::Item>> DoubleEndedIterator for Entries<S, B> {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Entries::Small(s) => s.next_back(),
            Entries::Big(b) => b.next_back(),
        }
    }
}

impl<S: ExactSizeIterator, B: ExactSizeIterator<Item = S::Item>> ExactSizeIterator for Entries<S, B> {}

impl<S: FusedIterator, B: FusedIterator<Item = S::Item>> FusedIterator for Entries<S, B> {}
