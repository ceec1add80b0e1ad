//! Swarm testing: each seed also draws which fault families are on and at what rates, so a
//! campaign explores runs with few, many, rare and frequent faults instead of one fixed mix.
//! FoundationDB enables BUGGIFY in about 80% of runs; TigerBeetle's VOPR draws every fault
//! rate per seed. A draw depends only on the seed, so a swarm failure replays like any other.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::fault::{FaultFamily, FaultPlan};

/// The fault plan swarm mode uses for `seed`, limited to the families in `allowed`.
pub fn draw(seed: u64, allowed: &FaultPlan) -> FaultPlan {
    // A stream separate from the runtime's, so the draw does not shift the run's randomness.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5757_4152_4d00_0000);
    let mut plan = allowed.clone();
    plan.families = allowed
        .families
        .iter()
        .copied()
        .filter(|f| {
            let p = if *f == FaultFamily::Buggify { 0.8 } else { 0.5 };
            rng.gen_bool(p)
        })
        .collect();
    plan.interval_ms_min = rng.gen_range(50..=allowed.interval_ms_min.max(50));
    plan.interval_ms_max =
        rng.gen_range(plan.interval_ms_min..=allowed.interval_ms_max.max(plan.interval_ms_min));
    plan.duration_ms_max = rng.gen_range(1..=allowed.duration_ms_max.max(1));
    plan.loss_probability = rng.gen_range(0.0..=allowed.loss_probability);
    plan.buggify_probability = rng.gen_range(0.0..=allowed.buggify_probability);
    assert!(plan.validate().is_ok(), "{:?}", plan.validate());
    assert!(plan.families.is_subset(&allowed.families));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_vary_per_seed_and_repeat_per_seed() {
        let all = FaultPlan::all();
        assert_eq!(draw(7, &all), draw(7, &all));
        let distinct: std::collections::BTreeSet<_> = (0..64)
            .map(|s| format!("{:?}", draw(s, &all).families))
            .collect();
        assert!(distinct.len() > 10, "{distinct:?}");
        assert!(draw(3, &FaultPlan::none()).families.is_empty());
    }
}
