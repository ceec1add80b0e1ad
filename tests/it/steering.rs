//! Schedule steering as users rely on it: off, it changes nothing; on, every delay is part of
//! the seed (recorded and replayed bit for bit), it finds each planted bug in its
//! low-contention variant within a few seeds, and the `sometimes!` registry refuses a window
//! its system did not declare.

use shopsim_scenarios::{find, LOW_CONTENTION_BUGS};
use shopsim_sim::check::{Checker, Report, Verdict};
use shopsim_sim::coverage::Window;
use shopsim_sim::fuzz::run_seeds;
use shopsim_sim::replay::check_determinism;
use shopsim_sim::runner::{self, FailureKind, LocalBoxFuture, SimConfig, System, World};
use shopsim_sim::steering::{steered_us, ChangePoint, SteeringPlan};
use shopsim_sim::swarm::draw_steering;

fn jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn steered(base: &SimConfig, seed: u64) -> SimConfig {
    SimConfig {
        steering: draw_steering(seed),
        ..base.clone()
    }
}

#[test]
fn steering_off_is_the_unsteered_run_whatever_its_parameters() {
    let scenario = find("inventory-race").unwrap();
    let system = scenario.system(scenario.profile_list()[0], &[]).unwrap();
    let plain = scenario.sim_config();
    // A plan that would steer hard, but is off.
    let off = SimConfig {
        steering: SteeringPlan {
            enabled: false,
            ..draw_steering(3)
        },
        ..plain.clone()
    };
    for seed in 0..3 {
        let a = runner::run(&system, seed, &plain);
        let b = runner::run(&system, seed, &off);
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
        assert!(b.history.ops.iter().all(|op| op.process != "steering"));
        assert!(b.history.ops.iter().all(|op| steered_us(op) == 0));
    }
}

#[test]
fn steered_seeds_replay_bit_for_bit_and_account_for_every_delay() {
    for name in ["lc-last-unit", "inventory-race", "payment-race"] {
        let scenario = find(name).unwrap();
        let system = scenario.system(scenario.profile_list()[0], &[]).unwrap();
        let base = scenario.sim_config();
        for seed in 0..4 {
            let config = steered(&base, seed);
            if let Err(e) = check_determinism(&system, seed, &config) {
                panic!("{name} seed {seed} is not deterministic with steering: {e:?}");
            }
            let outcome = runner::run(&system, seed, &config);
            let summary = outcome
                .history
                .ops
                .iter()
                .find(|op| op.process == "steering" && op.kind == "summary")
                .unwrap_or_else(|| panic!("{name} seed {seed}: no steering summary"));
            let s = &summary.details;
            assert!(s["points"].as_u64().unwrap() > 0, "{s}");
            // Every microsecond of delay is booked to an operation, to background work, or
            // as unattributed; none is lost or counted twice.
            let booked: u64 = outcome.history.ops.iter().map(steered_us).sum::<u64>()
                + s["unattributed_us"].as_u64().unwrap()
                + s["background_us"].as_u64().unwrap();
            let spent = s["jitter_us"].as_u64().unwrap()
                + s["stall_us"].as_u64().unwrap()
                + s["hold_us"].as_u64().unwrap();
            assert_eq!(s["holds_unfinished"], 0, "{name} seed {seed}: {s}");
            assert_eq!(booked, spent, "{name} seed {seed}: {s}");
            for op in outcome
                .history
                .ops
                .iter()
                .filter(|op| op.process == "steering")
            {
                let start = op.details["start_us"].as_u64().unwrap_or(op.invoke_us);
                assert!(start <= op.invoke_us, "{op:?}");
            }
        }
    }
}

#[test]
fn steering_finds_every_planted_bug_in_its_low_contention_variant_within_20_seeds() {
    for (name, bug, check) in LOW_CONTENTION_BUGS {
        let scenario = find(name).unwrap();
        for profile in scenario.profile_list() {
            let system = scenario.system(profile, &[bug.to_string()]).unwrap();
            let base = scenario.sim_config();
            let seeds: Vec<u64> = (0..20).collect();
            let outcomes = run_seeds(
                || system.clone(),
                &seeds,
                |seed| steered(&base, seed),
                jobs(),
                |_| true,
            );
            let found = outcomes.iter().find(|o| {
                o.reports
                    .iter()
                    .any(|r| r.check == check && r.verdict == Verdict::Invalid)
            });
            let found = found.unwrap_or_else(|| {
                panic!("{name}@{profile} --bug {bug}: {check} never failed in 20 steered seeds")
            });
            let again = runner::run(&system, found.seed, &steered(&base, found.seed));
            assert_eq!(again.trace_hash, found.trace_hash, "{name}@{profile}");
        }
    }
}

#[test]
fn a_hand_written_plan_holds_the_first_shopper_inside_its_transaction() {
    // One change point at the first deciding point, held until the other shopper has moved:
    // the first shopper reads the last unit, the second reads it too, both reserve it.
    let scenario = find("lc-last-unit").unwrap();
    let system = scenario
        .system(
            scenario.profile_list()[0],
            &["oversell_check_then_act".to_string()],
        )
        .unwrap();
    let plan = SteeringPlan {
        enabled: true,
        point_probability: 0.0,
        txn_point_probability: 0.0,
        stall_probability: 0.0,
        change_points: vec![ChangePoint {
            after_points: 1,
            probability: 1.0,
            release_after_points: 12,
            quiet_ms: 300,
            hold_ms_max: 1_000,
        }],
        ..SteeringPlan::off()
    };
    let config = SimConfig {
        steering: plan,
        ..scenario.sim_config()
    };
    let found = (0..20)
        .map(|seed| runner::run(&system, seed, &config))
        .filter(|o| !o.passed())
        .count();
    let holds = runner::run(&system, 0, &config)
        .history
        .ops
        .iter()
        .filter(|op| op.process == "steering" && op.kind == "hold")
        .count();
    assert!(holds >= 1, "the change point never held a lane");
    assert!(found >= 15, "only {found} of 20 seeds oversold");
}

shopsim_sim::windows! {
    /// Declared.
    DECLARED = "declared window";
}

/// A system whose `sometimes!` names a window it did not declare.
struct Undeclared;

const UNDECLARED: Window = Window::new("a window nobody declared");

impl System for Undeclared {
    type State = ();

    fn name(&self) -> String {
        "undeclared".to_string()
    }

    fn run(&self, _world: World) -> LocalBoxFuture<()> {
        Box::pin(async {
            shopsim_sim::sometimes!(DECLARED, true).await;
            shopsim_sim::sometimes!(UNDECLARED, true).await;
        })
    }

    fn checkers(&self, _config: &SimConfig) -> Vec<Box<dyn Checker<()>>> {
        Vec::new()
    }

    fn windows(&self) -> &'static [Window] {
        ALL
    }
}

#[test]
fn a_window_missing_from_the_registry_fails_the_run() {
    let outcome = runner::run(&Undeclared, 1, &SimConfig::default());
    let failure = outcome.failure.expect("an undeclared window is a bug");
    assert_eq!(failure.kind, FailureKind::Panic);
    assert!(
        failure.witness.contains("a window nobody declared")
            && failure.witness.contains("not declared"),
        "{}",
        failure.witness
    );
    // Known before it is reached: the registry lists the declared window as never hit by a
    // run that stopped before it.
    let empty = shopsim_sim::coverage::CoverageReport::default();
    assert_eq!(empty.never_hit(ALL), vec!["declared window"]);
    let _ = Report::valid("unused", "");
}
