//! Running many seeds on N threads: one madsim runtime per seed, seeds handed out in order.
//! Threads only parallelise independent runs; each run is single-threaded and deterministic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::runner::{self, Outcome, SimConfig, System};
use crate::seed::SeedSource;

/// Runs `seeds` on `jobs` threads and hands each outcome to `consume` (in completion order),
/// keeping none: memory stays bounded by one run per thread however many seeds run.
/// `consume` returns false to stop early. Seeds are taken from `seeds` one at a time, so a
/// plan of 2^64 - 1 seeds starts at once and costs no memory.
pub fn for_each_seed<S, F>(
    make: F,
    seeds: &(impl SeedSource + ?Sized),
    config: impl Fn(u64) -> SimConfig + Sync,
    jobs: usize,
    mut consume: impl FnMut(Outcome<S::State>) -> bool + Send,
) where
    S: System,
    S::State: Send,
    F: Fn() -> S + Sync,
{
    for_each_indexed(make, seeds, config, jobs, |_, outcome| consume(outcome));
}

/// [`for_each_seed`], also handing `consume` the index of the seed in `seeds`.
fn for_each_indexed<S, F>(
    make: F,
    seeds: &(impl SeedSource + ?Sized),
    config: impl Fn(u64) -> SimConfig + Sync,
    jobs: usize,
    consume: impl FnMut(u64, Outcome<S::State>) -> bool + Send,
) where
    S: System,
    S::State: Send,
    F: Fn() -> S + Sync,
{
    assert!(jobs >= 1);
    let count = seeds.seed_count();
    let next = AtomicU64::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let consume = Mutex::new(consume);
    let threads = (jobs as u64).min(count.max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let system = make();
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    // Never past the end, so the counter cannot wrap around after 2^64 - 1.
                    let taken = next.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |i| {
                        (i < count).then_some(i + 1)
                    });
                    let Ok(i) = taken else {
                        return;
                    };
                    let seed = seeds.seed_at(i);
                    let outcome = runner::run(&system, seed, &config(seed));
                    if !(consume.lock().expect("consumer"))(i, outcome) {
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
    seeds: &(impl SeedSource + ?Sized),
    config: impl Fn(u64) -> SimConfig + Sync,
    jobs: usize,
    mut on_outcome: impl FnMut(&Outcome<S::State>) -> bool + Send,
) -> Vec<Outcome<S::State>>
where
    S: System,
    S::State: Send,
    F: Fn() -> S + Sync,
{
    let mut outcomes = Vec::new();
    for_each_indexed(make, seeds, config, jobs, |i, outcome| {
        let keep_going = on_outcome(&outcome);
        outcomes.push((i, outcome));
        keep_going
    });
    outcomes.sort_by_key(|(i, _)| *i);
    outcomes.into_iter().map(|(_, o)| o).collect()
}
