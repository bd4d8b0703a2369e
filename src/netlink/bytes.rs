//! A byte string kept inline when short: set element keys and data values (an address, a port,
//! a mark) are a few bytes, and a large farm stores hundreds of thousands of them; as `Vec<u8>`
//! each was a heap allocation of its own (a 32-byte malloc chunk for 4 bytes) besides the vector.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// Longest value stored inline: what fits beside the tag and the length in the 24 bytes the
/// heap form needs anyway (an IPv6 address and a port; the test checks the size).
pub const INLINE: usize = 22;

/// Bytes stored inline up to [`INLINE`] long, on the heap beyond. Always inline when short
/// enough, and compared, ordered and hashed as the slice it holds (like `Vec<u8>`).
#[derive(Clone)]
pub struct Bytes(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Bytes {
    pub fn new(b: &[u8]) -> Self {
        if b.len() <= INLINE {
            let mut buf = [0; INLINE];
            buf[..b.len()].copy_from_slice(b);
            // The length is at most INLINE, well within a u8.
            Self(Repr::Inline {
                len: b.len() as u8,
                buf,
            })
        } else {
            Self(Repr::Heap(b.into()))
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, buf } => &buf[..usize::from(*len)],
            Repr::Heap(b) => b,
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.as_slice().to_vec()
    }

    /// Whether the bytes live in the value itself rather than on the heap.
    pub fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline { .. })
    }
}

impl Default for Bytes {
    fn default() -> Self {
        Self::new(&[])
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

// Hash, Eq and Ord agree with those of [u8], as Borrow requires.
impl Borrow<[u8]> for Bytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl From<&[u8]> for Bytes {
    fn from(b: &[u8]) -> Self {
        Self::new(b)
    }
}

impl<const N: usize> From<[u8; N]> for Bytes {
    fn from(b: [u8; N]) -> Self {
        Self::new(&b)
    }
}

impl<const N: usize> From<&[u8; N]> for Bytes {
    fn from(b: &[u8; N]) -> Self {
        Self::new(b)
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        if v.len() <= INLINE {
            Self::new(&v)
        } else {
            Self(Repr::Heap(v.into_boxed_slice()))
        }
    }
}

impl From<&Vec<u8>> for Bytes {
    fn from(v: &Vec<u8>) -> Self {
        Self::new(v)
    }
}

impl From<Bytes> for Vec<u8> {
    fn from(b: Bytes) -> Self {
        match b.0 {
            Repr::Heap(h) => h.into_vec(),
            Repr::Inline { .. } => b.to_vec(),
        }
    }
}

impl PartialEq for Bytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Bytes {}

impl PartialEq<[u8]> for Bytes {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_slice() == other
    }
}

impl PartialEq<Vec<u8>> for Bytes {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<const N: usize> PartialEq<[u8; N]> for Bytes {
    fn eq(&self, other: &[u8; N]) -> bool {
        self.as_slice() == other
    }
}

impl PartialOrd for Bytes {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bytes {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl Hash for Bytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_slice().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn hash<T: Hash + ?Sized>(t: &T) -> u64 {
        let mut h = DefaultHasher::new();
        t.hash(&mut h);
        h.finish()
    }

    #[test]
    fn short_values_need_no_allocation_and_no_more_room_than_a_vector() {
        assert_eq!(std::mem::size_of::<Bytes>(), 24);
        let v4 = Bytes::from(vec![10, 0, 0, 1]);
        assert!(v4.is_inline());
        assert_eq!(v4.as_slice(), [10, 0, 0, 1]);
        let longest = Bytes::from([7u8; INLINE]);
        assert!(longest.is_inline());
        assert_eq!(longest.len(), INLINE);
        let long = Bytes::from(vec![9u8; INLINE + 1]);
        assert!(!long.is_inline());
        assert_eq!(long.as_slice(), [9u8; INLINE + 1]);
        assert_eq!(Vec::from(long.clone()), vec![9u8; INLINE + 1]);
        assert!(Bytes::default().is_empty());
    }

    #[test]
    fn compares_and_hashes_as_its_bytes() {
        let a = Bytes::new(&[1, 2, 3]);
        let b = Bytes::from(vec![1, 2, 3]);
        assert_eq!(a, b);
        assert_eq!(hash(&a), hash(&[1u8, 2, 3][..]));
        assert_eq!(hash(&a), hash(&vec![1u8, 2, 3]));
        assert!(Bytes::new(&[1, 2]) < a);
        assert!(Bytes::new(&[1, 3]) > a);
        assert_ne!(Bytes::new(&[1, 2, 3, 0]), a);
        assert_eq!(format!("{a:?}"), "[1, 2, 3]");
    }
}
