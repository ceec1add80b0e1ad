//! `replay --diagram`: a Mermaid sequence diagram of a run's witness.
//!
//! Lanes (participants): one per client process the diagram shows, then the app nodes, the
//! cache, the database, the payment provider and the queue worker, each where the run used
//! it. Each operation the witness names (`#12`) is drawn as its request, what the app did
//! for it (its SQL statements and the tenants of the rows they touched, a cache lookup, a
//! provider call), and its answer; the faults of the run are notes. The statements
//! themselves come later, from the database's transcript.
//!
//! Mermaid's sequence grammar (`sequenceDiagram.jison`) reads a message's text up to the
//! first `#`, `;` or newline (a `#` starts a comment there), so every text here goes through
//! [`text`]: those characters, and `%`, `<`, `>`, become entity codes (`#35;`), which
//! Mermaid decodes before drawing, and no label starts with `#`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use shopsim_sim::history::Op;
use shopsim_sim::runner::Outcome;

/// The most operations drawn when the witness names none.
const OPS_UNNAMED_MAX: usize = 30;
/// The longest body shown on an arrow, in characters.
const BODY_CHARS_MAX: usize = 80;

/// `raw` as the text of a Mermaid message or note (see the module documentation).
pub fn text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_alphanumeric() || " .,:/_-(){}[]=+*@'\"!?&|^~$`".contains(c) => out.push(c),
            c => {
                let _ = write!(out, "#{};", c as u32);
            }
        }
    }
    let trimmed = out.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        format!("- {trimmed}")
    } else {
        trimmed.to_string()
    }
}

