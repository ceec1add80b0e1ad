//! `replay --diagram`: a Mermaid sequence diagram of a run's witness.
//!
//! Lanes (participants): one per client process the diagram shows, then one per app node that
//! served a drawn request (the `application_name` of the request's statements in the database
//! transcript; one `app nodes` lane for requests that ran no statement), the cache, the database (and its read replica), the payment provider and the
//! queue worker, each where the run used it. Each operation the witness names (`#12`) is
//! drawn as its request, what the app did for it (a cache lookup, a provider call, and every
//! database statement it issued, from the database's transcript: the statement with its
//! parameters, its session, a note where it waited for a row lock, and its answer with the
//! wait's length and who ended it), and its answer; the faults of the run are notes. All in
//! virtual-time order, so two requests' statements interleave as the server ran them.
//!
//! Mermaid's sequence grammar (`sequenceDiagram.jison`) reads a message's text up to the
//! first `#`, `;` or newline (a `#` starts a comment there), so every text here goes through
//! [`text`]: those characters, and `%`, `<`, `>`, become entity codes (`#35;`), which
//! Mermaid decodes before drawing, and no label starts with `#`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use shopsim_sim::db::server::transcript::StatementEnd;
use shopsim_sim::history::Op;
use shopsim_sim::runner::Outcome;

use crate::statements::DbNode;

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
    /// App node names in order of first use; `None` for requests whose node is unknown.
    apps: Vec<Option<String>>,
    cache: bool,
    replica: bool,
    provider: bool,
    worker: bool,
}

impl Lanes {
    /// The lanes of `ops`, whose app nodes are `apps` (by operation index): clients in order
    /// of first appearance, app nodes by name (an unknown node last), and at least one app
    /// lane, which fault notes span.
    fn of(ops: &[&Op], apps: &BTreeMap<u64, &str>) -> Lanes {
        let mut lanes = Lanes::default();
        for op in ops {
            if op.process == "nemesis" || op.process == "worker" {
                continue;
            }
            if !lanes.clients.contains(&op.process) {
                lanes.clients.push(op.process.clone());
            }
            let app = apps.get(&(op.index as u64)).map(|a| a.to_string());
            if !lanes.apps.contains(&app) {
                lanes.apps.push(app);
            }
        }
        // `app-2` before `app-10`; `None` (unknown) sorts last.
        lanes
            .apps
            .sort_by_key(|a| (a.is_none(), a.as_ref().map(|a| (a.len(), a.clone()))));
        if lanes.apps.is_empty() {
            lanes.apps.push(None);
        }
        lanes
    }

    fn client(&self, process: &str) -> String {
        let i = self
            .clients
            .iter()
            .position(|p| p == process)
            .expect("every drawn client has a lane");
        format!("client{}", i + 1)
    }

    /// The lanes a fault note spans: the first app lane to the database.
    fn fault_span(&self) -> String {
        format!("{},db", app_lane(self.apps[0].as_deref()))
    }
}

/// The lane of the app node `name` (`app-2` is `app_2`; `app`, "app nodes", for an unknown
/// node).
fn app_lane(name: Option<&str>) -> String {
    match name {
        Some(name) => {
            let id = label(name).replace(['-', '.'], "_");
            if id.starts_with("app") {
                id
            } else {
                format!("app_{id}")
            }
        }
        None => "app".to_string(),
    }
}

/// The most statements one diagram draws; the rest are counted in a note.
const STATEMENTS_MAX: usize = 300;

/// One line of the diagram with where it goes: (virtual time µs, class, order, line).
type Event = (u64, u8, u64, String);

// The classes order the lines of one instant: an answer first (a client sends its next
// request the instant the previous answer arrives), then faults and requests, then what
// the app did before the database, then statements in server order.
const CLASS_ANSWER: u8 = 0;
const CLASS_REQUEST: u8 = 1;
const CLASS_INSIDE: u8 = 2;
const CLASS_STATEMENT: u8 = 3;

