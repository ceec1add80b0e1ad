//! `shopsim shrink ARTIFACT`: searches for a smaller run that still fails the same check —
//! fewer shoppers, payers, readers, orders and admins, tenants, products, units of stock,
//! items and quantities, app nodes, workers and connections, no replica, fault families off,
//! a shorter duration — greedily, one reduction at a time (halving first, then one less),
//! trying the current seed and a few others for each candidate, and writes the smallest
//! failing run as a new artifact.
//!
//! It first replays the artifact: a run that does not reproduce its trace hash exits 5, one
//! that no longer fails its check has nothing to shrink (exit 2). A run that no reduction
//! makes smaller is already minimal (exit 1, no file written). The new artifact's name comes
//! from the source artifact's and the check (`<name>-shrunk-<check>.json`, then `-2`, `-3`
//! ...): a shrink never replaces a file.

use std::path::{Path, PathBuf};

use shopsim_scenarios::Scenario;
use shopsim_sim::runner::SimConfig;

use crate::artifact::{self, Artifact};
use crate::{EXIT_BAD_INPUT, EXIT_NONDETERMINISM, EXIT_VIOLATION};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// An artifact written by `shopsim fuzz` (or by an earlier shrink).
    artifact: PathBuf,
    /// Seeds tried per candidate besides the current one (at most 1000000).
    #[arg(long, default_value = "16", value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    seeds: u64,
    /// Where the shrunk artifact goes (default: next to the original).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The sizes a shrink reports, before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Size {
    clients: u64,
    tenants: u32,
    products: u32,
    stock: i64,
    items: u32,
    duration_ms: u64,
    families: usize,
}

fn size(s: &Scenario, c: &SimConfig) -> Size {
    let shop = &s.shop;
    let clients = u64::from(shop.shoppers)
        + u64::from(shop.payers)
        + u64::from(shop.catalog_readers)
        + u64::from(shop.lockable_orders) * (u64::from(shop.mutations_per_order) + 1)
        + u64::from(shop.adversaries);
    Size {
        clients,
        tenants: shop.tenants,
        products: shop.products_per_tenant,
        stock: shop.stock_per_product,
        items: shop.items_per_cart,
        duration_ms: c.duration_ms,
        families: c.faults.families.len(),
    }
}

/// A reduction of a count: its name and how it changes the count.
type Reduce = fn(u64) -> u64;

/// Smaller variants of a run, one reduction each, biggest reductions first.
fn candidates(s: &Scenario, c: &SimConfig) -> Vec<(String, Scenario, SimConfig)> {
    let mut out = Vec::new();
    let mut push = |what: String, f: &dyn Fn(&mut Scenario, &mut SimConfig)| {
        let (mut s2, mut c2) = (s.clone(), c.clone());
        f(&mut s2, &mut c2);
        shopsim_scenarios::fields::clamp_progress(&mut s2);
        let known = out.iter().any(|(_, a, b)| (a, b) == (&s2, &c2));
        // A step is a scenario like any other: it passes the same validation as a file.
        if (&s2, &c2) != (s, c) && !known && s2.check_sim_config(&c2).is_ok() {
            out.push((what, s2, c2));
        }
    };
    let halve: Reduce = |n| n / 2;
    let one_less: Reduce = |n| n.saturating_sub(1);
    // Every size of the shop: (what, read, write). Counts that must stay at least 1 are
    // kept there by the scenario's validation, which refuses the candidate.
    type Get = fn(&Scenario) -> u64;
    type Set = fn(&mut Scenario, u64);
    let sizes: [(&str, Get, Set); 16] = [
        (
            "shoppers",
            |s| s.shop.shoppers.into(),
            |s, n| s.shop.shoppers = n as u32,
        ),
        (
            "payers",
            |s| s.shop.payers.into(),
            |s, n| s.shop.payers = n as u32,
        ),
        (
            "catalog readers",
            |s| s.shop.catalog_readers.into(),
            |s, n| s.shop.catalog_readers = n as u32,
        ),
        (
            "reads per reader",
            |s| s.shop.reads_per_reader.into(),
            |s, n| s.shop.reads_per_reader = n as u32,
        ),
        (
            "lockable orders",
            |s| s.shop.lockable_orders.into(),
            |s, n| s.shop.lockable_orders = n as u32,
        ),
        (
            "mutations per order",
            |s| s.shop.mutations_per_order.into(),
            |s, n| s.shop.mutations_per_order = n as u32,
        ),
        (
            "adversaries",
            |s| s.shop.adversaries.into(),
            |s, n| s.shop.adversaries = n as u32,
        ),
        (
            "adversary requests",
            |s| s.shop.adversary_requests.into(),
            |s, n| s.shop.adversary_requests = n as u32,
        ),
        (
            "tenants",
            |s| s.shop.tenants.into(),
            |s, n| s.shop.tenants = n as u32,
        ),
        (
            "products",
            |s| s.shop.products_per_tenant.into(),
            |s, n| s.shop.products_per_tenant = n as u32,
        ),
        (
            "stock",
            |s| s.shop.stock_per_product.max(0) as u64,
            |s, n| s.shop.stock_per_product = n as i64,
        ),
        (
            "items per cart",
            |s| s.shop.items_per_cart.into(),
            |s, n| s.shop.items_per_cart = n as u32,
        ),
        (
            "quantity",
            |s| s.shop.quantity_max.max(0) as u64,
            |s, n| s.shop.quantity_max = n as i64,
        ),
        (
            "app nodes",
            |s| s.shop.app_nodes.into(),
            |s, n| s.shop.app_nodes = n as u32,
        ),
        (
            "workers per app node",
            |s| s.shop.workers_per_app.into(),
            |s, n| s.shop.workers_per_app = n as u32,
        ),
        (
            "connections per app node",
            |s| s.shop.db_pool_per_app.into(),
            |s, n| s.shop.db_pool_per_app = n as u32,
        ),
    ];
    for (how, reduce) in [("halve", halve), ("one less:", one_less)] {
        for (what, get, set) in &sizes {
            // A count of something the run does not have changes nothing.
            let unused = (*what == "reads per reader" && s.shop.catalog_readers == 0)
                || (*what == "mutations per order" && s.shop.lockable_orders == 0)
                || (*what == "adversary requests" && s.shop.adversaries == 0);
            if unused {
                continue;
            }
            let (from, to) = (get(s), reduce(get(s)));
            if to < from {
                push(format!("{how} {what} ({from} -> {to})"), &|s, _| set(s, to));
            }
        }
    }
    if s.shop.replica {
        push("no read replica".into(), &|s, _| s.shop.replica = false);
    }
    let floor = c.faults.quiet_period_ms.saturating_add(500);
    if c.duration_ms / 2 >= floor {
        push(
            format!(
                "halve the duration ({} -> {} ms)",
                c.duration_ms,
                c.duration_ms / 2
            ),
            &|_, c| c.duration_ms /= 2,
        );
    }
    for family in c.faults.families.clone() {
        push(format!("no {} faults", family.name()), &move |_, c| {
            c.faults.families.remove(&family);
        });
    }
    out
}

