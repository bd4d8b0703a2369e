//! Introspection XML read as a list of members, to compare what the daemon serves with the
//! documented interface files.
#![allow(dead_code)]

/// The members of one interface in introspection XML, each as one line (`method X(in a s, out
/// b o)`, `property P as read`, `signal S(a s)`), sorted; annotations and comments ignored.
pub fn members(xml: &str, iface: &str) -> Vec<String> {
    let mut text = xml.to_string();
    while let Some(i) = text.find("<!--") {
        let end = text[i..].find("-->").map_or(text.len(), |j| i + j + 3);
        text.replace_range(i..end, "");
    }
    let start = format!("<interface name=\"{iface}\"");
    let Some(at) = text.find(&start) else {
        return Vec::new();
    };
    let body = &text[at..];
    let body = &body[..body.find("</interface>").unwrap_or(body.len())];
    let attr = |tag: &str, name: &str| {
        let key = format!(" {name}=\"");
        tag.find(&key)
            .map(|i| {
                let v = &tag[i + key.len()..];
                v[..v.find('"').unwrap_or(v.len())].to_string()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for tag in body.split('<').skip(1).map(|t| t.split('>').next().unwrap_or("")) {
        let kind = tag.split_whitespace().next().unwrap_or("");
        match kind {
            "method" | "signal" => {
                if let Some((head, args)) = current.take() {
                    out.push(format!("{head}({})", args.join(", ")));
                }
                let head = format!("{kind} {}", attr(tag, "name"));
                if tag.ends_with('/') {
                    out.push(format!("{head}()"));
                } else {
                    current = Some((head, Vec::new()));
                }
            }
            "arg" => {
                if let Some((_, args)) = current.as_mut() {
                    let dir = attr(tag, "direction");
                    let dir = if dir.is_empty() {
                        String::new()
                    } else {
                        format!("{dir} ")
                    };
                    args.push(format!("{dir}{} {}", attr(tag, "name"), attr(tag, "type")));
                }
            }
            "/method" | "/signal" => {
                if let Some((head, args)) = current.take() {
                    out.push(format!("{head}({})", args.join(", ")));
                }
            }
            "property" => out.push(format!(
                "property {} {} {}",
                attr(tag, "name"),
                attr(tag, "type"),
                attr(tag, "access")
            )),
            _ => {}
        }
    }
    out.sort();
    out
}
