//! The files the daemon is built from and installs, read as the reference needs them: the D-Bus
//! interface files (members, types, doc strings), the varlink interface and the polkit actions.
//! They are embedded at build time, so the reference always shows what this build serves.
//! Parsing is by line, which the files' own layout (one element per line) allows; a missing
//! attribute reads as empty, and the tests insist nothing is missing.

pub const DBUS: &[&str] = &[
    include_str!("../../dbus/org.nftlbd1.Manager.xml"),
    include_str!("../../dbus/org.nftlbd1.Farm.xml"),
    include_str!("../../dbus/org.nftlbd1.Backend.xml"),
    include_str!("../../dbus/org.nftlbd1.Policy.xml"),
    include_str!("../../dbus/org.nftlbd1.Checkpoint.xml"),
];
pub const VARLINK: &str = include_str!("../../varlink/org.nftlbd1.varlink");
pub const POLKIT_POLICY: &str = include_str!("../../polkit/org.nftlbd1.policy");
pub const POLKIT_EXAMPLE: &str = include_str!("../../polkit/50-nftlbd-delegate.rules.example");

/// An argument of a method or signal; `out` for a method's replies.
pub struct Arg {
    pub name: String,
    pub sig: String,
    pub out: bool,
}

pub struct Member {
    pub name: String,
    pub doc: String,
    pub args: Vec<Arg>,
}

pub struct Property {
    pub name: String,
    pub sig: String,
    pub access: String,
    pub doc: String,
    /// `org.freedesktop.DBus.Property.EmitsChangedSignal`, when not the default (`true`).
    pub emits: Option<String>,
}

#[derive(Default)]
pub struct Interface {
    pub name: String,
    pub doc: String,
    pub methods: Vec<Member>,
    pub properties: Vec<Property>,
    pub signals: Vec<Member>,
}

impl Interface {
    /// The name without the `org.nftlbd1.` prefix, as the operation table writes it.
    pub fn short(&self) -> &str {
        self.name.rsplit('.').next().unwrap_or(&self.name)
    }
}

/// The value of attribute `name` in one line of XML, entities decoded.
fn attr(line: &str, name: &str) -> String {
    let key = format!(" {name}=\"");
    line.split_once(&key)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(v, _)| unescape(v))
        .unwrap_or_default()
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Which element the annotations and arguments that follow belong to.
enum Open {
    Interface,
    Method,
    Signal,
    Property,
}

/// Every interface of the D-Bus files, in file order.
pub fn interfaces() -> Vec<Interface> {
    DBUS.iter().flat_map(|xml| parse_interfaces(xml)).collect()
}

fn parse_interfaces(xml: &str) -> Vec<Interface> {
    let mut out: Vec<Interface> = Vec::new();
    let mut open = Open::Interface;
    for line in xml.lines().map(str::trim) {
        let tag = line.split([' ', '>']).next().unwrap_or("");
        if tag == "<interface" {
            out.push(Interface {
                name: attr(line, "name"),
                ..Interface::default()
            });
            open = Open::Interface;
            continue;
        }
        let Some(iface) = out.last_mut() else {
            continue;
        };
        let closes_itself = line.ends_with("/>");
        match tag {
            "<method" | "<signal" => {
                let m = Member {
                    name: attr(line, "name"),
                    doc: String::new(),
                    args: Vec::new(),
                };
                if tag == "<method" {
                    iface.methods.push(m);
                    open = if closes_itself {
                        Open::Interface
                    } else {
                        Open::Method
                    };
                } else {
                    iface.signals.push(m);
                    open = if closes_itself {
                        Open::Interface
                    } else {
                        Open::Signal
                    };
                }
            }
            "<property" => {
                iface.properties.push(Property {
                    name: attr(line, "name"),
                    sig: attr(line, "type"),
                    access: attr(line, "access"),
                    doc: String::new(),
                    emits: None,
                });
                open = if closes_itself {
                    Open::Interface
                } else {
                    Open::Property
                };
            }
            "</method" | "</signal" | "</property" => open = Open::Interface,
            "<arg" => {
                let arg = Arg {
                    name: attr(line, "name"),
                    sig: attr(line, "type"),
                    out: attr(line, "direction") == "out",
                };
                let member = match open {
                    Open::Method => iface.methods.last_mut(),
                    Open::Signal => iface.signals.last_mut(),
                    _ => None,
                };
                if let Some(m) = member {
                    m.args.push(arg);
                }
            }
            "<annotation" => {
                let value = attr(line, "value");
                match attr(line, "name").as_str() {
                    "org.gtk.GDBus.DocString" => {
                        let doc = match open {
                            Open::Interface => Some(&mut iface.doc),
                            Open::Method => iface.methods.last_mut().map(|m| &mut m.doc),
                            Open::Signal => iface.signals.last_mut().map(|m| &mut m.doc),
                            Open::Property => iface.properties.last_mut().map(|p| &mut p.doc),
                        };
                        if let Some(d) = doc {
                            *d = value;
                        }
                    }
                    "org.freedesktop.DBus.Property.EmitsChangedSignal" => {
                        if let (Open::Property, Some(p)) = (&open, iface.properties.last_mut()) {
                            p.emits = Some(value);
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    out
}

/// One polkit action of the policy file.
#[derive(Default)]
pub struct Action {
    pub id: String,
    pub description: String,
    pub message: String,
    /// allow_any, allow_inactive, allow_active.
    pub defaults: [String; 3],
    /// `org.freedesktop.policykit.imply`: actions this one grants too.
    pub implies: Vec<String>,
}

/// The text between `<tag>` and `</tag>` of one line.
fn element(line: &str, tag: &str) -> Option<String> {
    let rest = line.strip_prefix(&format!("<{tag}>"))?;
    let (text, _) = rest.split_once(&format!("</{tag}>"))?;
    Some(unescape(text))
}

pub fn actions() -> Vec<Action> {
    let mut out: Vec<Action> = Vec::new();
    for line in POLKIT_POLICY.lines().map(str::trim) {
        if line.starts_with("<action ") {
            out.push(Action {
                id: attr(line, "id"),
                ..Action::default()
            });
            continue;
        }
        let Some(a) = out.last_mut() else {
            continue;
        };
        if let Some(t) = element(line, "description") {
            a.description = t;
        } else if let Some(t) = element(line, "message") {
            a.message = t;
        } else if let Some(t) = element(line, "allow_any") {
            a.defaults[0] = t;
        } else if let Some(t) = element(line, "allow_inactive") {
            a.defaults[1] = t;
        } else if let Some(t) = element(line, "allow_active") {
            a.defaults[2] = t;
        } else if line.starts_with("<annotate ") && attr(line, "key") == "org.freedesktop.policykit.imply" {
            let text = line
                .split_once('>')
                .and_then(|(_, r)| r.split_once("</annotate>"));
            if let Some((ids, _)) = text {
                a.implies.extend(ids.split_whitespace().map(str::to_string));
            }
        }
    }
    out
}

/// The varlink methods, in file order.
pub fn varlink_methods() -> Vec<&'static str> {
    VARLINK
        .lines()
        .filter_map(|l| l.strip_prefix("method "))
        .filter_map(|l| l.split_once('(').map(|(n, _)| n))
        .collect()
}

/// The varlink errors: (name, parameters as written).
pub fn varlink_errors() -> Vec<(&'static str, &'static str)> {
    VARLINK
        .lines()
        .filter_map(|l| l.strip_prefix("error "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, p)| (n, p.trim()))
        .collect()
}
