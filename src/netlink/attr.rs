//! Netlink attributes (TLVs): a writer that builds them into a buffer and a reader that walks them.
//! nf_tables puts integers in network byte order; the attribute header itself is host order.

use super::consts::{NLA_F_NESTED, NLA_TYPE_MASK};
use super::error::{Error, Result};

const ALIGN: usize = 4;

pub(crate) fn align(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

/// Appends attributes to a byte buffer (usually a message being built).
#[derive(Debug, Default, Clone)]
pub struct AttrWriter {
    pub(crate) buf: Vec<u8>,
}

impl AttrWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn put(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        debug_assert!(len <= u16::MAX as usize, "attribute of {len} bytes");
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align(self.buf.len()), 0);
    }

    pub fn put_u8(&mut self, ty: u16, v: u8) {
        self.put(ty, &[v]);
    }

    pub fn put_be16(&mut self, ty: u16, v: u16) {
        self.put(ty, &v.to_be_bytes());
    }

    pub fn put_be32(&mut self, ty: u16, v: u32) {
        self.put(ty, &v.to_be_bytes());
    }

    pub fn put_be64(&mut self, ty: u16, v: u64) {
        self.put(ty, &v.to_be_bytes());
    }

    /// A NUL-terminated string, as the kernel's NLA_STRING/NLA_NUL_STRING expect.
    pub fn put_str(&mut self, ty: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.put(ty, &v);
    }

    /// Starts a nested attribute; close it with [`AttrWriter::end_nest`].
    pub fn begin_nest(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        start
    }

    pub fn end_nest(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    pub fn nest(&mut self, ty: u16, f: impl FnOnce(&mut AttrWriter)) {
        let start = self.begin_nest(ty);
        f(self);
        self.end_nest(start);
    }
}

/// Iterates the attributes in a buffer: `(type without flag bits, payload)`.
#[derive(Clone)]
pub struct AttrIter<'a> {
    data: &'a [u8],
}

impl<'a> AttrIter<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = Result<(u16, &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([self.data[0], self.data[1]]) as usize;
        let ty = u16::from_ne_bytes([self.data[2], self.data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > self.data.len() {
            self.data = &[];
            return Some(Err(Error::decode(format!(
                "attribute type {ty} has bad length {len}"
            ))));
        }
        let payload = &self.data[4..len];
        self.data = &self.data[align(len).min(self.data.len())..];
        Some(Ok((ty, payload)))
    }
}

/// The attributes of one level, indexed by type (the last one wins, as in the kernel's nla_parse).
pub struct Attrs<'a> {
    by_type: Vec<Option<&'a [u8]>>,
    what: &'static str,
}

impl<'a> Attrs<'a> {
    /// `what` names the object for error messages ("rule", "payload expression", ...).
    pub fn parse(data: &'a [u8], what: &'static str) -> Result<Self> {
        let mut by_type: Vec<Option<&'a [u8]>> = Vec::new();
        for a in AttrIter::new(data) {
            let (ty, payload) = a?;
            let i = ty as usize;
            if by_type.len() <= i {
                by_type.resize(i + 1, None);
            }
            by_type[i] = Some(payload);
        }
        Ok(Self { by_type, what })
    }

    pub fn get(&self, ty: u16) -> Option<&'a [u8]> {
        self.by_type.get(ty as usize).copied().flatten()
    }

    fn missing(&self, ty: u16) -> Error {
        Error::decode(format!("{}: attribute {ty} missing", self.what))
    }

    fn bad(&self, ty: u16, len: usize) -> Error {
        Error::decode(format!(
            "{}: attribute {ty} has unexpected length {len}",
            self.what
        ))
    }

    pub fn bytes(&self, ty: u16) -> Result<&'a [u8]> {
        self.get(ty).ok_or_else(|| self.missing(ty))
    }

    pub fn be32(&self, ty: u16) -> Result<u32> {
        self.opt_be32(ty)?.ok_or_else(|| self.missing(ty))
    }

    pub fn opt_be32(&self, ty: u16) -> Result<Option<u32>> {
        match self.get(ty) {
            None => Ok(None),
            Some(b) => b
                .try_into()
                .map(|a: [u8; 4]| Some(u32::from_be_bytes(a)))
                .map_err(|_| self.bad(ty, b.len())),
        }
    }

    /// A host-order u32 (NLA_U32, as in netlink's own attributes such as the extack offset).
    pub fn opt_ne32(&self, ty: u16) -> Result<Option<u32>> {
        match self.get(ty) {
            None => Ok(None),
            Some(b) => b
                .try_into()
                .map(|a: [u8; 4]| Some(u32::from_ne_bytes(a)))
                .map_err(|_| self.bad(ty, b.len())),
        }
    }

    pub fn opt_be16(&self, ty: u16) -> Result<Option<u16>> {
        match self.get(ty) {
            None => Ok(None),
            Some(b) => b
                .try_into()
                .map(|a: [u8; 2]| Some(u16::from_be_bytes(a)))
                .map_err(|_| self.bad(ty, b.len())),
        }
    }

    pub fn opt_u8(&self, ty: u16) -> Result<Option<u8>> {
        match self.get(ty) {
            None => Ok(None),
            Some([v]) => Ok(Some(*v)),
            Some(b) => Err(self.bad(ty, b.len())),
        }
    }

    pub fn be64(&self, ty: u16) -> Result<u64> {
        self.opt_be64(ty)?.ok_or_else(|| self.missing(ty))
    }

    pub fn opt_be64(&self, ty: u16) -> Result<Option<u64>> {
        match self.get(ty) {
            None => Ok(None),
            Some(b) => b
                .try_into()
                .map(|a: [u8; 8]| Some(u64::from_be_bytes(a)))
                .map_err(|_| self.bad(ty, b.len())),
        }
    }

    pub fn string(&self, ty: u16) -> Result<String> {
        self.opt_string(ty)?.ok_or_else(|| self.missing(ty))
    }

    pub fn opt_string(&self, ty: u16) -> Result<Option<String>> {
        match self.get(ty) {
            None => Ok(None),
            Some(b) => {
                let b = b.split(|c| *c == 0).next().unwrap_or_default();
                String::from_utf8(b.to_vec())
                    .map(Some)
                    .map_err(|_| Error::decode(format!("{}: attribute {ty} is not UTF-8", self.what)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_aligned_and_nested() {
        let mut w = AttrWriter::new();
        w.put_str(1, "t");
        w.nest(2, |w| w.put_be32(3, 0x01020304));
        assert_eq!(
            w.buf,
            vec![6, 0, 1, 0, b't', 0, 0, 0, 12, 0, 2, 0x80, 8, 0, 3, 0, 1, 2, 3, 4]
        );
        let a = Attrs::parse(&w.buf, "test").unwrap();
        assert_eq!(a.string(1).unwrap(), "t");
        let inner = Attrs::parse(a.bytes(2).unwrap(), "inner").unwrap();
        assert_eq!(inner.be32(3).unwrap(), 0x01020304);
        assert!(a.be32(9).is_err());
    }

    #[test]
    fn rejects_truncated_attribute() {
        let buf = [12u8, 0, 1, 0, 0, 0];
        assert!(Attrs::parse(&buf, "test").is_err());
        assert!(Attrs::parse(&[3, 0, 1, 0], "test").is_err());
    }
}
