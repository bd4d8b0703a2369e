//! Putting the files over the configuration: what a load commits.
//!
//! Files own the names they declare. A file's farm replaces the farm of its name (what the checks
//! found about its backends is kept: that is runtime state, not configuration); a name a file
//! owned that no file declares any more is deleted; farms and policies made at runtime stay. A
//! file is refused whole, naming it and the field, when it does not parse, declares a name twice,
//! declares a name another file or a runtime farm has, or makes the configuration invalid; what a
//! refused file owned stays as it is, and the other files load.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use super::origins::Origins;
use super::read::File;
use crate::model::{Backend, Config, Farm, FieldError, Invalid, Policy};

/// What a load makes of the files.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub origins: Origins,
    /// Why files were refused: `PATH: field` and the reason, in the order of the paths.
    pub refused: Vec<FieldError>,
}

/// Puts `files` over `current`, whose file-owned names `owned` says. `check` validates a
/// candidate configuration (and whether this daemon supports it); its errors are traced to the
/// files that caused them, which are refused, and the rest is tried again, so the result passes
/// `check` whenever `current` does.
pub fn merge(
    current: &Config,
    owned: &Origins,
    files: Vec<File>,
    check: impl Fn(&Config) -> Result<(), Invalid>,
) -> Loaded {
    let mut refused: BTreeMap<PathBuf, Vec<FieldError>> = BTreeMap::new();
    let mut docs: BTreeMap<PathBuf, Config> = BTreeMap::new();
    for f in files {
        match f.doc {
            Ok(doc) => match twice(&doc) {
                Some(e) => {
                    refused.insert(f.path, vec![e]);
                }
                None => {
                    docs.insert(f.path, doc);
                }
            },
            Err(e) => {
                refused.insert(f.path, e.0);
            }
        }
    }
    // Files that owned names and are gone: their names are deleted, unless that is refused.
    let gone: BTreeSet<PathBuf> = owned
        .farms
        .values()
        .chain(owned.policies.values())
        .filter(|p| !docs.contains_key(*p) && !refused.contains_key(*p))
        .cloned()
        .collect();
    loop {
        claims(current, owned, &mut docs, &mut refused);
        let (config, origins) = build(current, owned, &docs, &refused);
        let errors = match check(&config) {
            Ok(()) => return finish(config, origins, refused),
            Err(e) => e.0,
        };
        let mut culprits: BTreeMap<PathBuf, Vec<FieldError>> = BTreeMap::new();
        for e in errors {
            match culprit(&e.field, &docs, owned, &refused) {
                Some(p) => culprits.entry(p).or_default().push(e),
                // Not traced to one file: every file that could have changed anything is refused,
                // which leaves the configuration as it was.
                None => {
                    for p in docs.keys().chain(gone.iter()) {
                        if !refused.contains_key(p) {
                            culprits.entry(p.clone()).or_default().push(e.clone());
                        }
                    }
                }
            }
        }
        if culprits.is_empty() {
            // Nothing left to refuse: the configuration was invalid before the files.
            return finish(config, origins, refused);
        }
        for (p, errs) in culprits {
            docs.remove(&p);
            refused.entry(p).or_default().extend(errs);
        }
    }
}

fn finish(config: Config, origins: Origins, refused: BTreeMap<PathBuf, Vec<FieldError>>) -> Loaded {
    let refused = refused
        .into_iter()
        .flat_map(|(p, errs)| {
            errs.into_iter().map(move |e| FieldError {
                field: format!("{}: {}", p.display(), e.field),
                reason: e.reason,
            })
        })
        .collect();
    Loaded {
        config,
        origins,
        refused,
    }
}

/// A name the document declares twice.
fn twice(doc: &Config) -> Option<FieldError> {
    let mut farms = BTreeSet::new();
    for f in &doc.farms {
        if !farms.insert(f.name.as_str()) {
            return Some(error(
                format!("farms[{}].name", f.name),
                "declared twice in this file",
            ));
        }
    }
    let mut policies = BTreeSet::new();
    for p in &doc.policies {
        if !policies.insert(p.name.as_str()) {
            return Some(error(
                format!("policies[{}].name", p.name),
                "declared twice in this file",
            ));
        }
    }
    None
}