/// The diagram of `outcome` (the witness of its failure, or its first operations), with the
/// statements the database nodes in `db` ran for those operations.
pub fn diagram<S>(outcome: &Outcome<S>, db: &[DbNode<'_>]) -> String {
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
    // The statements of each drawn operation: (node, statement) by the tag the app sent.
    let drawn: BTreeSet<u64> = ops.iter().map(|op| op.index as u64).collect();
    let mut statements: BTreeMap<u64, Vec<(usize, usize)>> = BTreeMap::new();
    for (n, node) in db.iter().enumerate() {
        for (i, s) in node.statements.iter().enumerate() {
            if let Some(tag) = s.tag.filter(|t| drawn.contains(t)) {
                statements.entry(tag).or_default().push((n, i));
            }
        }
    }
    let apps = crate::statements::apps_by_op(db);
    let mut lanes = Lanes::of(&ops, &apps);
    let fault_span = lanes.fault_span();
    let mut events: Vec<Event> = Vec::new();
    let mut statements_left = STATEMENTS_MAX;
    let mut statements_skipped = 0;
    for op in ops {
        let at = |us: u64| format!("{:.1} ms", us as f64 / 1000.0);
        if op.process == "nemesis" {
            let line = format!(
                "    Note over {fault_span}: {}\n",
                text(&format!(
                    "fault at {}: {} {}",
                    at(op.invoke_us),
                    op.kind,
                    body(&op.details)
                ))
            );
            events.push((op.invoke_us, CLASS_REQUEST, op.index as u64, line));
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
            events.push((op.invoke_us, CLASS_REQUEST, op.index as u64, line));
            continue;
        }
        let who = lanes.client(&op.process);
        let app = app_lane(apps.get(&(op.index as u64)).copied());
        let request = &op.details["body"];
        events.push((
            op.invoke_us,
            CLASS_REQUEST,
            op.index as u64,
            format!(
                "    {who}->>{app}: {}\n",
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
        let mut step = 0;
        let mut inside = |line: String| {
            events.push((
                op.invoke_us,
                CLASS_INSIDE,
                (op.index as u64) << 8 | step,
                line,
            ));
            step += 1;
        };
        if let Some(cache) = response["body"]["cache"].as_str() {
            lanes.cache = true;
            inside(format!(
                "    {app}->>cache: {}\n",
                text(&format!("op {} catalog lookup", op.index))
            ));
            inside(format!(
                "    cache-->>{app}: {}\n",
                text(&format!("op {} {cache}", op.index))
            ));
        }
        let mine = statements
            .get(&(op.index as u64))
            .map_or(&[][..], Vec::as_slice);
        if mine.is_empty() {
            // No transcript of this operation's statements: what its response says of them.
            if let Some(queries) = response["queries"].as_u64().filter(|q| *q > 0) {
                let tenants = body(&response["row_tenants"]);
                let mut what = format!(
                    "op {} {queries} SQL statements, rows of tenants {tenants}",
                    op.index
                );
                if let Some(foreign) = response["foreign_statement"][1].as_str() {
                    let _ = write!(what, ", touching another tenant: {foreign}");
                }
                inside(format!("    {app}->>db: {}\n", text(&what)));
            }
        }
        if op.kind.contains("/payments") {
            lanes.provider = true;
            inside(format!(
                "    {app}->>provider: {}\n",
                text(&format!("op {} payment call", op.index))
            ));
        }
        for &(n, i) in mine {
            if statements_left == 0 {
                statements_skipped += 1;
                continue;
            }
            statements_left -= 1;
            let node = &db[n];
            let lane = if node.transcript.read_only {
                lanes.replica = true;
                "replica"
            } else {
                "db"
            };
            let from = Issuer {
                op: op.index,
                app: &app,
                tenant: op.details["tenant"].as_i64(),
            };
            events.extend(statement_lines(node, n, i, &from, lane));
        }
        let answer = match (op.status, op.complete_us) {
            (Some(status), Some(t)) => format!(
                "    {app}-->>{who}: {}\n",
                text(&format!(
                    "op {} {status} {} at {}",
                    op.index,
                    body(&response["body"]),
                    at(t)
                ))
            ),
            (None, Some(t)) => format!(
                "    {app}--x{who}: {}\n",
                text(&format!("op {} no answer at {}", op.index, at(t)))
            ),
            _ => format!(
                "    {app}--x{who}: {}\n",
                text(&format!("op {} never completed", op.index))
            ),
        };
        events.push((done, CLASS_ANSWER, op.index as u64, answer));
    }
    events.sort_by_key(|(t, class, order, _)| (*t, *class, *order));
    let mut out = String::from("sequenceDiagram\n");
    for (i, process) in lanes.clients.iter().enumerate() {
        let _ = writeln!(out, "    participant client{} as {}", i + 1, label(process));
    }
    for app in &lanes.apps {
        let alias = app.as_deref().map_or("app nodes".to_string(), label);
        let _ = writeln!(
            out,
            "    participant {} as {alias}",
            app_lane(app.as_deref())
        );
    }
    if lanes.cache {
        out.push_str("    participant cache as cache\n");
    }
    out.push_str("    participant db as database\n");
    if lanes.replica {
        out.push_str("    participant replica as read replica\n");
    }
    if lanes.provider {
        out.push_str("    participant provider as payment provider\n");
    }
    if lanes.worker {
        out.push_str("    participant worker as queue worker\n");
    }
    if let Some(f) = &outcome.failure {
        let _ = writeln!(
            out,
            "    Note over {fault_span}: {}",
            text(&format!(
                "{} seed {}: {} failed",
                outcome.system, outcome.seed, f.check
            ))
        );
    }
    for (_, _, _, line) in events {
        out.push_str(&line);
    }
    if statements_skipped > 0 {
        let _ = writeln!(
            out,
            "    Note over {fault_span}: {}",
            text(&format!(
                "{statements_skipped} more statements of these operations are not drawn (replay --trace lists them)"
            ))
        );
    }
    out
}

/// Who issued a statement: the operation, its app lane and its tenant.
struct Issuer<'a> {
    op: usize,
    app: &'a str,
    tenant: Option<i64>,
}

/// The lines of statement `i` of node `n`, issued by `from`, to `lane`: the statement, a note
/// where it blocked, and its answer (naming rows of another tenant than the operation's).
fn statement_lines(
    node: &DbNode<'_>,
    n: usize,
    i: usize,
    from: &Issuer<'_>,
    lane: &str,
) -> Vec<Event> {
    let (op, app, tenant) = (from.op, from.app, from.tenant);
    let mut events = Vec::new();
    let s = &node.statements[i];
    // Server order within a node: its transcript's event indexes (three lines per event).
    let order = |event: usize, k: u64| (n as u64) << 48 | (event as u64) << 2 | k;
    let who = format!("op {op} {}", node.session(s));
    let executed = node.run_us(s.executed_us);
    events.push((
        executed,
        CLASS_STATEMENT,
        order(s.event, 0),
        format!(
            "    {app}->>{lane}: {}\n",
            text(&format!(
                "{who} {}",
                crate::signature::truncate_chars(&node.sql(s), SQL_CHARS_MAX)
            ))
        ),
    ));
    if let Some(wait) = &s.blocked {
        let table = wait
            .table
            .as_ref()
            .map_or(String::new(), |t| format!(" on {t}"));
        events.push((
            node.run_us(wait.at_us),
            CLASS_STATEMENT,
            order(s.event, 1),
            format!(
                "    Note over {lane}: {}\n",
                text(&format!("{who} waits for a row lock{table}"))
            ),
        ));
    }
    let mut answer = node.outcome(s);
    if let StatementEnd::Finished { result: Ok(r), .. } = &s.end {
        let foreign: Vec<String> = r
            .row_owners
            .iter()
            .filter(|o| tenant.is_some() && o.as_int() != tenant)
            .map(|o| o.to_string())
            .collect();
        if !foreign.is_empty() {
            let _ = write!(answer, ", rows of tenant {}", foreign.join(", "));
        }
    }
    if let Some(wait) = node.wait(s) {
        let _ = write!(answer, ", {wait}");
    }
    let failed = !matches!(&s.end, StatementEnd::Finished { result: Ok(_), .. });
    let arrow = if failed { "--x" } else { "-->>" };
    let (at, event) = match (s.end.at_us(), s.end.event()) {
        (Some(at), Some(event)) => (node.run_us(at), event),
        _ => (executed, s.event),
    };
    events.push((
        at,
        CLASS_STATEMENT,
        order(event, 2),
        format!(
            "    {lane}{arrow}{app}: {}\n",
            text(&format!(
                "{who} {}",
                crate::signature::truncate_chars(&answer, ANSWER_CHARS_MAX)
            ))
        ),
    ));
    events
}

/// The longest statement drawn on an arrow, in characters.
const SQL_CHARS_MAX: usize = 120;
/// The longest statement answer drawn on an arrow, in characters.
const ANSWER_CHARS_MAX: usize = 160;

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
