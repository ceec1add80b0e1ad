//! `replay --diagram` writes Mermaid that Mermaid reads as meant.
//!
//! A grammar-level check, not Mermaid itself: Mermaid's parser needs a browser DOM and
//! about 180 MB of npm packages (`tools/mermaid-check` runs the real one where Node.js is
//! installed). [`check_sequence`] mirrors the rules of Mermaid's sequence grammar
//! (`packages/mermaid/src/diagrams/sequence/parser/sequenceDiagram.jison`) that the
//! diagrams rely on:
//! - the first line is `sequenceDiagram`;
//! - `participant ID as ALIAS`: an ID of letters, digits and `_` that is no keyword, an
//!   alias without the characters the ACTOR rule stops at (`<`, `>`, `-` before `>`, `:`,
//!   `,`, `;`, `#`);
//! - messages `ID ARROW ID: TXT` with the arrows `->>`, `-->>`, `-x`, `--x`, and notes
//!   `Note over ID[,ID]: TXT`;
//! - TXT, as the lexer's `":"[^#\n;]+` reads it: not empty, and no `;` and no `#` except in
//!   an entity code such as `#35;` (which Mermaid replaces before lexing); a bare `#` starts
//!   a comment, which is how every label of the old diagrams came out empty. No label starts
//!   with `#`, and none holds `%%` (a comment) or `<`/`>` (HTML);
//! - every lane a message or note names was declared as a participant before (else Mermaid
//!   adds lanes by itself, in the order it meets them), and no lane is declared twice (Mermaid
//!   would keep one lane with the last alias).

use crate::cli::{shopsim, temp_dir};

const KEYWORDS: [&str; 24] = [
    "participant",
    "actor",
    "as",
    "loop",
    "alt",
    "else",
    "opt",
    "par",
    "and",
    "rect",
    "end",
    "note",
    "over",
    "activate",
    "deactivate",
    "title",
    "autonumber",
    "critical",
    "option",
    "break",
    "box",
    "links",
    "link",
    "destroy",
];
const ARROWS: [&str; 4] = ["-->>", "->>", "--x", "-x"];

fn is_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !KEYWORDS.contains(&id.to_ascii_lowercase().as_str())
}

/// Checks TXT (see the module documentation).
fn check_text(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("empty text".to_string());
    }
    if text.starts_with('#') {
        return Err(format!("text starts with `#`: {text}"));
    }
    if text.contains("%%") || text.contains(['<', '>', '\n']) {
        return Err(format!("`%%`, `<`, `>` or a newline in text: {text}"));
    }
    // Entity codes are replaced before lexing; what remains must hold no `#` or `;`.
    let mut rest = text;
    let mut plain = String::new();
    while let Some(i) = rest.find('#') {
        plain.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let code_len = after
            .find(';')
            .ok_or_else(|| format!("a bare `#` in: {text}"))?;
        let code = &after[..code_len];
        if code.is_empty() || !code.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("a bare `#` in: {text}"));
        }
        rest = &after[code_len + 1..];
    }
    plain.push_str(rest);
    if plain.contains(';') {
        return Err(format!("a `;` ends the statement early in: {text}"));
    }
    Ok(())
}

