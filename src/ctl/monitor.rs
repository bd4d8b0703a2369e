//! `nftlbctl monitor`: the daemon's signals as one line each, as they come (`--json`: one JSON
//! object per line), until interrupted.

use std::collections::HashMap;

use futures_lite::StreamExt;
use zbus::message::Type;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::{MatchRule, MessageStream};

use super::CtlError;
use super::client::{Client, DEST};
use super::show::to_json;
use crate::model::bus_path_unescape;

/// What an object path names: `farm web`, `backend web/b1`, `policy bad`, `manager`.
pub fn describe(path: &str) -> (String, String) {
    let parts: Vec<String> = path
        .trim_start_matches("/org/nftlbd1")
        .split('/')
        .filter(|p| !p.is_empty())
        .map(|p| bus_path_unescape(p).unwrap_or_else(|| p.to_string()))
        .collect();
    match parts.as_slice() {
        [] => ("manager".into(), String::new()),
        [k, f] if k == "farm" => ("farm".into(), f.clone()),
        [k, f, b, n] if k == "farm" && b == "backend" => ("backend".into(), format!("{f}/{n}")),
        [k, p] if k == "policy" => ("policy".into(), p.clone()),
        _ => ("object".into(), path.to_string()),
    }
}

pub async fn run(c: &Client, json_out: bool) -> Result<(), CtlError> {
    let rule = MatchRule::builder().msg_type(Type::Signal).sender(DEST)?.build();
    let mut stream = MessageStream::for_match_rule(rule, c.connection(), None).await?;
    // Ready: the match is in place (a script may wait for this line before it changes things).
    if !json_out {
        println!("monitoring org.nftlbd1");
    }
    while let Some(msg) = stream.next().await {
        let msg = msg?;
        let hdr = msg.header();
        let (Some(member), Some(path)) = (hdr.member(), hdr.path()) else {
            continue;
        };
        let (kind, name) = describe(path.as_str());
        let body = msg.body();
        let (event, detail): (&str, serde_json::Value) = match member.as_str() {
            "PropertiesChanged" => {
                let (_, changed, _): (String, HashMap<String, OwnedValue>, Vec<String>) =
                    body.deserialize()?;
                let mut m = serde_json::Map::new();
                let mut keys: Vec<&String> = changed.keys().collect();
                keys.sort();
                for k in keys {
                    m.insert(k.clone(), to_json(&changed[k]));
                }
                ("changed", serde_json::Value::Object(m))
            }
            "StateChanged" => {
                let (old, new, reason): (String, String, String) = body.deserialize()?;
                (
                    "state",
                    serde_json::json!({"old": old, "new": new, "reason": reason}),
                )
            }
            "InterfacesAdded" | "InterfacesRemoved" => {
                let added = member.as_str() == "InterfacesAdded";
                let object: OwnedObjectPath = if added {
                    body.deserialize::<(OwnedObjectPath, HashMap<String, HashMap<String, OwnedValue>>)>()?
                        .0
                } else {
                    body.deserialize::<(OwnedObjectPath, Vec<String>)>()?.0
                };
                let (kind, name) = describe(object.as_str());
                let event = if added { "added" } else { "removed" };
                print_event(json_out, event, &kind, &name, &serde_json::Value::Null);
                continue;
            }
            _ => continue,
        };
        print_event(json_out, event, &kind, &name, &detail);
    }
    Ok(())
}

fn print_event(json_out: bool, event: &str, kind: &str, name: &str, detail: &serde_json::Value) {
    if json_out {
        let mut line = serde_json::json!({"event": event, kind: name});
        if !detail.is_null() {
            line["detail"] = detail.clone();
        }
        println!("{line}");
        return;
    }
    let what = if name.is_empty() {
        kind.to_string()
    } else {
        format!("{kind} {name}")
    };
    match (event, detail) {
        ("state", d) => println!(
            "{what}: state {} -> {} ({})",
            d["old"].as_str().unwrap_or_default(),
            d["new"].as_str().unwrap_or_default(),
            d["reason"].as_str().unwrap_or_default()
        ),
        ("changed", serde_json::Value::Object(m)) => {
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("{what}: {}", parts.join(" "));
        }
        _ => println!("{event} {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_objects() {
        assert_eq!(describe("/org/nftlbd1"), ("manager".into(), String::new()));
        assert_eq!(
            describe("/org/nftlbd1/farm/web_2d1"),
            ("farm".into(), "web-1".into())
        );
        assert_eq!(
            describe("/org/nftlbd1/farm/web/backend/b_2e1"),
            ("backend".into(), "web/b.1".into())
        );
        assert_eq!(
            describe("/org/nftlbd1/policy/bad"),
            ("policy".into(), "bad".into())
        );
    }
}
