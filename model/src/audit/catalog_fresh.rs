//! `catalog_fresh`: the catalog's freshness guarantee. Every product a catalog read returns
//! (from the database or the cache) shows a state the database committed — its version and
//! availability together — that was still current no earlier than the freshness bound before
//! the read began: the replica's largest lag plus the interval at which it looks for commits
//! (with no replica, the bound is zero: a read sees every change committed before it began).
//!
//! Judged against the committed history of `products` (each change with its commit time),
//! whatever the response said about where it came from. Reads that overlap a crash or a pause
//! of the replica (and the bound after it) are not judged: a stopped replica falls behind by
//! as long as it is stopped, which is the guarantee's stated exception.

use std::collections::BTreeMap;

use shopsim_sim::check::{describe, Checker, Report};
use shopsim_sim::history::History;

use super::ops_naming;
use crate::config::ShopConfig;
use crate::shop::{ShopState, READ_KINDS, REPLICA_POLL_MS};

/// See the module documentation.
pub struct CatalogFresh {
    /// The freshness bound, µs.
    pub bound_us: u64,
}

const NAME: &str = "catalog_fresh";

impl CatalogFresh {
    /// The check for a shop with `config`.
    pub fn new(config: &ShopConfig) -> CatalogFresh {
        let bound_ms = if config.replica {
            config.replica_lag_ms_max.max(2) + REPLICA_POLL_MS + 1
        } else {
            0
        };
        CatalogFresh {
            bound_us: bound_ms * 1000,
        }
    }
}

/// One committed state of a product: from `from_us` until the next one.
#[derive(Debug, Clone, Copy)]
struct Committed {
    from_us: u64,
    version: i64,
    available: i64,
}

/// Each product's committed states, in commit order.
fn timelines(state: &ShopState) -> BTreeMap<i64, Vec<Committed>> {
    let column = |c: &str| state.column("products", c);
    let (Some(stock), Some(reserved), Some(version)) =
        (column("stock"), column("reserved"), column("version"))
    else {
        return BTreeMap::new();
    };
    let mut lines: BTreeMap<i64, Vec<Committed>> = BTreeMap::new();
    for change in state.changes("products") {
        let Some(row) = &change.row else { continue };
        let get = |i: usize| row.get(i).and_then(|v| v.as_int()).unwrap_or(0);
        lines.entry(change.id).or_default().push(Committed {
            from_us: change.at_us,
            version: get(version),
            available: get(stock) - get(reserved),
        });
    }
    lines
}

