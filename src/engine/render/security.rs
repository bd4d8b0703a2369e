//! A farm's security rules (policies, limits, logging) and helpers, and the policies' elements.

use super::*;

/// Ends a rule that refuses a packet as the farm's `verdict` says: log (with `prefix`), drop.
pub fn log(prefix: String) -> Expr {
    Expr::Log {
        prefix: Some(prefix.chars().take(127).collect()),
        group: None,
        snaplen: None,
        qthreshold: None,
        // The kernel stores the default level (warning) explicitly; say it so reads match.
        level: Some(4),
        flags: 0,
    }
}

/// The farm's log statement, rate-limited by `log-rtlimit` when set.
pub(super) fn farm_log(e: &mut Exprs, farm: &Farm, prefix: String) {
    if let Some(rate) = farm.log_rtlimit.filter(|r| r.count > 0) {
        let mut l = limit(rate, 5);
        if let Expr::Limit(x) = &mut l {
            x.over = false;
        }
        e.push(l);
    }
    e.push(log(prefix));
}

/// Ends a rule that refuses a packet as the farm's `verdict` says. With `log-rtlimit` the rule
/// jumps to a chain of its own (`refuse-<farm>-<kind>`), where a rate-limited log cannot keep
/// the drop from happening; that chain is added to `extra`.
pub(super) fn refuse_or_jump(
    e: &mut Exprs,
    fam: IpFamily,
    farm: &Farm,
    kind: &str,
    extra: &mut Vec<ChainDef>,
) {
    let logs = farm.verdict.contains(&VerdictAction::Log);
    if !(logs && farm.log_rtlimit.is_some_and(|r| r.count > 0)) {
        refuse(e, farm, kind);
        return;
    }
    let name = refuse_chain(&farm.name, &kind.replace('.', "_"));
    let p = match &farm.log_prefix {
        None => format!("{kind}-{} ", farm.name),
        Some(_) => log_prefix(farm, kind, "DROP", format!("{kind} ")),
    };
    let mut c = Exprs::new();
    farm_log(&mut c, farm, p);
    let mut rules = vec![rule(fam, &name, &mut c)];
    if farm.verdict.contains(&VerdictAction::Drop) {
        c.push(Expr::verdict(Verdict::Drop));
        rules.push(rule(fam, &name, &mut c));
    }
    extra.push(ChainDef {
        chain: Chain::regular(fam.family(), TABLE, &name),
        rules,
    });
    e.push(Expr::verdict(Verdict::Jump(name)));
}

/// A log prefix. nftlb's tokens in `log-prefix` are replaced (`KNAME`: what logs, `TYPE`: IN,
/// FWD, OUT or the refusal, `FNAME`: the farm, `ANAME`: its first address); a `log-prefix`
/// without tokens is put before `fallback`'s text.
pub fn log_prefix(farm: &Farm, kind: &str, typ: &str, fallback: String) -> String {
    match &farm.log_prefix {
        Some(p) if ["KNAME", "TYPE", "FNAME", "ANAME"].iter().any(|t| p.contains(t)) => {
            let addr = farm
                .virtual_addresses
                .first()
                .map(|a| a.to_string())
                .unwrap_or_default();
            p.replace("KNAME", kind)
                .replace("TYPE", typ)
                .replace("FNAME", &farm.name)
                .replace("ANAME", &addr)
        }
        Some(p) => format!("{p}{fallback}"),
        None => fallback,
    }
}

pub(super) fn refuse(e: &mut Exprs, farm: &Farm, prefix: &str) {
    if farm.verdict.contains(&VerdictAction::Log) {
        let p = match &farm.log_prefix {
            None => format!("{prefix}-{} ", farm.name),
            Some(_) => log_prefix(farm, prefix, "DROP", format!("{prefix} ")),
        };
        e.push(log(p));
    }
    if farm.verdict.contains(&VerdictAction::Drop) {
        e.push(Expr::verdict(Verdict::Drop));
    }
}

/// `ct mark & 0xffff0000 . <saddr>` into the registers from R1: the farm and the client.
pub(super) fn farm_and_client(e: &mut Exprs, fam: IpFamily) {
    e.ct_mark(reg::R1).mask(reg::R1, FARM_MASK);
    e.key_fields(fam, &[KeyField::Srcip], 1);
}

pub(super) fn limit(rate: Rate, burst: u32) -> Expr {
    Expr::Limit(Limit {
        rate: rate.count,
        unit: match rate.unit {
            crate::model::RateUnit::Second => LimitUnit::Second,
            crate::model::RateUnit::Minute => LimitUnit::Minute,
            crate::model::RateUnit::Hour => LimitUnit::Hour,
            crate::model::RateUnit::Day => LimitUnit::Day,
            crate::model::RateUnit::Week => LimitUnit::Week,
        },
        // nft prints a burst of 0 as no burst and reads that back as 5: always say it.
        burst: burst.max(1),
        bytes: false,
        over: true,
    })
}

