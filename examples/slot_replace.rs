//! Times replacing a farm's scheduling rule (`numgen … mod N`) beside a big slot map, in the
//! transaction shapes the engine could use. Needs root: it moves itself into a fresh network
//! namespace.
//!
//!   cargo run --release --example slot_replace -- [ELEMENTS…]     (default: 1000 60000)
//!
//! Each shape starts from a farm chain (`ct mark set <tag>`, the scheduling rule or rules, a
//! verdict) beside a map of that many elements, changes N to N-1 and back 40 times, and prints
//! the median commit time. `SHAPE=<part of a name>` runs only the shapes it names.

use std::time::{Duration, Instant};

use nftlbd::netlink::consts::reg;
use nftlbd::netlink::sys::*;
use nftlbd::netlink::*;

const T: &str = "slotwalk";
const CHAIN: &str = "farm-big";
const MAP: &str = "slots-0";
const PICK: &str = "pick-0";
const REPS: usize = 40;

fn ct_set(sreg: u32) -> Expr {
    Expr::CtSet {
        key: NFT_CT_MARK,
        sreg,
        dir: None,
    }
}

fn numgen(n: u32) -> Expr {
    Expr::Numgen {
        dreg: reg::R1,
        modulus: n,
        random: false,
        offset: 0,
    }
}

fn rule(exprs: Vec<Expr>) -> Rule {
    Rule::new(Family::Ip, T, CHAIN, exprs)
}

/// Every shape's first rule: the farm's tag in the connection mark.
fn tag() -> Rule {
    rule(vec![
        Expr::immediate(reg::R1, 7u32.to_ne_bytes()),
        ct_set(reg::R1),
    ])
}

/// Today's shape: one rule draws the slot and maps it.
fn joined(n: u32) -> Vec<Rule> {
    vec![
        tag(),
        rule(vec![
            numgen(n),
            Expr::map(MAP, reg::R1, reg::R1),
            ct_set(reg::R1),
            Expr::verdict(Verdict::Accept),
        ]),
        rule(vec![Expr::verdict(Verdict::Drop)]),
    ]
}

/// The slot goes through the connection mark: the rule that maps it never changes.
fn split(n: u32) -> Vec<Rule> {
    vec![
        tag(),
        rule(vec![numgen(n), ct_set(reg::R1)]),
        rule(vec![
            Expr::ct(NFT_CT_MARK, reg::R1),
            Expr::map(MAP, reg::R1, reg::R1),
            ct_set(reg::R1),
            Expr::verdict(Verdict::Accept),
        ]),
        rule(vec![Expr::verdict(Verdict::Drop)]),
    ]
}

/// The engine's layout: the farm's chain draws the slot into the connection mark and jumps to
/// the shard's chain, which alone binds the map and is never replaced.
fn pick(n: u32) -> Vec<Rule> {
    vec![
        tag(),
        rule(vec![
            numgen(n),
            ct_set(reg::R1),
            Expr::verdict(Verdict::Jump(PICK.into())),
        ]),
        rule(vec![Expr::verdict(Verdict::Accept)]),
    ]
}

/// The shard's chain (present in every shape, bound once when the map is empty).
fn pick_rules() -> Vec<Rule> {
    let map = vec![
        Expr::ct(NFT_CT_MARK, reg::R1),
        Expr::map(MAP, reg::R1, reg::R1),
        ct_set(reg::R1),
        Expr::verdict(Verdict::Return),
    ];
    vec![
        Rule::new(Family::Ip, T, PICK, map),
        Rule::new(Family::Ip, T, PICK, vec![Expr::verdict(Verdict::Drop)]),
    ]
}

fn setup(conn: &mut Connection, elems: u32, rules: &[Rule]) {
    let mut b = Batch::new();
    b.add_table(&Table::new(Family::Ip, T)).expect("table");
    b.add_set(&Set::map(
        Family::Ip,
        T,
        MAP,
        TypeSpec::of(DataType::Integer(4)),
        TypeSpec::of(DataType::Mark),
    ))
    .expect("set");
    b.add_chain(&Chain::regular(Family::Ip, T, PICK)).expect("chain");
    b.add_chain(&Chain::regular(Family::Ip, T, CHAIN)).expect("chain");
    for r in pick_rules().iter().chain(rules) {
        b.add_rule(r).expect("rule");
    }
    conn.commit(b).expect("setup");
    let all: Vec<SetElem> = (0..elems)
        .map(|i| {
            SetElem::mapping(
                i.to_ne_bytes().to_vec(),
                Data::Value((i + 1).to_ne_bytes().to_vec().into()),
            )
        })
        .collect();
    for chunk in all.chunks(20_000) {
        let mut b = Batch::new();
        b.add_elems(Family::Ip, T, MAP, chunk).expect("elements");
        conn.commit(b).expect("elements");
    }
}

