//! `KEY=VALUE` words of the command line → the `a{sv}` settings of the D-Bus API. Keys are the
//! canonical JSON names (`virtual-ports`), as in files and `--json` output; their D-Bus names and
//! types come from the service's own tables, so the CLI cannot drift from the API. Pure.

use std::collections::HashMap;

use zbus::zvariant::{OwnedValue, Value};

use crate::schema::props::Prop;

/// One `KEY=VALUE` for the keys of `table`: (property name, typed value).
pub fn parse(table: &'static [Prop], word: &str) -> Result<(&'static str, OwnedValue), String> {
    let (key, text) = word
        .split_once('=')
        .ok_or_else(|| format!("{word:?} is not KEY=VALUE"))?;
    let prop = table.iter().find(|p| p.key == key).ok_or_else(|| {
        let keys: Vec<&str> = table.iter().map(|p| p.key).collect();
        format!("unknown key {key:?}; the keys are: {}", keys.join(" "))
    })?;
    let bad = |what: &str| format!("{key}: {text:?} is not {what}");
    let value = match prop.sig {
        "s" => Value::from(text.to_string()),
        "as" => Value::from(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect::<Vec<String>>(),
        ),
        "u" => Value::from(text.parse::<u32>().map_err(|_| bad("a number"))?),
        "q" => Value::from(text.parse::<u16>().map_err(|_| bad("a port (0-65535)"))?),
        "i" => Value::from(text.parse::<i32>().map_err(|_| bad("a number"))?),
        "b" => Value::from(match text {
            "true" | "yes" | "on" | "1" => true,
            "false" | "no" | "off" | "0" => false,
            _ => return Err(bad("true or false")),
        }),
        other => return Err(format!("{key}: type {other} cannot be given on the command line")),
    };
    let owned = OwnedValue::try_from(value).map_err(|e| format!("{key}: {e}"))?;
    Ok((prop.name, owned))
}

/// Every `KEY=VALUE` of `words`, in one dictionary (a key given twice is an error).
pub fn parse_all(table: &'static [Prop], words: &[String]) -> Result<HashMap<String, OwnedValue>, String> {
    let mut out = HashMap::new();
    for w in words {
        let (name, v) = parse(table, w)?;
        if out.insert(name.to_string(), v).is_some() {
            return Err(format!("{w:?}: that key was already given"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::props::{BACKEND, FARM};

    #[test]
    fn words_become_typed_properties() {
        let (n, v) = parse(FARM, "virtual-addresses=10.0.0.1, ::1").unwrap();
        assert_eq!(n, "VirtualAddresses");
        assert_eq!(
            Vec::<String>::try_from(v).unwrap(),
            vec!["10.0.0.1".to_string(), "::1".to_string()]
        );
        let (n, v) = parse(BACKEND, "port=8080").unwrap();
        assert_eq!((n, u16::try_from(v).unwrap()), ("Port", 8080));
        let (n, v) = parse(FARM, "tcp-strict=yes").unwrap();
        assert_eq!((n, bool::try_from(v).unwrap()), ("TcpStrict", true));
        let (_, v) = parse(FARM, "persistence=").unwrap();
        assert!(Vec::<String>::try_from(v).unwrap().is_empty());
    }

    #[test]
    fn bad_words_are_named() {
        assert!(
            parse(FARM, "virtual-ports")
                .unwrap_err()
                .contains("not KEY=VALUE")
        );
        let e = parse(FARM, "colour=red").unwrap_err();
        assert!(
            e.contains("unknown key \"colour\"") && e.contains("virtual-ports"),
            "{e}"
        );
        assert_eq!(
            parse(BACKEND, "port=99999").unwrap_err(),
            "port: \"99999\" is not a port (0-65535)"
        );
        assert!(
            parse(FARM, "tcp-strict=maybe")
                .unwrap_err()
                .contains("true or false")
        );
        let e = parse_all(BACKEND, &["weight=1".into(), "weight=2".into()]).unwrap_err();
        assert!(e.contains("already given"), "{e}");
    }
}
