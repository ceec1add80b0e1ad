//! `shopsim bench --scaling`: how the cost of a run grows with its size. One scenario shape
//! (checkout-concurrency's shoppers, faults off so that every run does the same kind of work)
//! runs at growing sizes along three series: shoppers 10 → 10,000 (tenants and duration
//! fixed), tenants 1 → 100 (shoppers fixed, so the catalog grows with the tenants), and
//! virtual duration 10 s → 600 s (shoppers at a fixed arrival rate). Each point reports wall
//! time per request and the peak resident memory of one run. Time per request that stays
//! flat along a series means total cost linear in the work.
//!
//! The largest points exceed the bounds of scenario files (1,000 clients, 6,000 requests),
//! which keep a user's run inside the memory budget; the series is built here, never read
//! from input, and validated with [`shopsim_scenarios::fields::Bounds::SCALING`].

use std::time::Instant;

use shopsim_scenarios::fields::Bounds;
use shopsim_scenarios::Scenario;

/// One size of the shape: shoppers, tenants, virtual duration.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// The series it belongs to.
    pub series: &'static str,
    /// Shoppers running the checkout flow.
    pub shoppers: u32,
    /// Tenants (10 products each).
    pub tenants: u32,
    /// Virtual duration of the workload, ms.
    pub duration_ms: u64,
}

/// The three series, smallest size first.
pub const SIZES: &[Size] = &[
    size("shoppers", 10, 10, 60_000),
    size("shoppers", 100, 10, 60_000),
    size("shoppers", 1_000, 10, 60_000),
    size("shoppers", 10_000, 10, 60_000),
    size("tenants", 1_000, 1, 60_000),
    size("tenants", 1_000, 10, 60_000),
    size("tenants", 1_000, 100, 60_000),
    // 10 shoppers arrive per virtual second.
    size("duration", 100, 10, 10_000),
    size("duration", 600, 10, 60_000),
    size("duration", 6_000, 10, 600_000),
];

const fn size(series: &'static str, shoppers: u32, tenants: u32, duration_ms: u64) -> Size {
    Size {
        series,
        shoppers,
        tenants,
        duration_ms,
    }
}

/// The scenario of `size`: checkout-concurrency's shop and flow at that size, without faults,
/// with stock for every shopper (so the work per shopper does not change with the size) and
/// arrivals spread over 80% of the duration.
pub fn scenario(size: &Size) -> Result<Scenario, String> {
    let mut s = shopsim_scenarios::find("checkout-concurrency").map_err(|e| e.to_string())?;
    s.name = format!("scaling-{}-{}", size.series, size.shoppers);
    s.faults = shopsim_sim::fault::FaultPlan::default();
    s.sim.duration_ms = size.duration_ms;
    // Room to settle after the workload, as the built-ins have.
    s.sim.time_limit_ms = s.sim.time_limit_ms.max(size.duration_ms * 2);
    s.shop.shoppers = size.shoppers;
    s.shop.tenants = size.tenants;
    s.shop.double_convert_probability = 0.0;
    s.shop.arrival_window_ms = size.duration_ms / 10 * 8;
    let products = u64::from(size.tenants) * u64::from(s.shop.products_per_tenant);
    let units = u64::from(size.shoppers)
        * u64::from(s.shop.items_per_cart)
        * u64::try_from(s.shop.quantity_max).map_err(|e| e.to_string())?;
    s.shop.stock_per_product = i64::try_from(units / products + 1).map_err(|e| e.to_string())?;
    // Enough app workers for the busiest point's arrival rate (10,000 shoppers in 48 s).
    s.shop.app_nodes = 4;
    s.shop.workers_per_app = 32;
    s.validate_within(&Bounds::SCALING)
        .map_err(|e| format!("scaling series {}: {e}", s.name))?;
    Ok(s)
}

