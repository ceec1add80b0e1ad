//! Swarm testing: each seed also draws which fault families are on and at what rates, and
//! whether and how its schedule is steered, so a campaign explores runs with few, many, rare
//! and frequent faults and delays instead of one fixed mix. FoundationDB enables BUGGIFY in
//! about 80% of runs; TigerBeetle's VOPR draws every fault rate per seed. A draw depends only
//! on the seed, each from a stream of its own, so a swarm failure replays like any other, and
//! the drawn configuration is plain data: serialized (JSON or TOML) and read back it is the
//! same bit for bit, so a seed plus its draws is a complete reproduction.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::fault::{FaultFamily, FaultPlan};
use crate::runner::SimConfig;
use crate::steering::{ChangePoint, SteeringPlan};

/// The share of swarm seeds that steer their schedule.
pub const STEERING_ON_PROBABILITY: f64 = 0.75;

/// The configuration swarm mode runs `seed` with: `base` with a fault plan drawn from every
/// family (keeping `base`'s quiet period) and a drawn steering plan, on in
/// [`STEERING_ON_PROBABILITY`] of seeds (all of them with `steering_always`).
pub fn config(seed: u64, base: &SimConfig, steering_always: bool) -> SimConfig {
    // A scenario without faults may have a quiet period as long as its run; swarm faults
    // need room after it, or the drawn configuration would be invalid.
    let quiet = base.faults.quiet_period_ms;
    let allowed = FaultPlan {
        quiet_period_ms: if quiet < base.duration_ms {
            quiet
        } else {
            base.duration_ms / 2
        },
        ..FaultPlan::all()
    };
    let mut steering = draw_steering(seed);
    if !steering_always {
        let mut coin = ChaCha8Rng::seed_from_u64(seed ^ 0x5354_4545_524f_4e00);
        steering.enabled = coin.gen_bool(STEERING_ON_PROBABILITY);
    }
    SimConfig {
        faults: draw(seed, &allowed),
        steering,
        ..base.clone()
    }
}

/// A value drawn log-uniformly from `lo..=hi` (both positive).
fn log_uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    assert!(0.0 < lo && lo <= hi);
    (lo.ln() + rng.gen::<f64>() * (hi / lo).ln())
        .exp()
        .clamp(lo, hi)
}

/// The steering plan swarm mode draws for `seed` (enabled). The ranges keep every delay far
/// below the shop's deadlines (requests 10 s, pooled connections 5 s, the provider 3 s), so
/// that steering moves interleavings without making a correct system time out: points fire
/// rarely (at most 5% outside transactions, 20% inside), jitter up to 4 ms, stalls up to
/// 300 ms within a budget of at most 600 ms per run, and 1 to 6 change points, each holding a
/// lane at most 1.2 s and one lane at most 2.5 s in all. Change points are armed at the start
/// (a third of them) or after a log-uniform number of deciding points up to 4096, so that they
/// land in short and long runs alike, since a run's length is not known before it ends.
pub fn draw_steering(seed: u64) -> SteeringPlan {
    // A stream separate from the runtime's, the fault draw's and the run's steering stream.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5354_4545_5253_574d);
    let point_probability = rng.gen_range(0.0..=0.05);
    let txn_point_probability = rng.gen_range(0.01..=0.2);
    let jitter_ms_max = log_uniform(&mut rng, 1.0, 4.0).round() as u64;
    let stall_probability = rng.gen_range(0.0..=0.2);
    let stall_ms_max = log_uniform(&mut rng, 10.0, 300.0) as u64;
    let stall_budget_ms = rng.gen_range(0..=600);
    let change_points = (0..rng.gen_range(1..=6))
        .map(|_| ChangePoint {
            after_points: if rng.gen_bool(1.0 / 3.0) {
                0
            } else {
                log_uniform(&mut rng, 1.0, 4_096.0) as u64
            },
            probability: rng.gen_range(0.1..=0.7),
            release_after_points: log_uniform(&mut rng, 4.0, 128.0) as u32,
            quiet_ms: log_uniform(&mut rng, 30.0, 300.0) as u64,
            hold_ms_max: rng.gen_range(200..=1_200),
        })
        .collect();
    let plan = SteeringPlan {
        enabled: true,
        point_probability,
        txn_point_probability,
        jitter_ms_max,
        stall_probability,
        stall_ms_max,
        stall_budget_ms,
        change_points,
        lane_hold_budget_ms: rng.gen_range(1_000..=2_500),
    };
    assert!(plan.validate().is_ok(), "{:?}", plan.validate());
    plan
}

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

    #[test]
    fn steering_draws_vary_per_seed_and_are_on_in_most_swarm_seeds() {
        assert_eq!(draw_steering(7), draw_steering(7));
        assert_ne!(draw_steering(7), draw_steering(8));
        let base = SimConfig::default();
        let on = (0..400)
            .filter(|&s| config(s, &base, false).steering.enabled)
            .count();
        assert!((240..=360).contains(&on), "{on} of 400 seeds steered");
        assert!((0..50).all(|s| config(s, &base, true).steering.enabled));
        // The fault draw is the one swarm mode always made: steering does not shift it.
        let allowed = FaultPlan {
            quiet_period_ms: base.faults.quiet_period_ms,
            ..FaultPlan::all()
        };
        assert_eq!(config(9, &base, false).faults, draw(9, &allowed));
    }

    proptest::proptest! {
        /// A seed plus its draws is a complete reproduction: the drawn configuration reads
        /// back bit for bit from JSON (artifacts) and TOML (scenario files).
        #[test]
        fn drawn_configs_round_trip_bit_for_bit(seed: u64, always: bool) {
            let config = config(seed, &SimConfig::default(), always);
            let json = serde_json::to_string(&config).unwrap();
            let back: SimConfig = serde_json::from_str(&json).unwrap();
            proptest::prop_assert_eq!(&back, &config);
            let text = toml::to_string(&config.steering).unwrap();
            let back: SteeringPlan = toml::from_str(&text).unwrap();
            proptest::prop_assert_eq!(&back, &config.steering);
            for (a, b) in [
                (back.point_probability, config.steering.point_probability),
                (back.txn_point_probability, config.steering.txn_point_probability),
                (back.stall_probability, config.steering.stall_probability),
            ] {
                proptest::prop_assert_eq!(a.to_bits(), b.to_bits());
            }
        }
    }
}