fn error(field: String, reason: impl Into<String>) -> FieldError {
    FieldError {
        field,
        reason: reason.into(),
    }
}

/// The two kinds of named things a file declares.
#[derive(Clone, Copy)]
enum Kind {
    Farm,
    Policy,
}

impl Kind {
    fn list(self) -> &'static str {
        match self {
            Kind::Farm => "farms",
            Kind::Policy => "policies",
        }
    }

    fn owned(self, o: &Origins) -> &BTreeMap<String, PathBuf> {
        match self {
            Kind::Farm => &o.farms,
            Kind::Policy => &o.policies,
        }
    }

    fn names(self, doc: &Config) -> Vec<&str> {
        match self {
            Kind::Farm => doc.farms.iter().map(|f| f.name.as_str()).collect(),
            Kind::Policy => doc.policies.iter().map(|p| p.name.as_str()).collect(),
        }
    }

    fn exists(self, config: &Config, name: &str) -> bool {
        match self {
            Kind::Farm => config.farms.iter().any(|f| f.name == name),
            Kind::Policy => config.policies.iter().any(|p| p.name == name),
        }
    }
}

/// Refuses the files that declare a name someone else has: another file (the one that owned it
/// wins, else the first by path), a refused file that keeps it, or a runtime farm or policy.
fn claims(
    current: &Config,
    owned: &Origins,
    docs: &mut BTreeMap<PathBuf, Config>,
    refused: &mut BTreeMap<PathBuf, Vec<FieldError>>,
) {
    loop {
        let mut losers: BTreeMap<PathBuf, Vec<FieldError>> = BTreeMap::new();
        for kind in [Kind::Farm, Kind::Policy] {
            let mut by_name: BTreeMap<&str, Vec<&PathBuf>> = BTreeMap::new();
            for (p, doc) in docs.iter() {
                for n in kind.names(doc) {
                    by_name.entry(n).or_default().push(p);
                }
            }
            for (name, claimants) in by_name {
                let field = format!("{}[{name}]", kind.list());
                let owner = kind.owned(owned).get(name);
                if let Some(o) = owner
                    && refused.contains_key(o)
                {
                    for p in claimants {
                        let reason = format!("also declared by {}, which was refused", o.display());
                        losers
                            .entry(p.clone())
                            .or_default()
                            .push(error(field.clone(), reason));
                    }
                    continue;
                }
                if owner.is_none() && kind.exists(current, name) {
                    for p in claimants {
                        losers.entry(p.clone()).or_default().push(error(
                            field.clone(),
                            "also declared at runtime (delete it there first)",
                        ));
                    }
                    continue;
                }
                let winner = owner.filter(|o| claimants.contains(o)).unwrap_or(claimants[0]);
                for p in claimants.into_iter().filter(|p| *p != winner) {
                    let reason = format!("also declared by {}", winner.display());
                    losers
                        .entry(p.clone())
                        .or_default()
                        .push(error(field.clone(), reason));
                }
            }
        }
        if losers.is_empty() {
            return;
        }
        for (p, errs) in losers {
            docs.remove(&p);
            refused.entry(p).or_default().extend(errs);
        }
    }
}

