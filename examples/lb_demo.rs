//! Demo of the netlink layer: a round-robin load balancer for VIP 10.9.0.100:80, written and then
//! changed live with one atomic transaction each. Run inside the balancer's namespace:
//!
//!   ip netns exec <lb> lb_demo apply 10.1.0.2 10.1.0.3 [10.1.0.4 …]
//!
//! The first call creates the table; later calls change only what differs: new backends are added
//! to the map and the one scheduling rule is replaced (its modulus changes) in the same commit.

use std::net::Ipv4Addr;

use nftlbd::netlink::consts::reg;
use nftlbd::netlink::sys::*;
use nftlbd::netlink::*;

const T: &str = "nftlbd-demo";
const VIP: [u8; 4] = [10, 9, 0, 100];

fn sched_rule(n: u32) -> Rule {
    let tcp = [
        Expr::meta(NFT_META_L4PROTO, reg::R1),
        Expr::cmp(reg::R1, CmpOp::Eq, vec![6]),
    ];
    let mut exprs = vec![
        Expr::payload(PayloadField::IpDaddr, reg::R1),
        Expr::cmp(reg::R1, CmpOp::Eq, VIP.to_vec()),
    ];
    exprs.extend(tcp);
    exprs.extend([
        Expr::payload(PayloadField::TcpDport, reg::R1),
        Expr::cmp(reg::R1, CmpOp::Eq, 80u16.to_be_bytes().to_vec()),
        Expr::Numgen {
            dreg: reg::R1,
            modulus: n,
            random: false,
            offset: 0,
        },
        Expr::map("backends", reg::R1, reg::R1),
        Expr::nat(NatType::Dnat, 2, Some((reg::R1, reg::R1)), None, 0),
    ]);
    Rule::new(Family::Ip, T, "prerouting", exprs).with_comment("scheduler")
}

fn backend(i: u32, ip: Ipv4Addr) -> SetElem {
    SetElem::mapping(i.to_ne_bytes().to_vec(), Data::Value(ip.octets().to_vec().into()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some("apply"), ips) = (args.first().map(String::as_str), &args[1.min(args.len())..]) else {
        return Err("usage: lb_demo apply BACKEND_IP...".into());
    };
    let ips: Vec<Ipv4Addr> = ips.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
    if ips.is_empty() {
        return Err("give at least one backend address".into());
    }
    let n = ips.len() as u32;
    let mut conn = Connection::new()?;
    let exists = conn.list_tables(Some(Family::Ip))?.iter().any(|t| t.name == T);
    let mut b = Batch::new();
    if !exists {
        b.add_table(&Table::new(Family::Ip, T))?;
        let hook = Hook::new(HookPoint::Prerouting, -100);
        b.add_chain(&Chain::base(
            Family::Ip,
            T,
            "prerouting",
            ChainType::Nat,
            hook,
            Verdict::Accept,
        ))?;
        let mut m = Set::map(
            Family::Ip,
            T,
            "backends",
            TypeSpec::of(DataType::Integer(4)),
            TypeSpec::of(DataType::Ipv4Addr),
        );
        m.userdata.key_typeof = Some(Typeof::Numgen {
            random: false,
            modulus: n,
            offset: 0,
        });
        m.userdata.data_typeof = Some(Typeof::Payload(PayloadField::IpDaddr));
        b.add_set(&m)?;
        let elems: Vec<SetElem> = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| backend(i as u32, *ip))
            .collect();
        b.add_elems(Family::Ip, T, "backends", &elems)?;
        b.add_rule(&sched_rule(n))?;
        println!(
            "creating the balancer with {n} backends (one transaction of {} messages)",
            b.len()
        );
    } else {
        // Incremental: only the backends that changed, plus the rule whose modulus changes.
        let current = conn.list_elems(Family::Ip, T, "backends")?;
        let want: Vec<SetElem> = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| backend(i as u32, *ip))
            .collect();
        let stale: Vec<SetElem> = current.iter().filter(|e| !want.contains(e)).cloned().collect();
        let new: Vec<SetElem> = want.iter().filter(|e| !current.contains(e)).cloned().collect();
        if !stale.is_empty() {
            b.del_elems(Family::Ip, T, "backends", &stale)?;
        }
        if !new.is_empty() {
            b.add_elems(Family::Ip, T, "backends", &new)?;
        }
        let rule = conn
            .list_rules(Family::Ip, T, Some("prerouting"))?
            .into_iter()
            .find(|r| r.comment.as_deref() == Some("scheduler"));
        match rule {
            Some(r) if r.exprs == sched_rule(n).exprs => {}
            Some(r) => b.replace_rule(&Rule {
                handle: r.handle,
                ..sched_rule(n)
            })?,
            None => b.add_rule(&sched_rule(n))?,
        }
        println!(
            "changing live: -{} +{} backends, {} messages in one transaction",
            stale.len(),
            new.len(),
            b.len()
        );
    }
    let generation = conn.commit(b)?;
    println!("committed, ruleset generation {generation}");
    Ok(())
}