/// The windows during which the replica was crashed or paused.
fn replica_stops(history: &History) -> Vec<(u64, u64)> {
    let mut stops = Vec::new();
    let mut start = None;
    for op in history.ops.iter().filter(|o| o.process == "nemesis") {
        if op.details["node"].as_str() != Some("replica") {
            continue;
        }
        match op.kind.as_str() {
            "crash" | "pause" => start = Some(op.invoke_us),
            "restart" | "resume" => {
                if let Some(s) = start.take() {
                    stops.push((s, op.invoke_us));
                }
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        stops.push((s, u64::MAX));
    }
    stops
}

impl Checker<ShopState> for CatalogFresh {
    fn name(&self) -> &str {
        NAME
    }

    fn check(&self, history: &History, state: &ShopState) -> Report {
        let lines = timelines(state);
        // The last position of each (product, version, available) in its line: what
        // `rposition` over the line finds, without walking a line per product read (reads and
        // states both grow with the run, so the walk made the check quadratic).
        let mut last_shown: BTreeMap<(i64, i64, i64), usize> = BTreeMap::new();
        for (&id, line) in &lines {
            for (i, c) in line.iter().enumerate() {
                last_shown.insert((id, c.version, c.available), i);
            }
        }
        let stops = replica_stops(history);
        let mut judged = 0u64;
        for op in history
            .ops
            .iter()
            .filter(|op| READ_KINDS.contains(&op.kind.as_str()) && op.status == Some(200))
        {
            let complete = op.complete_us.unwrap_or(u64::MAX);
            let excused = stops
                .iter()
                .any(|&(a, b)| a <= complete && b.saturating_add(self.bound_us) >= op.invoke_us);
            if excused {
                continue;
            }
            for product in super::products_of(op) {
                let (Some(id), Some(version), Some(available)) = (
                    product["id"].as_i64(),
                    product["version"].as_i64(),
                    product["available"].as_i64(),
                ) else {
                    continue;
                };
                judged += 1;
                let line = lines.get(&id).map_or(&[][..], Vec::as_slice);
                let shown = last_shown.get(&(id, version, available)).copied();
                assert!(shown.is_none_or(|i| line[i].version == version));
                let cache = op.details["response"]["body"]["cache"]
                    .as_str()
                    .unwrap_or("-");
                let Some(i) = shown else {
                    return Report::invalid(
                        NAME,
                        format!(
                            "{} showed product {id} at version {version} with {available} available, a state the database never committed (cache: {cache})",
                            describe(op)
                        ),
                    );
                };
                let Some(next) = line.get(i + 1) else {
                    continue;
                };
                // The shown state was replaced at `next.from_us`; it may still be shown until
                // the bound has passed.
                if next.from_us.saturating_add(self.bound_us) < op.invoke_us {
                    return Report::invalid(
                        NAME,
                        format!(
                            "{} showed product {id} at version {version} with {available} available (cache: {cache}), but version {} with {} available had replaced it at {:.1} ms, {:.1} ms before the read began (the freshness bound is {:.1} ms); the product's requests: {}",
                            describe(op),
                            next.version,
                            next.available,
                            next.from_us as f64 / 1000.0,
                            (op.invoke_us - next.from_us) as f64 / 1000.0,
                            self.bound_us as f64 / 1000.0,
                            ops_naming(history, "products", id, 3)
                        ),
                    );
                }
            }
        }
        if judged == 0 {
            return Report::unknown(NAME, "nothing to judge: no catalog read returned a product");
        }
        Report::valid(
            NAME,
            format!(
                "{judged} products in catalog reads, each no staler than {:.1} ms",
                self.bound_us as f64 / 1000.0
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::*;
    use crate::shop::RowChange;
    use shopsim_sim::check::Verdict;
    use shopsim_sim::db::Value;
    use shopsim_sim::history::Op;

    fn product_state() -> ShopState {
        let mut s = state(&[("products", "id,stock,reserved,version")]);
        let row = |stock: i64, reserved: i64, version: i64| {
            Some(vec![
                Value::Int(1),
                Value::Int(stock),
                Value::Int(reserved),
                Value::Int(version),
            ])
        };
        s.row_history.insert(
            "products".into(),
            vec![
                RowChange {
                    at_us: 0,
                    commit: 0,
                    id: 1,
                    row: row(10, 0, 0),
                },
                RowChange {
                    at_us: 1_000_000,
                    commit: 5,
                    id: 1,
                    row: row(10, 0, 1),
                },
                RowChange {
                    at_us: 1_002_000,
                    commit: 6,
                    id: 1,
                    row: row(10, 2, 1),
                },
            ],
        );
        s
    }

    fn read(at_ms: u64, version: i64, available: i64) -> Op {
        let mut read = op(
            0,
            "GET /api/v1/products/{id}",
            Some(200),
            serde_json::json!({"product": {"id": 1, "version": version, "available": available}, "cache": "hit"}),
            at_ms,
            at_ms + 1,
        );
        read.details["path"] = "/api/v1/products/1".into();
        read
    }

    /// The version was bumped in a commit of its own before the stock change: a reader cached
    /// version 1 with the old stock, and serves it long after the stock changed.
    #[test]
    fn canary_stale_entry_after_an_early_invalidation() {
        let check = CatalogFresh { bound_us: 100_000 };
        let r = check.check(&history(vec![read(1_500, 1, 10)]), &product_state());
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(r.witness.contains("showed product 1 at version 1 with 10 available (cache: hit), but version 1 with 8 available had replaced it at 1002.0 ms, 498.0 ms before the read began (the freshness bound is 100.0 ms)"), "{}", r.witness);
        // Within the bound, or the current state: fresh.
        assert_eq!(
            check
                .check(&history(vec![read(1_050, 1, 10)]), &product_state())
                .verdict,
            Verdict::Valid
        );
        assert_eq!(
            check
                .check(&history(vec![read(1_500, 1, 8)]), &product_state())
                .verdict,
            Verdict::Valid
        );
        // A state never committed.
        let r = check.check(&history(vec![read(1_500, 0, 8)]), &product_state());
        assert!(
            r.witness.contains("a state the database never committed"),
            "{}",
            r.witness
        );
        assert_eq!(
            check.check(&history(vec![]), &product_state()).verdict,
            Verdict::Unknown
        );
    }

    #[test]
    fn a_stopped_replica_excuses_the_reads_it_overlaps() {
        let check = CatalogFresh { bound_us: 100_000 };
        let mut pause = op(1, "pause", None, serde_json::json!({}), 1_200, 1_200);
        pause.process = "nemesis".into();
        pause.details = serde_json::json!({"node": "replica"});
        let mut resume = op(2, "resume", None, serde_json::json!({}), 1_450, 1_450);
        resume.process = "nemesis".into();
        resume.details = serde_json::json!({"node": "replica"});
        let h = history(vec![pause, resume, read(1_500, 1, 10)]);
        assert_eq!(check.check(&h, &product_state()).verdict, Verdict::Unknown);
    }
}
