//! Object names (farms, backends, policies) and their D-Bus object path form.

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is {0} bytes long; at most 63 are allowed")]
    TooLong(usize),
    #[error("name must start with a letter or digit, not {0:?}")]
    BadStart(char),
    #[error("name may contain only letters, digits, '_', '.' and '-', not {0:?}")]
    BadChar(char),
}

/// Checks `[A-Za-z0-9][A-Za-z0-9_.-]{0,62}` (docs/README.md, object names).
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let mut chars = name.chars();
    let first = chars.next().ok_or(NameError::Empty)?;
    if !first.is_ascii_alphanumeric() {
        return Err(NameError::BadStart(first));
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(NameError::BadChar(c));
    }
    if name.len() > 63 {
        return Err(NameError::TooLong(name.len()));
    }
    Ok(())
}

/// One object path element as systemd's `sd_bus_path_encode` writes it: every byte outside
/// `[A-Za-z0-9]` becomes `_` and two lowercase hex digits; the empty string becomes `_`.
pub fn bus_path_escape(s: &str) -> String {
    if s.is_empty() {
        return "_".into();
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// The inverse of [`bus_path_escape`] (`None` for an element it cannot have written).
pub fn bus_path_unescape(s: &str) -> Option<String> {
    if s == "_" {
        return Some(String::new());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'_' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_elements_unescape() {
        for name in ["web", "web-1", "x.y_z-1", ""] {
            assert_eq!(bus_path_unescape(&bus_path_escape(name)).as_deref(), Some(name));
        }
        assert_eq!(bus_path_unescape("web_2"), None);
    }

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["web", "web-1", "a", "0lb", "x.y_z-1", &"a".repeat(63)] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_each_bad_class_with_its_reason() {
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(validate_name("-web"), Err(NameError::BadStart('-')));
        assert_eq!(validate_name(".web"), Err(NameError::BadStart('.')));
        assert_eq!(validate_name("web farm"), Err(NameError::BadChar(' ')));
        assert_eq!(validate_name("wéb"), Err(NameError::BadChar('é')));
        assert_eq!(validate_name("a/b"), Err(NameError::BadChar('/')));
        assert_eq!(validate_name(&"a".repeat(64)), Err(NameError::TooLong(64)));
    }

    #[test]
    fn escapes_like_sd_bus_path_encode() {
        assert_eq!(bus_path_escape("web-1"), "web_2d1");
        assert_eq!(bus_path_escape("a.b_c"), "a_2eb_5fc");
        assert_eq!(bus_path_escape("Web9"), "Web9");
        assert_eq!(bus_path_escape(""), "_");
    }
}