/// A participant's label: letters, digits and `_.-` (others become `_`).
fn label(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The operations a witness names: `#12` → 12.
pub fn named_ops(witness: &str) -> BTreeSet<usize> {
    let mut named = BTreeSet::new();
    let chars: Vec<char> = witness.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c != '#' {
            continue;
        }
        let digits: String = chars[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        if let Ok(n) = digits.parse::<usize>() {
            named.insert(n);
        }
    }
    named
}

/// A compact one-line body: JSON without quotes and braces, cut short.
fn body(value: &serde_json::Value) -> String {
    if value.is_null() {
        return String::new();
    }
    let compact = value.to_string().replace(['{', '}', '"'], "");
    crate::signature::truncate_chars(&compact, BODY_CHARS_MAX)
}

/// The lanes a diagram uses, in order.
#[derive(Default)]
struct Lanes {
    clients: Vec<String>,
    cache: bool,
    provider: bool,
    worker: bool,
}

impl Lanes {
    fn client(&mut self, process: &str) -> String {
        let i = match self.clients.iter().position(|p| p == process) {
            Some(i) => i,
            None => {
                self.clients.push(process.to_string());
                self.clients.len() - 1
            }
        };
        format!("client{}", i + 1)
    }
}

/// The diagram of `outcome` (the witness of its failure, or its first operations).
pub fn diagram<S>(outcome: &Outcome<S>) -> String {
    let witness = outcome
        .failure
        .as_ref()
        .map(|f| f.witness.clone())
        .unwrap_or_default();
    let named = named_ops(&witness);
    let ops: Vec<&Op> = outcome
        .history
        .ops
        .iter()
        .filter(|op| {
            if named.is_empty() {
                op.index < OPS_UNNAMED_MAX
            } else {
                named.contains(&op.index) || (op.process == "nemesis" && op.kind != "buggify")
            }
        })
        .collect();
    let mut lanes = Lanes::default();
    // (time µs, order within the operation, line)
    let mut events: Vec<(u64, usize, String)> = Vec::new();
    for op in ops {
        let at = |us: u64| format!("{:.1} ms", us as f64 / 1000.0);
        if op.process == "nemesis" {
            let line = format!(
                "    Note over app,db: {}\n",
                text(&format!(
                    "fault at {}: {} {}",
                    at(op.invoke_us),
                    op.kind,
                    body(&op.details)
                ))
            );
            events.push((op.invoke_us, 0, line));
            continue;
        }
        if op.process == "worker" {
            lanes.worker = true;
            let line = format!(
                "    worker->>db: {}\n",
                text(&format!(
                    "op {} {} {} at {}",
                    op.index,
                    op.kind,
                    body(&op.details),
                    at(op.invoke_us)
                ))
            );
            events.push((op.invoke_us, 0, line));
            continue;
        }
        let who = lanes.client(&op.process);
        let request = &op.details["body"];
        events.push((
            op.invoke_us,
            0,
            format!(
                "    {who}->>app: {}\n",
                text(&format!(
                    "op {} {} {} at {}",
                    op.index,
                    op.kind,
                    body(request),
                    at(op.invoke_us)
                ))
            ),
        ));
        let response = &op.details["response"];
        let done = op.complete_us.unwrap_or(u64::MAX);
        let mut step = 1;
        let mut inside = |line: String| {
            events.push((op.invoke_us, step, line));
            step += 1;
        };
        if let Some(cache) = response["body"]["cache"].as_str() {
            lanes.cache = true;
            inside(format!(
                "    app->>cache: {}\n",
                text(&format!("op {} catalog lookup", op.index))
            ));
            inside(format!(
                "    cache-->>app: {}\n",
                text(&format!("op {} {cache}", op.index))
            ));
        }
        if let Some(queries) = response["queries"].as_u64().filter(|q| *q > 0) {
            let tenants = body(&response["row_tenants"]);
            let mut what = format!(
                "op {} {queries} SQL statements, rows of tenants {tenants}",
                op.index
            );
            if let Some(foreign) = response["foreign_statement"][1].as_str() {
                let _ = write!(what, ", touching another tenant: {foreign}");
            }
            inside(format!("    app->>db: {}\n", text(&what)));
        }
        if op.kind.contains("/payments") {
            lanes.provider = true;
            inside(format!(
                "    app->>provider: {}\n",
                text(&format!("op {} payment call", op.index))
            ));
        }
        let answer = match (op.status, op.complete_us) {
            (Some(status), Some(t)) => format!(
                "    app-->>{who}: {}\n",
                text(&format!(
                    "op {} {status} {} at {}",
                    op.index,
                    body(&response["body"]),
                    at(t)
                ))
            ),
            (None, Some(t)) => format!(
                "    app--x{who}: {}\n",
                text(&format!("op {} no answer at {}", op.index, at(t)))
            ),
            _ => format!(
                "    app--x{who}: {}\n",
                text(&format!("op {} never completed", op.index))
            ),
        };
        events.push((done, 0, answer));
    }
    events.sort_by_key(|(t, step, _)| (*t, *step));
    let mut out = String::from("sequenceDiagram\n");
    for (i, process) in lanes.clients.iter().enumerate() {
        let _ = writeln!(out, "    participant client{} as {}", i + 1, label(process));
    }
    out.push_str("    participant app as app nodes\n");
    if lanes.cache {
        out.push_str("    participant cache as cache\n");
    }
    // Fault notes span the app and the database lanes: both are always drawn.
    out.push_str("    participant db as database\n");
    if lanes.provider {
        out.push_str("    participant provider as payment provider\n");
    }
    if lanes.worker {
        out.push_str("    participant worker as queue worker\n");
    }
    if let Some(f) = &outcome.failure {
        let _ = writeln!(
            out,
            "    Note over app,db: {}",
            text(&format!(
                "{} seed {}: {} failed",
                outcome.system, outcome.seed, f.check
            ))
        );
    }
    for (_, _, line) in events {
        out.push_str(&line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_never_start_with_a_comment_and_escape_the_grammar() {
        assert_eq!(text("#12 a;b"), "- #35;12 a#59;b");
        assert_eq!(text("op 1 50% <x>\nnext"), "op 1 50#37; #60;x#62; next");
        assert_eq!(text(""), "- ");
        assert_eq!(label("shopper 2;x"), "shopper_2_x");
        assert_eq!(
            named_ops("by #15 shopper-21, #3 and #15"),
            [3, 15].into_iter().collect()
        );
    }
}