/// Checks a diagram against the grammar rules above; returns the declared lanes.
pub(crate) fn check_sequence(diagram: &str) -> Result<Vec<(String, String)>, String> {
    let mut lines = diagram.lines();
    if lines.next() != Some("sequenceDiagram") {
        return Err("the first line is not `sequenceDiagram`".to_string());
    }
    let mut lanes: Vec<(String, String)> = Vec::new();
    let declared = |lanes: &[(String, String)], id: &str| -> Result<(), String> {
        if lanes.iter().any(|(l, _)| l == id) {
            Ok(())
        } else {
            Err(format!("lane `{id}` is not declared"))
        }
    };
    for (n, line) in lines.enumerate() {
        let at = |e: String| format!("line {}: {e}: {line}", n + 2);
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("participant ") {
            let (id, alias) = rest
                .split_once(" as ")
                .ok_or_else(|| at("no alias".into()))?;
            if !is_id(id) {
                return Err(at(format!("`{id}` is not an id")));
            }
            if alias.is_empty()
                || alias.contains(['<', '>', ':', ',', ';', '#'])
                || alias.contains("->")
            {
                return Err(at(format!("alias `{alias}`")));
            }
            if lanes.iter().any(|(l, _)| l == id) {
                return Err(at(format!("lane `{id}` declared twice")));
            }
            lanes.push((id.to_string(), alias.to_string()));
        } else if let Some(rest) = line.strip_prefix("Note over ") {
            let (ids, text) = rest.split_once(": ").ok_or_else(|| at("no text".into()))?;
            for id in ids.split(',') {
                declared(&lanes, id).map_err(at)?;
            }
            check_text(text).map_err(at)?;
        } else {
            let (head, text) = line
                .split_once(": ")
                .ok_or_else(|| at("not a statement".into()))?;
            let (from, arrow, to) = ARROWS
                .iter()
                .find_map(|a| head.split_once(a).map(|(f, t)| (f, *a, t)))
                .ok_or_else(|| at("no arrow".into()))?;
            let _ = arrow;
            for id in [from, to] {
                if !is_id(id) {
                    return Err(at(format!("`{id}` is not an id")));
                }
                declared(&lanes, id).map_err(at)?;
            }
            check_text(text).map_err(at)?;
        }
    }
    Ok(lanes)
}

#[test]
fn the_grammar_check_catches_what_mermaid_misreads() {
    let ok = "sequenceDiagram\n    participant client1 as shopper-1\n    participant app as app nodes\n    client1->>app: op 3 POST x#59; y #35;3\n";
    check_sequence(ok).unwrap();
    for bad in [
        // The old diagrams: labels that start a comment, undeclared lanes.
        "sequenceDiagram\n    participant shop as shop (app nodes)\n    shopper_2->>shop: #15 POST\n",
        "sequenceDiagram\n    participant a as a\n    participant b as b\n    a->>b: #15 POST\n",
        "sequenceDiagram\n    participant a as a\n    participant b as b\n    a->>b: x; y\n",
        "sequenceDiagram\n    participant a as a\n    participant b as b\n    a->>b: issue #3\n",
        "sequenceDiagram\n    participant a as a\n    participant b as b\n    a->>b: \n",
        "sequenceDiagram\n    participant end as a\n",
        "sequenceDiagram\n    participant a as a;b\n",
        "sequenceDiagram\n    participant a as a\n    participant a as b\n",
        "sequenceDiagram\n    participant a as a\n    a->>b: x\n    participant b as b\n",
    ] {
        assert!(check_sequence(bad).is_err(), "{bad}");
    }
}

/// Writes the diagram of a replay and checks it; returns it with its lanes' aliases.
fn diagram_of(args: &[&str]) -> (String, Vec<String>) {
    let dir = temp_dir("diagram");
    let path = dir.join(format!("{}.mmd", args.join("-").replace('/', "_")));
    let mut all = vec!["replay"];
    all.extend(args);
    all.extend(["--diagram", path.to_str().unwrap()]);
    let (code, out, err) = shopsim(&all);
    assert!(code == 0 || code == 1, "{out}{err}");
    let diagram = std::fs::read_to_string(&path).unwrap();
    let lanes = check_sequence(&diagram).unwrap_or_else(|e| panic!("{e}\n{diagram}"));
    (diagram, lanes.into_iter().map(|(_, alias)| alias).collect())
}

