//! The harness proves itself on a tiny system before any shop exists: a counter service over
//! RPC and clients that increment it. With the planted bug a client reads, then writes the
//! read value plus one (two RPCs, a lost-update window); without it the increment is one
//! atomic RPC. The checker must find the bug within a bounded number of seeds, replay it with
//! the same trace hash, pass 500 seeds without it, and every fault family must really happen.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shopsim_sim::check::{Checker, Liveness, Report};
use shopsim_sim::fault::{FaultFamily, FaultPlan};
use shopsim_sim::history::{History, OpOutcome};
use shopsim_sim::net::{self, RpcOutcome};
use shopsim_sim::replay::check_determinism;
use shopsim_sim::runner::{self, LocalBoxFuture, NodeRole, SimConfig, System, World};

const PORT: u16 = 7000;

#[derive(Debug, Clone, Copy)]
enum Request {
    Get,
    Set(i64),
    Add(i64),
}

struct Counter {
    lost_update_bug: bool,
    clients: usize,
    increments: usize,
}

impl System for Counter {
    type State = i64;

    fn name(&self) -> String {
        "counter".to_string()
    }

    fn run(&self, world: World) -> LocalBoxFuture<i64> {
        let bug = self.lost_update_bug;
        let (clients, increments) = (self.clients, self.increments);
        Box::pin(async move {
            let handle = world.handle();
            // The value survives a crash of the node, like a row in a database.
            let value = Arc::new(Mutex::new(0i64));
            let served = value.clone();
            let server = handle
                .create_node()
                .name("counter")
                .ip("10.0.0.1".parse().unwrap())
                .init(move || {
                    let value = served.clone();
                    net::serve(PORT, move |request: Request| {
                        let value = value.clone();
                        async move {
                            let mut v = value.lock().unwrap();
                            match request {
                                Request::Get => {}
                                Request::Set(x) => *v = x,
                                Request::Add(d) => *v += d,
                            }
                            *v
                        }
                    })
                })
                .build();
            world.register(&server, "counter", NodeRole::SERVER);
            let addr: SocketAddr = "10.0.0.1:7000".parse().unwrap();
            let mut tasks = Vec::new();
            for c in 0..clients {
                let node = handle
                    .create_node()
                    .name(format!("client-{c}"))
                    .ip(format!("10.0.1.{}", c + 1).parse().unwrap())
                    .build();
                world.register(&node, &format!("client-{c}"), NodeRole::CLIENT);
                let recorder = world.recorder();
                tasks.push(node.spawn(async move {
                    let deadline = Duration::from_millis(500);
                    for _ in 0..increments {
                        let process = format!("client-{c}");
                        let op = recorder.invoke(&process, "increment", serde_json::json!({}));
                        let outcome = if bug {
                            match net::call::<Request, i64>(addr, Request::Get, deadline).await {
                                RpcOutcome::Reply(v) => {
                                    match net::call::<Request, i64>(
                                        addr,
                                        Request::Set(v + 1),
                                        deadline,
                                    )
                                    .await
                                    {
                                        RpcOutcome::Reply(_) => OpOutcome::Ok,
                                        RpcOutcome::Unknown => OpOutcome::Unknown,
                                    }
                                }
                                RpcOutcome::Unknown => OpOutcome::Fail,
                            }
                        } else {
                            match net::call::<Request, i64>(addr, Request::Add(1), deadline).await {
                                RpcOutcome::Reply(_) => OpOutcome::Ok,
                                RpcOutcome::Unknown => OpOutcome::Unknown,
                            }
                        };
                        recorder.complete(op, outcome, None, serde_json::Value::Null);
                        madsim::time::sleep(Duration::from_millis(50)).await;
                    }
                }));
            }
            world.start_nemesis();
            for task in tasks {
                task.await.unwrap();
            }
            let end = world.duration();
            let now = shopsim_sim::trace::virtual_now();
            if now < end {
                madsim::time::sleep(end - now).await;
            }
            let v = *value.lock().unwrap();
            v
        })
    }

    fn checkers(&self, config: &SimConfig) -> Vec<Box<dyn Checker<i64>>> {
        vec![
            Box::new(CounterChecker),
            Box::new(Liveness {
                faults_end_us: config.faults_end().as_micros() as u64,
            }),
        ]
    }
}

/// The counter equals the acknowledged increments, give or take those with unknown outcome.
struct CounterChecker;

impl Checker<i64> for CounterChecker {
    fn name(&self) -> &str {
        "counter_exact"
    }