/// The name of a shrunk artifact of `source` failing `check`: its stem without an earlier
/// `-shrunk-…` suffix, then `-shrunk-<check>`, then `-2`, `-3`... past existing files.
fn shrunk_path(dir: &Path, source: &Path, check: &str, attempt: u32) -> PathBuf {
    let stem = source
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "artifact".to_string());
    let base = stem.split("-shrunk-").next().unwrap_or(&stem).to_string();
    let check: String = check
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let suffix = if attempt <= 1 {
        String::new()
    } else {
        format!("-{attempt}")
    };
    dir.join(format!("{base}-shrunk-{check}{suffix}.json"))
}

/// Checks the artifact (its scenario, profile, bugs and configuration pass the scenario
/// validation) and the flags without running anything.
pub fn check_args(args: &Args) -> Result<artifact::Loaded, String> {
    let loaded = artifact::load(&args.artifact).map_err(|e| format!("ARTIFACT {e}"))?;
    loaded
        .scenario
        .system(loaded.profile, &loaded.artifact.bugs)
        .map_err(|e| format!("ARTIFACT {}: bugs: {e}", args.artifact.display()))?;
    Ok(loaded)
}

pub fn run(args: Args) -> u8 {
    let loaded = match check_args(&args) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let history_ops = loaded.history_ops;
    let (original, scenario, profile) = (loaded.artifact, loaded.scenario, loaded.profile);
    let system = scenario
        .system(profile, &original.bugs)
        .expect("checked above");
    let Some(check) = original.failure.as_ref().map(|f| f.check.clone()) else {
        eprintln!(
            "error: ARTIFACT {}: a corpus entry holds no failure; nothing to shrink",
            args.artifact.display()
        );
        return EXIT_BAD_INPUT;
    };
    let bar = crate::progress::Bar::spinner("shrink");
    // The artifact's own run first: shrinking a run that does not reproduce would shrink
    // something else.
    bar.set_message("replaying the artifact".to_string());
    let own = shopsim_sim::runner::run(&system, original.seed, &original.config);
    // An artifact edited after it was written records the hash of another run: the edited
    // run is shrunk if it fails the same check.
    let edited = original.inputs_unchanged() == Some(false);
    if edited {
        eprintln!(
            "note: {}: its inputs were edited after it was written; its trace hash is of the run as written",
            args.artifact.display()
        );
    }
    if !edited && own.trace_hash != original.trace_hash {
        bar.finish();
        eprintln!(
            "error: ARTIFACT {}: does not replay (trace hash {:016x}, recorded {:016x} by commit {}; this is {}); nothing to shrink",
            args.artifact.display(),
            own.trace_hash,
            original.trace_hash,
            original.commit,
            artifact::BUILD_COMMIT
        );
        return EXIT_NONDETERMINISM;
    }
    if own.failure.as_ref().is_none_or(|f| f.check != check) {
        bar.finish();
        eprintln!(
            "error: ARTIFACT {}: its run replays but no longer fails `{check}` ({}); nothing to shrink",
            args.artifact.display(),
            own.failure
                .as_ref()
                .map_or("every check passes".to_string(), |f| format!("it fails `{}` first", f.check))
        );
        return EXIT_BAD_INPUT;
    }
    // Fails the same check with one of these seeds: that seed's outcome.
    let fails = |s: &Scenario, c: &SimConfig, first: u64, what: &str| {
        let system = s.system(profile, &original.bugs).ok()?;
        std::iter::once(first)
            .chain((0..args.seeds).filter(|&seed| seed != first))
            .enumerate()
            .map(|(i, seed)| {
                bar.set_message(format!("{what}: seed {} of {}", i + 1, args.seeds + 1));
                shopsim_sim::runner::run(&system, seed, c)
            })
            .find(|o| o.failure.as_ref().is_some_and(|f| f.check == check))
    };
    let (mut s, mut c, mut seed) = (scenario.clone(), original.config.clone(), original.seed);
    let mut best = own;
    let before = size(&s, &c);
    let mut steps = Vec::new();
    'improve: loop {
        for (what, s2, c2) in candidates(&s, &c) {
            if let Some(o) = fails(&s2, &c2, seed, &format!("step {}: {what}", steps.len() + 1)) {
                steps.push(what);
                (s, c, seed, best) = (s2, c2, o.seed, o);
                continue 'improve;
            }
        }
        break;
    }
    bar.finish();
    let after = size(&s, &c);
    println!(
        "clients {} -> {}, tenants {} -> {}, products {} -> {}, stock {} -> {}, items {} -> {}, duration {} ms -> {} ms, fault families {} -> {}",
        before.clients, after.clients, before.tenants, after.tenants, before.products, after.products,
        before.stock, after.stock, before.items, after.items, before.duration_ms, after.duration_ms,
        before.families, after.families
    );
    println!(
        "history {} -> {} operations",
        history_ops,
        best.history.ops.len()
    );
    let failure = best.failure.clone().expect("failed");
    println!(
        "FAIL {} seed={seed} {}: {}",
        best.system, failure.check, failure.witness
    );
    if steps.is_empty() {
        println!(
            "already minimal: no reduction still fails `{check}`; nothing written\nartifact: {}",
            args.artifact.display()
        );
        return EXIT_VIOLATION;
    }
    println!("shrunk by: {}", steps.join(", "));
    let shrunk = Artifact {
        format: artifact::FORMAT.to_string(),
        scenario_toml: s.to_toml(),
        seed,
        config: c.clone(),
        commit: artifact::BUILD_COMMIT.to_string(),
        version: artifact::VERSION.to_string(),
        trace_hash: best.trace_hash,
        failure: Some(failure),
        windows: crate::fuzz::corpus::windows_reached(&system, &best.coverage),
        reports: best.reports.clone(),
        history: best.history.clone(),
        inputs_hash: None,
        ..original.clone()
    }
    .sealed();
    let dir = args.out.clone().unwrap_or_else(|| {
        args.artifact
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default()
    });
    for attempt in 1.. {
        let path = shrunk_path(&dir, &args.artifact, &check, attempt);
        match artifact::write_new(&path, &shrunk) {
            Ok(_) => {
                println!("artifact: {}", path.display());
                println!(
                    "note: reproduce with: {}",
                    crate::reproduce::replay_artifact_command(&path)
                );
                return EXIT_VIOLATION;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 10_000 => {}
            Err(e) => {
                eprintln!("error: --out {}: {e}", path.display());
                return EXIT_BAD_INPUT;
            }
        }
    }
    unreachable!("the loop returns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrunk_names_come_from_the_source_and_the_check() {
        let dir = Path::new("d");
        assert_eq!(
            shrunk_path(dir, Path::new("x/123.json"), "no_oversell", 1),
            Path::new("d/123-shrunk-no_oversell.json")
        );
        assert_eq!(
            shrunk_path(
                dir,
                Path::new("d/123-shrunk-no_oversell.json"),
                "no_oversell",
                3
            ),
            Path::new("d/123-shrunk-no_oversell-3.json")
        );
        assert_eq!(
            shrunk_path(dir, Path::new("7.json"), "a/b", 1),
            Path::new("d/7-shrunk-a_b.json")
        );
    }

    #[test]
    fn candidates_reduce_stock_and_every_count() {
        let s = shopsim_scenarios::find("inventory-race").unwrap();
        let c = s.sim_config();
        let names: Vec<String> = candidates(&s, &c).into_iter().map(|(w, _, _)| w).collect();
        for expected in [
            "halve shoppers (40 -> 20)",
            "halve stock (5 -> 2)",
            "one less: stock (5 -> 4)",
            "halve products (2 -> 1)",
            "one less: shoppers (40 -> 39)",
            "no read replica",
            "no loss faults",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
        }
        // Validation refuses a candidate that leaves a count at 0 where 1 is the least.
        let mut one = s.clone();
        one.shop.tenants = 1;
        assert!(candidates(&one, &c)
            .iter()
            .all(|(_, s2, _)| s2.shop.tenants >= 1));
    }
}
