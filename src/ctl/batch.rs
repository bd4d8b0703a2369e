//! `set-backends`: the words (or a file's lines) of a batch → `Manager.SetBackends`' changes.
//! Keys are the backend keys a batch may set (state, weight, priority), typed from the service's
//! own table; names cannot hold `/` or `=`, so a word is a setting or a FARM/BACKEND, never both.

use std::collections::HashMap;
use std::io::Read;

use zbus::zvariant::OwnedValue;

use super::CtlError;
use super::settings;
use crate::schema::props::{BACKEND, Prop};

/// (farm, backend, settings), as `SetBackends` takes them.
pub type Change = (String, String, HashMap<String, OwnedValue>);

/// The keys a batch may set.
const KEYS: &[&str] = &["state", "weight", "priority"];

fn batch_props() -> Vec<&'static Prop> {
    BACKEND.iter().filter(|p| KEYS.contains(&p.key)).collect()
}

fn parse_settings(words: &[&str]) -> Result<HashMap<String, OwnedValue>, CtlError> {
    let props = batch_props();
    let mut out = HashMap::new();
    for w in words {
        let key = w.split_once('=').map_or(*w, |(k, _)| k);
        if !props.iter().any(|p| p.key == key) {
            return Err(CtlError::Invalid(format!(
                "{w:?}: a batch sets {} only",
                KEYS.join(", ")
            )));
        }
        let (name, v) = settings::parse(BACKEND, w).map_err(CtlError::Invalid)?;
        if out.insert(name.to_string(), v).is_some() {
            return Err(CtlError::Invalid(format!("{w:?}: that key was already given")));
        }
    }
    if out.is_empty() {
        return Err(CtlError::Usage(format!(
            "set-backends needs KEY=VALUE ({})",
            KEYS.join(", ")
        )));
    }
    Ok(out)
}

/// `KEY=VALUE... FARM/BACKEND...`, or `--from FILE|-` with lines `FARM BACKEND KEY=VALUE...`
/// (blank lines and `#` comments skipped).
pub fn changes(words: &[String]) -> Result<Vec<Change>, CtlError> {
    if let [flag, file] = words
        && flag == "--from"
    {
        let text = read(file)?;
        return from_lines(&text);
    }
    let (sets, targets): (Vec<&str>, Vec<&str>) =
        words.iter().map(String::as_str).partition(|w| w.contains('='));
    let settings = parse_settings(&sets)?;
    if targets.is_empty() {
        return Err(CtlError::Usage("set-backends needs FARM/BACKEND...".into()));
    }
    targets
        .into_iter()
        .map(|t| {
            let (farm, backend) = t
                .split_once('/')
                .ok_or_else(|| CtlError::Usage(format!("{t:?} is not FARM/BACKEND")))?;
            let copy = settings
                .iter()
                .map(|(k, v)| Ok((k.clone(), v.try_clone()?)))
                .collect::<Result<HashMap<_, _>, zbus::zvariant::Error>>()
                .map_err(|e| CtlError::Failed(e.to_string()))?;
            Ok((farm.to_string(), backend.to_string(), copy))
        })
        .collect()
}

fn read(file: &str) -> Result<String, CtlError> {
    let mut text = String::new();
    let r = if file == "-" {
        std::io::stdin().read_to_string(&mut text)
    } else {
        std::fs::File::open(file).and_then(|mut f| f.read_to_string(&mut text))
    };
    r.map_err(|e| CtlError::Failed(format!("{file}: {e}")))?;
    Ok(text)
}

fn from_lines(text: &str) -> Result<Vec<Change>, CtlError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() || words[0].starts_with('#') {
            continue;
        }
        let [farm, backend, sets @ ..] = words.as_slice() else {
            return Err(CtlError::Usage(format!(
                "line {}: FARM BACKEND KEY=VALUE...",
                n + 1
            )));
        };
        let settings = parse_settings(sets).map_err(|e| match e {
            CtlError::Invalid(m) => CtlError::Invalid(format!("line {}: {m}", n + 1)),
            other => other,
        })?;
        out.push((farm.to_string(), backend.to_string(), settings));
    }
    if out.is_empty() {
        return Err(CtlError::Usage("the batch is empty".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn words_make_one_change_per_backend() {
        let c = changes(&words("state=drain web/a db/b weight=2")).unwrap();
        let got: Vec<(&str, &str, usize)> = c
            .iter()
            .map(|(f, b, s)| (f.as_str(), b.as_str(), s.len()))
            .collect();
        assert_eq!(got, vec![("web", "a", 2), ("db", "b", 2)]);
        assert_eq!(
            String::try_from(c[0].2["State"].try_clone().unwrap()).unwrap(),
            "drain"
        );
        assert_eq!(u32::try_from(&c[1].2["Weight"]).unwrap(), 2);
    }

    #[test]
    fn lines_and_refusals() {
        let c = from_lines("# rack 7\nweb a state=down\n\ndb b weight=0 priority=2\n").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].2.len(), 2);
        let e = from_lines("web a ip-addr=10.0.0.1").unwrap_err().to_string();
        assert_eq!(
            e,
            "line 1: \"ip-addr=10.0.0.1\": a batch sets state, weight, priority only"
        );
        assert!(changes(&words("state=up web")).is_err());
        assert!(changes(&words("web/a")).is_err());
    }
}