/// Security rules of a farm, first in its chain (new connections only, as the chain is a nat
/// chain): its policies in attachment order, then its per-client limits.
pub(super) fn security_rules(
    fam: IpFamily,
    farm: &Farm,
    policies: &[&Policy],
    chain: &str,
    rules: &mut Vec<Rule>,
    extra: &mut Vec<ChainDef>,
) {
    let mut e = Exprs::new();
    for p in policies.iter().filter(|p| policy_in(p, fam)) {
        // A blacklist refuses what it lists; a whitelist refuses everything it does not list.
        e.push(Expr::payload(fam.saddr(), reg::R1)).push(Expr::Lookup {
            set: policy_set(&p.name),
            sreg: reg::R1,
            dreg: None,
            invert: p.kind == PolicyType::Whitelist,
        });
        let kind = policy_refusal(p.kind == PolicyType::Whitelist, &p.name);
        refuse_or_jump(&mut e, fam, farm, &kind, extra);
        rules.push(rule(fam, chain, &mut e));
    }
    let ttl = Some(u64::from(farm.limits_ttl.max(1)) * 1000);
    if let Some(rate) = farm.new_rtlimit.filter(|r| r.count > 0) {
        farm_and_client(&mut e, fam);
        e.push(Expr::Dynset {
            set: new_rtlimit_set(&rate, farm.new_rtlimit_burst),
            op: DynsetOp::Add,
            sreg_key: reg::R1,
            sreg_data: None,
            timeout_ms: ttl,
            exprs: vec![limit(rate, farm.new_rtlimit_burst)],
        });
        refuse_or_jump(&mut e, fam, farm, REFUSE_NEW_RTLIMIT, extra);
        rules.push(rule(fam, chain, &mut e));
    }
    if farm.est_connlimit > 0 {
        farm_and_client(&mut e, fam);
        e.push(Expr::Dynset {
            set: est_connlimit_set(farm.est_connlimit),
            op: DynsetOp::Add,
            sreg_key: reg::R1,
            sreg_data: None,
            timeout_ms: None,
            exprs: vec![Expr::Connlimit {
                count: farm.est_connlimit,
                over: true,
            }],
        });
        refuse_or_jump(&mut e, fam, farm, REFUSE_EST_CONNLIMIT, extra);
        rules.push(rule(fam, chain, &mut e));
    }
}

/// The conntrack helper objects a farm needs: (object name, kernel helper, layer-4 protocol).
pub(super) fn helpers(farm: &Farm) -> Vec<(String, &'static str, u8)> {
    let helper = match farm.helper {
        Helper::None => return Vec::new(),
        Helper::Ftp => "ftp",
        Helper::Pptp => "pptp",
        Helper::Sip => "sip",
        Helper::Snmp => "snmp",
        Helper::Tftp => "tftp",
    };
    farm.protocol
        .numbers()
        .iter()
        .filter_map(|p| match p {
            6 => Some(("tcp", 6)),
            17 => Some(("udp", 17)),
            _ => None,
        })
        .map(|(name, n)| (helper_obj(helper, name), helper, n))
        .collect()
}

pub(super) fn policy_in(p: &Policy, fam: IpFamily) -> bool {
    (p.family == PolicyFamily::Ipv6) == fam.is_v6()
}

/// The policies a farm attaches, in its order (validation made sure they exist).
pub fn attached<'a>(farm: &Farm, policies: &'a crate::model::List<Policy>) -> Vec<&'a Policy> {
    farm.policies
        .iter()
        .filter_map(|n| policies.iter().find(|p| p.name == *n))
        .collect()
}

/// A policy's set: addresses, CIDRs and ranges as intervals, each with a counter.
pub(super) fn policy_map(fam: IpFamily, p: &Policy) -> Set {
    policy_map_in(fam.family(), p)
}

/// A policy's set in a table of `family` (the netdev table takes copies for layer-2 farms).
pub fn policy_map_in(family: Family, p: &Policy) -> Set {
    let addr = if p.family == PolicyFamily::Ipv6 {
        DataType::Ipv6Addr
    } else {
        DataType::Ipv4Addr
    };
    let mut s =
        Set::new(family, TABLE, &policy_set(&p.name), TypeSpec::of(addr)).with_flags(NFT_SET_INTERVAL);
    s.exprs = vec![Expr::counter()];
    s
}

/// A policy's elements (merged: the kernel refuses overlapping or touching intervals).
pub fn policy_part(fam: IpFamily, p: &Policy) -> Option<FarmPart> {
    if !policy_in(p, fam) {
        return None;
    }
    let mut ranges: Vec<(u128, u128)> = p
        .elements
        .iter()
        .map(|e| {
            let (a, b) = e.bounds();
            (ip_num(&a), ip_num(&b))
        })
        .collect();
    ranges.sort();
    let mut merged: Vec<(u128, u128)> = Vec::new();
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let width = if fam.is_v6() { 16 } else { 4 };
    let bytes = |n: u128| n.to_be_bytes()[16 - width..].to_vec();
    let elems = merged
        .iter()
        .flat_map(|(a, b)| SetElem::range(&bytes(*a), &bytes(*b), None))
        .collect();
    Some(FarmPart {
        chain: None,
        extra: Vec::new(),
        elems: BTreeMap::from([(policy_set(&p.name), elems)]),
    })
}

pub(super) fn ip_num(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

pub(super) fn limit_set(fam: IpFamily, name: &str, timeout: bool) -> Set {
    let mut s = Set::new(
        fam.family(),
        TABLE,
        name,
        TypeSpec::concat(&[DataType::Mark, fam.addr_type()]),
    )
    .with_flags(NFT_SET_EVAL | if timeout { NFT_SET_TIMEOUT } else { 0 });
    s.size = Some(LIMIT_SIZE);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_prefixes_take_nftlb_tokens() {
        let mut f = Farm::new("web");
        f.virtual_addresses = vec!["192.0.2.1".parse().unwrap()];
        assert_eq!(log_prefix(&f, "k", "IN", "IN-web ".into()), "IN-web ");
        f.log_prefix = Some("lb1-".into());
        assert_eq!(log_prefix(&f, "k", "IN", "IN-web ".into()), "lb1-IN-web ");
        f.log_prefix = Some("KNAME:TYPE:FNAME:ANAME ".into());
        assert_eq!(
            log_prefix(&f, "new-rtlimit", "DROP", "x".into()),
            "new-rtlimit:DROP:web:192.0.2.1 "
        );
    }
}