    fn check(&self, history: &History, state: &i64) -> Report {
        let ok = history
            .of_kind("increment")
            .filter(|o| o.outcome == OpOutcome::Ok)
            .count() as i64;
        let unknown = history
            .of_kind("increment")
            .filter(|o| o.outcome == OpOutcome::Unknown)
            .count() as i64;
        if *state < ok || *state > ok + unknown {
            Report::invalid(
                "counter_exact",
                format!("the counter is {state} but {ok} increments were acknowledged ({unknown} unknown): an increment was lost"),
            )
        } else {
            Report::valid(
                "counter_exact",
                format!("{state} within [{ok}, {}]", ok + unknown),
            )
        }
    }
}

fn config(faults: FaultPlan) -> SimConfig {
    SimConfig {
        duration_ms: 3_000,
        time_limit_ms: 60_000,
        faults: FaultPlan {
            quiet_period_ms: 1_000,
            ..faults
        },
        ..SimConfig::default()
    }
}

fn buggy() -> Counter {
    Counter {
        lost_update_bug: true,
        clients: 3,
        increments: 5,
    }
}

fn correct() -> Counter {
    Counter {
        lost_update_bug: false,
        clients: 3,
        increments: 5,
    }
}

#[test]
fn the_checker_finds_the_planted_lost_update_and_the_seed_replays() {
    let failing = (0..50)
        .map(|seed| runner::run(&buggy(), seed, &config(FaultPlan::none())))
        .find(|o| !o.passed())
        .expect("the lost update is found within 50 seeds");
    assert_eq!(failing.failure.as_ref().unwrap().check, "counter_exact");
    let again = runner::run(&buggy(), failing.seed, &config(FaultPlan::none()));
    assert!(!again.passed());
    assert_eq!(again.trace_hash, failing.trace_hash);
    let report = shopsim_sim::replay::failure_report(&failing, Some("counter")).unwrap();
    assert!(
        report.starts_with(&format!(
            "FAIL counter seed={} counter_exact: ",
            failing.seed
        )),
        "{report}"
    );
}

#[test]
fn without_the_bug_500_seeds_pass_under_all_faults() {
    let seeds: Vec<u64> = (0..500).collect();
    let outcomes =
        shopsim_sim::fuzz::run_seeds(correct, &seeds, |_| config(FaultPlan::all()), 2, |_| true);
    assert_eq!(outcomes.len(), 500);
    for o in &outcomes {
        assert!(
            o.passed(),
            "{}",
            shopsim_sim::replay::failure_report(o, Some("counter")).unwrap()
        );
    }
    // Every fault family happened somewhere.
    let mut coverage = shopsim_sim::coverage::CoverageReport::default();
    for o in &outcomes {
        coverage.merge(&o.coverage);
    }
    for family in FaultFamily::ALL {
        let key = match family {
            FaultFamily::Buggify => "buggify:rpc.delay_reply".to_string(),
            other => format!("fault:{}", other.name()),
        };
        assert!(
            coverage.counters.get(&key).copied().unwrap_or(0) > 0,
            "{key} never happened: {:?}",
            coverage.counters
        );
    }
}

#[test]
fn fifty_seeds_with_faults_are_deterministic_in_process() {
    for seed in 0..50 {
        let hash = check_determinism(&correct(), seed, &config(FaultPlan::all()));
        assert!(hash.is_ok(), "{:?}", hash);
    }
}

/// Prints the trace hash of `SHOPSIM_COUNTER_PROBE_SEED` (used by the fresh-process check).
#[test]
fn counter_hash_probe() {
    if let Ok(seed) = std::env::var("SHOPSIM_COUNTER_PROBE_SEED") {
        let seed: u64 = seed.parse().unwrap();
        let o = runner::run(&correct(), seed, &config(FaultPlan::all()));
        println!("HASH={}", o.trace_hash);
    }
}

#[test]
fn a_fresh_process_gives_the_same_hash() {
    for seed in [3u64, 17, 42] {
        let here = runner::run(&correct(), seed, &config(FaultPlan::all())).trace_hash;
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "counter::counter_hash_probe",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SHOPSIM_COUNTER_PROBE_SEED", seed.to_string())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let there: u64 = stdout
            .lines()
            .find_map(|l| l.split("HASH=").nth(1))
            .map(|h| h.trim_end_matches(|c: char| !c.is_ascii_digit()))
            .unwrap_or_else(|| panic!("no hash printed: {stdout}"))
            .parse()
            .unwrap();
        assert_eq!(here, there, "seed {seed}");
    }
}
