//! Timed changes at the command line: `--for SECONDS` on `state` and `set-backend`, the pending
//! ones (`timed`, and under `show FARM`), and `cancel-timed`.

use super::client::{Client, MANAGER, ROOT};
use super::{CtlError, usage};

/// (farm, backend, key, value to restore, deadline in µs since the epoch), as the daemon lists them.
pub type Pending = (String, String, String, String, u64);

/// The words without `--for SECONDS`, and the seconds when given.
pub fn split_for(words: &[String]) -> Result<(Vec<String>, Option<u32>), CtlError> {
    let mut rest = Vec::with_capacity(words.len());
    let mut secs = None;
    let mut it = words.iter();
    while let Some(w) = it.next() {
        if w != "--for" {
            rest.push(w.clone());
            continue;
        }
        let v = it
            .next()
            .ok_or_else(|| usage("--for needs a number of seconds"))?;
        let n: u32 = v
            .parse()
            .map_err(|_| CtlError::Invalid(format!("--for: {v:?} is not a number of seconds")))?;
        secs = Some(n);
    }
    Ok((rest, secs))
}

pub async fn fetch(c: &Client) -> Result<Vec<Pending>, CtlError> {
    c.read(ROOT, MANAGER, "ListTimedChanges", &()).await
}

/// Seconds left, rounded up (`0s` once due: the daemon restores it within its next turn).
fn left(deadline_us: u64, now_us: u64) -> String {
    format!("{}s", deadline_us.saturating_sub(now_us).div_ceil(1_000_000))
}

/// Table rows, with the farm column or without (under `show FARM`).
pub fn rows(list: &[Pending], farm: Option<&str>, now_us: u64) -> Vec<Vec<String>> {
    list.iter()
        .filter(|p| farm.is_none_or(|f| p.0 == f))
        .map(|(f, b, k, v, d)| {
            let mut r = vec![b.clone(), k.clone(), v.clone(), left(*d, now_us)];
            if farm.is_none() {
                r.insert(0, f.clone());
            }
            r
        })
        .collect()
}

pub fn as_json(list: &[Pending], farm: Option<&str>) -> serde_json::Value {
    list.iter()
        .filter(|p| farm.is_none_or(|f| p.0 == f))
        .map(|(f, b, k, v, d)| serde_json::json!({"farm": f, "backend": b, "key": k, "restore": v, "deadline": d}))
        .collect()
}

/// `timed`: every pending timed change.
pub async fn list(c: &Client, json_out: bool) -> Result<(), CtlError> {
    let list = fetch(c).await?;
    if json_out {
        println!("{}", as_json(&list, None));
        return Ok(());
    }
    let rows = rows(&list, None, super::show::now_us());
    print!(
        "{}",
        super::show::table(&["FARM", "BACKEND", "KEY", "RESTORES", "IN"], &rows)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn for_is_taken_out_of_the_words() {
        let (rest, secs) = split_for(&words(&["state", "web", "a", "drain", "--for", "600"])).unwrap();
        assert_eq!((rest, secs), (words(&["state", "web", "a", "drain"]), Some(600)));
        let (rest, secs) = split_for(&words(&["state", "web", "a", "up"])).unwrap();
        assert_eq!((rest.len(), secs), (4, None));
        assert!(matches!(
            split_for(&words(&["x", "--for"])),
            Err(CtlError::Usage(_))
        ));
        assert!(matches!(
            split_for(&words(&["x", "--for", "soon"])),
            Err(CtlError::Invalid(_))
        ));
    }

    #[test]
    fn rows_say_what_comes_back_and_when() {
        let list = vec![
            ("web".into(), "a".into(), "state".into(), "up".into(), 10_500_000),
            ("db".into(), "x".into(), "weight".into(), "3".into(), 2_000_000),
        ];
        assert_eq!(
            rows(&list, Some("web"), 9_000_000),
            vec![vec!["a".to_string(), "state".into(), "up".into(), "2s".into()]]
        );
        assert_eq!(
            rows(&list, None, 9_000_000)[1],
            vec![
                "db".to_string(),
                "x".into(),
                "weight".into(),
                "3".into(),
                "0s".into()
            ]
        );
    }
}
