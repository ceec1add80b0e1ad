//! Running many seeds on N threads: one madsim runtime per seed, seeds handed out in order.
//! Threads only parallelise independent runs; each run is single-threaded and deterministic.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::runner::{self, Outcome, SimConfig, System};

/// Runs `seeds` on `jobs` threads and hands each outcome to `consume` (in completion order),
/// keeping none: memory stays bounded by one run per thread however many seeds run.
/// `consume` returns false to stop early.
pub fn for_each_seed<S, F>(
    make: F,
    seeds: &[u64],
    config: impl Fn(u64) -> SimConfig + Sync,
    jobs: usize,
    consume: impl FnMut(Outcome<S::State>) -> bool + Send,
) where
    S: System,
    S::State: Send,
    F: Fn() -> S + Sync,
{
    assert!(jobs >= 1);
    let next = AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let consume = Mutex::new(consume);
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(seeds.len().max(1)) {
            scope.spawn(|| {
                let system = make();
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&seed) = seeds.get(i) else {
                        return;
                    };
                    let outcome = runner::run(&system, seed, &config(seed));
                    if !(consume.lock().expect("consumer"))(outcome) {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
    });
}

/// Runs `seeds` on `jobs` threads; `on_outcome` sees every outcome (in completion order) and
/// returns false to stop early. Returns the outcomes in seed order (all of them in memory: for
/// long campaigns use [`for_each_seed`]).
pub fn run_seeds<S, F>(
    make: F,
    seeds: &[u64],
    config: impl Fn(u64) -> SimConfig + Sync,
    jobs: usize,
    mut on_outcome: impl FnMut(&Outcome<S::State>) -> bool + Send,
) -> Vec<Outcome<S::State>>
where
    S: System,
    S::State: Send,
    F: Fn() -> S + Sync,
{
    let mut outcomes = Vec::with_capacity(seeds.len());
    for_each_seed(make, seeds, config, jobs, |outcome| {
        let keep_going = on_outcome(&outcome);
        outcomes.push(outcome);
        keep_going
    });
    let position: std::collections::BTreeMap<u64, usize> =
        seeds.iter().enumerate().map(|(i, &s)| (s, i)).collect();
    outcomes.sort_by_key(|o| position[&o.seed]);
    outcomes
}
