//! `replay --trace` shows the SQL interleaving behind a failure: every database statement in
//! server order with its session, the operation that issued it, its outcome and lock waits,
//! and the statements of the witness's operations on their own. Recording the statements
//! only observes: the trace hash is the same with and without it.

use std::collections::BTreeMap;

use crate::cli::{shopsim, temp_dir};

/// A planted lost update (`oversell_check_then_act`: the stock row is read without a lock and
/// written back with the value read). Whatever the schedule, an oversell needs two requests
/// that read the same `reserved` of one product before either one's COMMIT and then both
/// wrote the same new value: the witness part of the trace must show exactly that.
#[test]
fn the_trace_shows_both_sessions_reading_the_same_stock_then_both_writing() {
    let args = [
        "replay",
        "inventory-race",
        "--seed",
        "3",
        "--bug",
        "oversell_check_then_act",
    ];
    let (code, plain, err) = shopsim(&args);
    assert_eq!(code, 1, "{plain}{err}");
    let mut traced_args = args.to_vec();
    traced_args.push("--trace");
    let (code, out, err) = shopsim(&traced_args);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(hash(&plain), hash(&out), "recording changed the run");

    let witness = out
        .split("\nthe witness's operations in the database:\n")
        .nth(1)
        .expect("a witness part");
    let lines: Vec<Line> = witness.lines().filter_map(Line::parse).collect();
    assert!(lines.len() >= 10, "{witness}");
    // Per operation: its reads of a product's stock (line, product, reserved), its writes
    // of `reserved` (line, product, value) and its commit line.
    let mut reads: BTreeMap<u64, Vec<(usize, String, i64)>> = BTreeMap::new();
    let mut writes: BTreeMap<u64, Vec<(usize, String, i64)>> = BTreeMap::new();
    let mut commits: BTreeMap<u64, usize> = BTreeMap::new();
    let mut sessions: BTreeMap<u64, String> = BTreeMap::new();
    // The product of each operation's last write sent: a `^` line (a wait that ended) shows
    // the statement cut short, so its product comes from the line that began the wait.
    let mut writing: BTreeMap<u64, String> = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(op) = line.op else { continue };
        sessions.insert(op, line.session.clone());
        if let Some(rest) = line
            .statement
            .strip_prefix("select stock, reserved from products where id = ")
        {
            let product = rest.split_whitespace().next().unwrap().to_string();
            let reserved = field(&line.outcome, "reserved=").expect("a row");
            reads.entry(op).or_default().push((i, product, reserved));
        } else if let Some(rest) = line
            .statement
            .strip_prefix("update products set reserved = ")
        {
            // `1, version = version + 1 where id = 3`: the value ends at the first comma or
            // space (the shop bumps the product's catalog version in the same statement).
            let value = rest.split([',', ' ']).next().unwrap();
            if let Some((_, product)) = rest.split_once(" where id = ") {
                writing.insert(op, product.split_whitespace().next().unwrap().to_string());
            }
            // The write that counts is the one that finished: immediately, or at its `^` line.
            if line.outcome.starts_with("1 affected") {
                let product = writing.get(&op).expect("the write's product").clone();
                writes
                    .entry(op)
                    .or_default()
                    .push((i, product, value.parse().unwrap()));
            }
        } else if line.statement == "COMMIT" && line.outcome == "ok" {
            commits.insert(op, i);
        }
    }
    let mut lost_update = None;
    for (&a, a_reads) in &reads {
        for (&b, b_reads) in reads.range(a + 1..) {
            for (a_at, product, reserved) in a_reads {
                for (b_at, b_product, b_reserved) in b_reads {
                    if product != b_product || reserved != b_reserved {
                        continue;
                    }
                    let wrote = |op: u64| {
                        writes.get(&op).is_some_and(|w| {
                            w.iter().any(|(_, p, v)| p == product && *v == reserved + 1)
                        }) && commits.contains_key(&op)
                    };
                    // Each read came before the other's COMMIT: neither saw the other's write.
                    let before_commits = a_at < &commits.get(&b).copied().unwrap_or(0)
                        && b_at < &commits.get(&a).copied().unwrap_or(0);
                    if wrote(a) && wrote(b) && before_commits {
                        lost_update = Some((a, b, product.clone(), *reserved));
                    }
                }
            }
        }
    }
    let (a, b, product, reserved) = lost_update.unwrap_or_else(|| {
        panic!("no two operations read the same stock and both wrote it:\n{witness}")
    });
    assert_ne!(sessions[&a], sessions[&b], "two sessions");
    // The second write waited for the first one's row lock and says who released it.
    assert!(
        witness.contains("for a row lock on products, woken by s"),
        "{witness}"
    );
    eprintln!("lost update: #{a} and #{b} both read reserved={reserved} of product {product}");

    // The whole listing names every database node, its sessions by the app node that opened
    // them, and the witness's operations with the node that served them.
    assert!(out.contains("\ndatabase primary (pg_rc): "), "{out}");
    assert!(
        sessions.values().all(|s| s.contains("@app-")),
        "{sessions:?}"
    );
    assert!(witness.contains(" via app-"), "{witness}");
}

/// With the recorder on (`--trace`, `--diagram`), a replay reproduces the hash it expects.
#[test]
fn recording_statements_keeps_the_hash_a_replay_expects() {
    let args = ["replay", "order-lock-race", "--seed", "5"];
    let (_, plain, err) = shopsim(&args);
    let expected = hash(&plain);
    assert!(!expected.is_empty(), "{plain}{err}");
    let diagram = temp_dir("trace-hash").join("d.mmd");
    let mut traced = args.to_vec();
    traced.extend([
        "--trace",
        "--diagram",
        diagram.to_str().unwrap(),
        "--expect-hash",
        &expected,
    ]);
    let (code, out, err) = shopsim(&traced);
    assert!(code == 0 || code == 1, "exit {code}: {err}");
    assert_eq!(hash(&out), expected);
    assert!(out.contains("\ndatabase primary ("), "{out}");
}

fn hash(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("trace hash: "))
        .unwrap_or_default()
        .to_string()
}

/// `reserved=3` in `1 row: stock=5 reserved=3`.
fn field(outcome: &str, name: &str) -> Option<i64> {
    let rest = &outcome[outcome.find(name)? + name.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// One statement line of the listing: `  12.345  s7@app-2  #18  statement => outcome`, or a
/// `^ statement => outcome; waited ...` line where a lock wait ended.
struct Line {
    session: String,
    op: Option<u64>,
    statement: String,
    outcome: String,
}

impl Line {
    fn parse(line: &str) -> Option<Line> {
        let mut words = line.split_whitespace();
        words.next()?.parse::<f64>().ok()?;
        let session = words.next()?.to_string();
        let op = words.next()?.strip_prefix('#').and_then(|n| n.parse().ok());
        let rest: Vec<&str> = words.collect();
        let rest = rest.join(" ");
        let rest = rest.strip_prefix("^ ").unwrap_or(&rest);
        let (statement, outcome) = rest.split_once(" => ")?;
        Some(Line {
            session,
            op,
            statement: statement.to_string(),
            outcome: outcome.to_string(),
        })
    }
}