fn teardown(conn: &mut Connection) {
    let mut b = Batch::new();
    b.del_table(Family::Ip, T).expect("del");
    conn.commit(b).expect("drop table");
}

fn handle_of(conn: &mut Connection, index: usize) -> u64 {
    let rules = conn.list_rules(Family::Ip, T, Some(CHAIN)).expect("list");
    rules[index].handle.expect("handle")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// How a change of N is written, given the rules wanted and the handle of the rule that changes.
type Write = fn(&mut Batch, &[Rule], usize, u64);

/// A transaction shape: its name, the farm's rules for N, the index of the rule N changes, and
/// how the change is written.
struct Shape {
    name: &'static str,
    layout: fn(u32) -> Vec<Rule>,
    at: usize,
    write: Write,
}

fn flush_readd(b: &mut Batch, rules: &[Rule], _: usize, _: u64) {
    b.flush_chain(Family::Ip, T, CHAIN).expect("flush");
    for r in rules {
        b.add_rule(r).expect("add");
    }
}

fn replace_by_handle(b: &mut Batch, rules: &[Rule], at: usize, handle: u64) {
    let mut r = rules[at].clone();
    r.handle = Some(handle);
    b.replace_rule(&r).expect("replace");
}

fn add_then_delete(b: &mut Batch, rules: &[Rule], at: usize, handle: u64) {
    b.add_rule_after(&rules[at], handle).expect("add after");
    b.del_rule(Family::Ip, T, CHAIN, handle).expect("delete");
}

fn delete_then_add(b: &mut Batch, rules: &[Rule], at: usize, handle: u64) {
    b.insert_rule(&rules[at], Some(handle)).expect("insert");
    b.del_rule(Family::Ip, T, CHAIN, handle).expect("delete");
}

fn run(conn: &mut Connection, elems: u32, shape: &Shape) -> Duration {
    let n = 1000;
    setup(conn, elems, &(shape.layout)(n));
    let mut times = Vec::new();
    for i in 0..REPS {
        let rules = (shape.layout)(if i % 2 == 0 { n - 1 } else { n });
        let handle = handle_of(conn, shape.at);
        let mut b = Batch::new();
        (shape.write)(&mut b, &rules, shape.at, handle);
        let t = Instant::now();
        conn.commit(b).expect("replace");
        times.push(t.elapsed());
    }
    teardown(conn);
    median(times)
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("slot_replace: needs root (network namespace + CAP_NET_ADMIN)");
        std::process::exit(1);
    }
    // SAFETY: single-threaded here; moves this process into an empty network namespace.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
    let sizes: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number of elements"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 60_000]
    } else {
        sizes
    };
    let only = std::env::var("SHAPE").ok();
    let mut conn = Connection::new().expect("netlink");
    let shape = |name, layout, at, write| Shape {
        name,
        layout,
        at,
        write,
    };
    let shapes = [
        shape("joined: flush + re-add (before)", joined, 1, flush_readd as Write),
        shape("joined: replace by handle", joined, 1, replace_by_handle),
        shape("joined: add after, delete old", joined, 1, add_then_delete),
        shape("joined: insert before, delete old", joined, 1, delete_then_add),
        shape("split: flush + re-add", split, 1, flush_readd),
        shape(
            "split: replace the numgen rule by handle",
            split,
            1,
            replace_by_handle,
        ),
        shape("pick chain: flush + re-add (now)", pick, 1, flush_readd),
    ];
    let columns: Vec<String> = sizes.iter().map(|s| format!("{s} elements")).collect();
    println!("| shape | {} |", columns.join(" | "));
    println!("|---|{}", "---|".repeat(sizes.len()));
    for shape in &shapes {
        if only.as_deref().is_some_and(|o| !shape.name.contains(o)) {
            continue;
        }
        let cells: Vec<String> = sizes
            .iter()
            .map(|&s| format!("{:.3} ms", run(&mut conn, s, shape).as_secs_f64() * 1e3))
            .collect();
        println!("| {} | {} |", shape.name, cells.join(" | "));
    }
}
