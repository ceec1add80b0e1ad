//! `shopsim shrink ARTIFACT`: searches for a smaller run that still fails the same check —
//! fewer clients, products, items, fault families, a shorter duration — greedily, one
//! reduction at a time, trying the artifact's seed and a few others for each candidate, and
//! writes the smallest failing run as a new artifact.

use std::path::PathBuf;

use shopsim_scenarios::Scenario;
use shopsim_sim::runner::SimConfig;

use crate::artifact::{self, Artifact};
use crate::{EXIT_BAD_INPUT, EXIT_OK, EXIT_VIOLATION};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// An artifact written by `shopsim fuzz`.
    artifact: PathBuf,
    /// Seeds tried per candidate besides the artifact's own (at most 1000000).
    #[arg(long, default_value = "16", value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    seeds: u64,
    /// Where the shrunk artifact goes (default: next to the original).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A measure of a run's size: clients, then duration, then fault families.
fn size(s: &Scenario, c: &SimConfig) -> (u32, u32, u64, usize) {
    let shop = &s.shop;
    let clients =
        shop.shoppers + shop.payers + shop.lockable_orders * (shop.mutations_per_order + 1);
    (
        clients,
        shop.products_per_tenant * shop.items_per_cart,
        c.duration_ms,
        c.faults.families.len(),
    )
}

/// Smaller variants of a run, one reduction each.
fn candidates(s: &Scenario, c: &SimConfig) -> Vec<(String, Scenario, SimConfig)> {
    let mut out = Vec::new();
    let mut push = |what: String, f: &dyn Fn(&mut Scenario, &mut SimConfig)| {
        let (mut s2, mut c2) = (s.clone(), c.clone());
        f(&mut s2, &mut c2);
        // A step is a scenario like any other: it passes the same validation as a file.
        if (s2.clone(), c2.clone()) != (s.clone(), c.clone()) && s2.check_sim_config(&c2).is_ok() {
            out.push((what, s2, c2));
        }
    };
    push("halve shoppers".into(), &|s, _| s.shop.shoppers /= 2);
    push("halve payers".into(), &|s, _| s.shop.payers /= 2);
    push("halve lockable orders".into(), &|s, _| {
        s.shop.lockable_orders /= 2
    });
    if s.shop.lockable_orders > 0 {
        push("one mutation fewer per order".into(), &|s, _| {
            s.shop.mutations_per_order = s.shop.mutations_per_order.saturating_sub(1)
        });
    }
    push("halve products".into(), &|s, _| {
        s.shop.products_per_tenant = (s.shop.products_per_tenant / 2).max(1)
    });
    push("one item fewer per cart".into(), &|s, _| {
        s.shop.items_per_cart = (s.shop.items_per_cart - 1).max(1)
    });
    push("halve the duration".into(), &|_, c| {
        c.duration_ms = (c.duration_ms / 2).max(c.faults.quiet_period_ms.saturating_add(500))
    });
    for family in c.faults.families.clone() {
        push(format!("no {} faults", family.name()), &move |_, c| {
            c.faults.families.remove(&family);
        });
    }
    out
}

/// Checks the artifact and flags without running anything.
pub fn check_args(args: &Args) -> Result<(), String> {
    artifact::load(&args.artifact)
        .map(|_| ())
        .map_err(|e| format!("ARTIFACT {e}"))
}

pub fn run(args: Args) -> u8 {
    let loaded = match artifact::load(&args.artifact) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: ARTIFACT {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let history_ops = loaded.history_ops;
    let (original, scenario, profile) = (loaded.artifact, loaded.scenario, loaded.profile);
    let check = original.failure.check.clone();
    // Fails the same check with one of these seeds: that seed's outcome.
    let fails = |s: &Scenario, c: &SimConfig, first: u64| {
        let system = s.system(profile, &original.bugs).ok()?;
        std::iter::once(first)
            .chain(0..args.seeds)
            .map(|seed| shopsim_sim::runner::run(&system, seed, c))
            .find(|o| o.failure.as_ref().is_some_and(|f| f.check == check))
    };
    let (mut s, mut c, mut seed) = (scenario.clone(), original.config.clone(), original.seed);
    let Some(mut best) = fails(&s, &c, seed) else {
        eprintln!("error: ARTIFACT does not fail `{check}` any more; nothing to shrink");
        return EXIT_OK;
    };
    let before = size(&s, &c);
    let mut steps = Vec::new();
    'improve: loop {
        for (what, s2, c2) in candidates(&s, &c) {
            if let Some(o) = fails(&s2, &c2, seed) {
                steps.push(what);
                (s, c, seed, best) = (s2, c2, o.seed, o);
                continue 'improve;
            }
        }
        break;
    }
    let after = size(&s, &c);
    let failure = best.failure.clone().expect("failed");
    let shrunk = Artifact {
        scenario_toml: s.to_toml(),
        seed,
        config: c.clone(),
        trace_hash: best.trace_hash,
        failure: failure.clone(),
        reports: best.reports.clone(),
        history: best.history.clone(),
        ..original.clone()
    };
    let dir = args.out.clone().unwrap_or_else(|| {
        args.artifact
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default()
    });
    let path = dir.join(format!("{seed}-shrunk.json"));
    if let Err(e) = artifact::write_atomic(&path, &shrunk) {
        eprintln!("error: --out {}: {e}", dir.display());
        return EXIT_BAD_INPUT;
    }
    println!(
        "shrunk by: {}",
        if steps.is_empty() {
            "nothing (already minimal)".to_string()
        } else {
            steps.join(", ")
        }
    );
    println!(
        "clients {} -> {}, product-items {} -> {}, duration {} ms -> {} ms, fault families {} -> {}",
        before.0, after.0, before.1, after.1, before.2, after.2, before.3, after.3
    );
    println!(
        "history {} -> {} operations",
        history_ops,
        best.history.ops.len()
    );
    println!(
        "FAIL {} seed={seed} {}: {}",
        original.scenario, failure.check, failure.witness
    );
    println!("artifact: {}", path.display());
    EXIT_VIOLATION
}