/// The configuration and owners the accepted files make.
fn build(
    current: &Config,
    owned: &Origins,
    docs: &BTreeMap<PathBuf, Config>,
    refused: &BTreeMap<PathBuf, Vec<FieldError>>,
) -> (Config, Origins) {
    let mut origins = Origins::default();
    // What refused files owned stays theirs, as it is.
    for (n, p) in &owned.farms {
        if refused.contains_key(p) {
            origins.farms.insert(n.clone(), p.clone());
        }
    }
    for (n, p) in &owned.policies {
        if refused.contains_key(p) {
            origins.policies.insert(n.clone(), p.clone());
        }
    }
    for (p, doc) in docs {
        for f in &doc.farms {
            origins.farms.insert(f.name.clone(), p.clone());
        }
        for q in &doc.policies {
            origins.policies.insert(q.name.clone(), p.clone());
        }
    }
    // Names files owned and no longer declare.
    let dropped_farms: BTreeSet<&str> = owned
        .farms
        .keys()
        .filter(|n| !origins.farms.contains_key(*n))
        .map(String::as_str)
        .collect();
    let dropped_policies: BTreeSet<&str> = owned
        .policies
        .keys()
        .filter(|n| !origins.policies.contains_key(*n))
        .map(String::as_str)
        .collect();
    let mut config = current.clone();
    config.farms.retain(|f| !dropped_farms.contains(f.name.as_str()));
    config
        .policies
        .retain(|p| !dropped_policies.contains(p.name.as_str()));
    let mut farm_at: HashMap<String, usize> = config
        .farms
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.clone(), i))
        .collect();
    let mut policy_at: HashMap<String, usize> = config
        .policies
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.clone(), i))
        .collect();
    for doc in docs.values() {
        for q in &doc.policies {
            put_policy(&mut config, &mut policy_at, q);
        }
        for f in &doc.farms {
            put_farm(&mut config, &mut farm_at, f);
        }
    }
    (config, origins)
}

fn put_policy(config: &mut Config, at: &mut HashMap<String, usize>, q: &Policy) {
    match at.get(&q.name) {
        Some(&i) => {
            if config.policies[i] != *q {
                config.policies[i] = q.clone();
            }
        }
        None => {
            at.insert(q.name.clone(), config.policies.len());
            config.policies.push(q.clone());
        }
    }
}

fn put_farm(config: &mut Config, at: &mut HashMap<String, usize>, declared: &Farm) {
    match at.get(&declared.name) {
        Some(&i) => {
            let mut f = declared.clone();
            keep_health(&config.farms[i], &mut f);
            // Left alone when equal: the list shares what did not change with the committed one.
            if config.farms[i] != f {
                config.farms[i] = f;
            }
        }
        None => {
            at.insert(declared.name.clone(), config.farms.len());
            config.farms.push(declared.clone());
        }
    }
}

/// What the checks found about `old`'s backends carries over to those of `new` of the same
/// name: a reload does not make backends forget their verdicts.
fn keep_health(old: &Farm, new: &mut Farm) {
    let before: HashMap<&str, &Backend> = old.backends.iter().map(|b| (b.name.as_str(), b)).collect();
    for b in new.backends.iter_mut() {
        if let Some(o) = before.get(b.name.as_str()) {
            b.health = o.health;
            b.health_reason = o.health_reason.clone();
            b.health_drain = o.health_drain;
            b.health_weight = o.health_weight;
            b.health_ramp = o.health_ramp;
        }
    }
}

/// The file to refuse for an error on `field` (`farms[web].…`, `policies[bl].…`): the file that
/// declares that name now, or the file that owned it and dropped it (edited or removed). `None` for any other field.
fn culprit(
    field: &str,
    docs: &BTreeMap<PathBuf, Config>,
    owned: &Origins,
    refused: &BTreeMap<PathBuf, Vec<FieldError>>,
) -> Option<PathBuf> {
    let (kind, rest) = if let Some(r) = field.strip_prefix("farms[") {
        (Kind::Farm, r)
    } else if let Some(r) = field.strip_prefix("policies[") {
        (Kind::Policy, r)
    } else {
        return None;
    };
    let (name, _) = rest.split_once(']')?;
    if let Some((p, _)) = docs.iter().find(|(_, d)| kind.names(d).contains(&name)) {
        return Some(p.clone());
    }
    kind.owned(owned)
        .get(name)
        .filter(|p| !refused.contains_key(*p))
        .cloned()
}
