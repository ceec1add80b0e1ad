//! Benchmark of the harness itself: the fixed cost of one seed (a runtime, a node, a trivial
//! workload, the checks), RPC round trips per second of wall time on one thread, and the
//! speed-up of 2 worker threads over 1 for a batch of seeds. The wall clock is read only
//! here, around whole runs, never inside a simulation.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shopsim_sim::check::Checker;
use shopsim_sim::fuzz::run_seeds;
use shopsim_sim::net;
use shopsim_sim::runner::{self, LocalBoxFuture, NodeRole, SimConfig, System, World};

/// A server answering pings and one client doing `calls` sequential round trips.
#[derive(Clone)]
struct PingPong {
    calls: u64,
}

impl System for PingPong {
    type State = u64;

    fn name(&self) -> String {
        "ping-pong".to_string()
    }

    fn run(&self, world: World) -> LocalBoxFuture<u64> {
        let calls = self.calls;
        Box::pin(async move {
            let handle = world.handle();
            let server = handle
                .create_node()
                .name("server")
                .ip("10.0.0.1".parse().unwrap())
                .init(|| net::serve(9000, |x: u64| async move { x + 1 }))
                .build();
            world.register(&server, "server", NodeRole::SERVER);
            let client = handle
                .create_node()
                .name("client")
                .ip("10.0.0.2".parse().unwrap())
                .build();
            let addr: SocketAddr = "10.0.0.1:9000".parse().unwrap();
            client
                .spawn(async move {
                    madsim::time::sleep(Duration::from_millis(1)).await;
                    let mut ok = 0;
                    for i in 0..calls {
                        if let net::RpcOutcome::Reply(_) =
                            net::call::<u64, u64>(addr, i, Duration::from_secs(1)).await
                        {
                            ok += 1;
                        }
                    }
                    ok
                })
                .await
                .unwrap()
        })
    }

    fn checkers(&self, _config: &SimConfig) -> Vec<Box<dyn Checker<u64>>> {
        Vec::new()
    }
}

fn config() -> SimConfig {
    SimConfig {
        duration_ms: 1,
        time_limit_ms: 3_600_000,
        latency_us_min: 1,
        latency_us_max: 2,
        ..SimConfig::default()
    }
}

fn main() {
    // Fixed cost per seed: one round trip, so the time is the runtime, nodes and checks.
    let system = PingPong { calls: 1 };
    let seeds = 2_000u64;
    let started = Instant::now();
    for seed in 0..seeds {
        let o = runner::run(&system, seed, &config());
        assert_eq!(o.state, Some(1));
    }
    let per_seed = started.elapsed().as_secs_f64() * 1000.0 / seeds as f64;
    println!("fixed cost per seed: {per_seed:.3} ms (goal <= 0.5 ms)");

    // RPC round trips per second of wall time, one thread.
    let calls = 200_000;
    let system = PingPong { calls };
    let started = Instant::now();
    let o = runner::run(&system, 1, &config());
    assert_eq!(o.state, Some(calls));
    let per_s = calls as f64 / started.elapsed().as_secs_f64();
    println!("rpc round trips per second (1 thread): {per_s:.0} (goal >= 200000)");

    // Speed-up of 2 threads over 1 on a batch of seeds.
    let system = PingPong { calls: 2_000 };
    let batch: Vec<u64> = (0..64).collect();
    let time = |jobs: usize| {
        let started = Instant::now();
        let outcomes = run_seeds(|| system.clone(), &batch, |_| config(), jobs, |_| true);
        assert_eq!(outcomes.len(), batch.len());
        started.elapsed().as_secs_f64()
    };
    let one = time(1);
    let two = time(2);
    println!(
        "speed-up of 2 threads over 1: {:.2}x (goal >= 1.8x)",
        one / two
    );
}