#[test]
fn diagrams_put_clients_app_database_cache_and_provider_in_lanes() {
    let (diagram, lanes) = diagram_of(&[
        "inventory-race",
        "--seed",
        "3",
        "--bug",
        "oversell_check_then_act",
    ]);
    assert!(lanes.iter().any(|l| l.starts_with("shopper-")), "{lanes:?}");
    // One lane per app node that served a drawn request, then the database.
    assert!(lanes.iter().any(|l| l.starts_with("app-")), "{lanes:?}");
    assert!(lanes.iter().any(|l| l == "database"), "{lanes:?}");
    let app = lanes.iter().position(|l| l.starts_with("app-")).unwrap();
    let db = lanes.iter().position(|l| l == "database").unwrap();
    assert!(lanes[..app].iter().all(|l| l.starts_with("shopper-")) && app < db);
    // Every labelled operation the witness names appears with its answer.
    assert!(
        diagram.contains("->>app_2: op 22 POST /api/v1/cart/{id}/items")
            || diagram.contains("->>app_1: op 22 POST /api/v1/cart/{id}/items"),
        "{diagram}"
    );
    // Its answer goes back to the client that sent it (which client drew op 22 depends on
    // the schedule).
    assert!(
        diagram
            .lines()
            .any(|l| l.contains("-->>client") && l.contains(": op 22 201")),
        "{diagram}"
    );
    // The statements of the witness's operations: each read of the stock with its answer,
    // from at least two sessions, and a lock wait with its end.
    let reads: Vec<&str> = diagram
        .lines()
        .filter(|l| l.contains("->>db: op ") && l.contains("select stock, reserved from products"))
        .collect();
    let sessions: std::collections::BTreeSet<&str> = reads
        .iter()
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert!(sessions.len() >= 2, "{diagram}");
    assert!(diagram.contains("-->>app_"), "{diagram}");
    assert!(diagram.contains("1 row: stock=5 reserved=0"), "{diagram}");
    assert!(
        diagram.contains("Note over db: op ")
            && diagram.contains("waits for a row lock on products"),
        "{diagram}"
    );
    assert!(diagram.contains("woken by s"), "{diagram}");
    // A blocked statement: its arrow, then its note, then its answer with the wait.
    let lines: Vec<&str> = diagram.lines().collect();
    let note_at = lines
        .iter()
        .position(|l| l.starts_with("    Note over db: op ") && l.contains("waits for a row lock"))
        .unwrap();
    let who = lines[note_at]["    Note over db: ".len()..]
        .split(" waits")
        .next()
        .unwrap();
    let sent = format!("->>db: {who} update products");
    let sent_at = lines
        .iter()
        .position(|l| l.contains(&sent))
        .expect("the blocked statement");
    let answer_at = lines
        .iter()
        .position(|l| l.contains("-->>") && l.contains(who) && l.contains("waited"))
        .expect("the blocked statement's answer");
    assert!(sent_at < note_at && note_at < answer_at, "{diagram}");

    let (_, lanes) = diagram_of(&[
        "catalog-reads",
        "--seed",
        "1",
        "--bug",
        "cache_key_without_tenant",
    ]);
    assert!(lanes.iter().any(|l| l == "cache"), "{lanes:?}");
    let (diagram, lanes) = diagram_of(&[
        "payment-race",
        "--seed",
        "1",
        "--bug",
        "payment_check_then_act",
    ]);
    assert!(lanes.iter().any(|l| l == "payment provider"), "{lanes:?}");
    assert!(diagram.contains("->>db: op "), "{diagram}");
    // A deployment with a read replica draws the reads that went to it in a lane of its own.
    let (diagram, lanes) = diagram_of(&["multi-tenant-mixed", "--seed", "1"]);
    assert!(lanes.iter().any(|l| l == "read replica"), "{lanes:?}");
    assert!(diagram.contains("->>replica: op "), "{diagram}");
    // Faults drawn by swarm mode become notes, which must be valid text too (seed 2: a fault
    // falls among the first operations shown; seed 4's came there until RPC calls began to
    // reuse their node's endpoint, which moved its run).
    let (diagram, _) = diagram_of(&[
        "checkout-concurrency",
        "--seed",
        "2",
        "--swarm",
        "--no-steering",
    ]);
    assert!(
        diagram.contains("Note over app_1,db: fault at ")
            || diagram.contains("Note over app_2,db: fault at "),
        "{diagram}"
    );
}