/// One measured point.
#[derive(Debug, Clone)]
pub struct Point {
    /// The size.
    pub size: Size,
    /// HTTP requests the clients sent (history operations of an endpoint), over all seeds.
    pub requests: u64,
    /// Wall time of all seeds, s.
    pub wall_s: f64,
    /// Peak resident memory of one run (of the first seed), MiB, if known.
    pub peak_mib: Option<f64>,
}

impl Point {
    /// Wall time per request, µs.
    pub fn us_per_request(&self) -> f64 {
        self.wall_s * 1e6 / self.requests.max(1) as f64
    }
}

/// Whether a history operation is a client's HTTP request (its kind is an endpoint class such
/// as `POST /api/v1/cart/{id}/convert`).
fn is_request(kind: &str) -> bool {
    ["GET ", "POST ", "PUT ", "PATCH ", "DELETE "]
        .iter()
        .any(|m| kind.starts_with(m))
}

/// Measures `size` over `seeds` seeds on this thread, one after another.
pub fn measure(size: &Size, seeds: u64, peak_of: impl Fn(&dyn Fn()) -> Option<u64>) -> Point {
    assert!(seeds >= 1);
    let scenario = scenario(size).expect("the scaling series is valid");
    let profile = scenario.profile_list()[0];
    let system = scenario.system(profile, &[]).expect("valid scenario");
    let config = scenario.sim_config();
    let mut requests = 0;
    let started = Instant::now();
    for seed in 0..seeds {
        let outcome = shopsim_sim::runner::run(&system, seed, &config);
        requests += outcome
            .history
            .ops
            .iter()
            .filter(|op| is_request(&op.kind))
            .count() as u64;
    }
    let wall_s = started.elapsed().as_secs_f64();
    let peak_kib = peak_of(&|| drop(shopsim_sim::runner::run(&system, 0, &config)));
    Point {
        size: *size,
        requests,
        wall_s,
        peak_mib: peak_kib.map(|k| k as f64 / 1024.0),
    }
}

/// The series as a table: each point with its time per request relative to its series'
/// smallest point.
pub fn table(points: &[Point]) -> String {
    let mut out = format!(
        "{:<10} {:>9} {:>8} {:>10} {:>10} {:>10} {:>12} {:>10} {:>10}\n",
        "series",
        "shoppers",
        "tenants",
        "virtual s",
        "requests",
        "wall s",
        "µs/request",
        "vs first",
        "peak MiB"
    );
    for p in points {
        let first = points
            .iter()
            .find(|q| q.size.series == p.size.series)
            .expect("its own series");
        let peak = p.peak_mib.map_or("-".to_string(), |m| format!("{m:.1}"));
        out.push_str(&format!(
            "{:<10} {:>9} {:>8} {:>10} {:>10} {:>10.2} {:>12.1} {:>9.2}x {:>10}\n",
            p.size.series,
            p.size.shoppers,
            p.size.tenants,
            p.size.duration_ms / 1_000,
            p.requests,
            p.wall_s,
            p.us_per_request(),
            p.us_per_request() / first.us_per_request(),
            peak
        ));
    }
    out
}

/// The points as JSON rows.
pub fn json(points: &[Point]) -> Vec<serde_json::Value> {
    points
        .iter()
        .map(|p| {
            serde_json::json!({
                "series": p.size.series,
                "shoppers": p.size.shoppers,
                "tenants": p.size.tenants,
                "duration_ms": p.size.duration_ms,
                "requests": p.requests,
                "wall_s": p.wall_s,
                "us_per_request": p.us_per_request(),
                "peak_rss_mib_one_seed": p.peak_mib,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every point of the series is a valid scenario within the scaling bounds, and the
    /// largest is not a valid file (the bounds differ only where the series needs them).
    #[test]
    fn every_size_is_valid_and_the_largest_exceeds_the_file_bounds() {
        for size in SIZES {
            let s = scenario(size).unwrap();
            assert_eq!(s.shop.shoppers, size.shoppers);
        }
        let largest = SIZES.iter().max_by_key(|s| s.shoppers).unwrap();
        let err = scenario(largest).unwrap().validate().unwrap_err();
        assert_eq!(err.field, "shop.shoppers");
    }
}
