//! Seeds: which seeds a test or campaign runs, from the environment.
//!
//! `SHOPSIM_SEED=N` runs exactly seed N (a replay). Otherwise `SHOPSIM_SEEDS=K` seeds starting
//! at `SHOPSIM_SEED_START` (default 0) are run; without either, a fixed list of
//! [`SEEDS_DEFAULT`] seeds, so a plain `cargo test` is deterministic.

use crate::input::InputError;

/// How many seeds a scenario test runs by default.
pub const SEEDS_DEFAULT: u64 = 32;

/// The seeds to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedPlan {
    /// First seed.
    pub start: u64,
    /// How many consecutive seeds.
    pub count: u64,
}

impl SeedPlan {
    /// One seed.
    pub fn one(seed: u64) -> SeedPlan {
        SeedPlan {
            start: seed,
            count: 1,
        }
    }

    /// The seeds, in order, produced lazily: a plan of 2^64 - 1 seeds costs no memory.
    pub fn seeds(&self) -> impl Iterator<Item = u64> {
        let start = self.start;
        assert!(self.count == 0 || start.checked_add(self.count - 1).is_some());
        (0..self.count).map(move |i| start + i)
    }

    /// The plan the environment asks for, `default_count` seeds from 0 if it asks for none.
    pub fn from_env(default_count: u64) -> Result<SeedPlan, InputError> {
        let var = |name: &str| std::env::var(name).ok();
        SeedPlan::from_vars(
            var("SHOPSIM_SEED").as_deref(),
            var("SHOPSIM_SEEDS").as_deref(),
            var("SHOPSIM_SEED_START").as_deref(),
            default_count,
        )
    }

    /// The plan for these variable values (for tests of the parsing itself).
    pub fn from_vars(
        seed: Option<&str>,
        seeds: Option<&str>,
        start: Option<&str>,
        default_count: u64,
    ) -> Result<SeedPlan, InputError> {
        assert!(default_count > 0);
        if let Some(seed) = seed {
            return Ok(SeedPlan::one(parse_seed("SHOPSIM_SEED", seed)?));
        }
        let count = match seeds {
            None => default_count,
            Some(text) => {
                let count = parse_seed("SHOPSIM_SEEDS", text)?;
                if count == 0 {
                    return Err(InputError::new("SHOPSIM_SEEDS", text, "must be at least 1"));
                }
                count
            }
        };
        let start = match start {
            None => 0,
            Some(text) => parse_seed("SHOPSIM_SEED_START", text)?,
        };
        // Seeds do not wrap around: the last one must be a 64-bit seed too.
        if start.checked_add(count - 1).is_none() {
            return Err(InputError::new(
                "SHOPSIM_SEEDS",
                count,
                format!(
                    "expected at most {} seeds from seed {start} (the last seed is 2^64 - 1)",
                    u64::MAX - start + 1
                ),
            ));
        }
        Ok(SeedPlan { start, count })
    }
}

/// Seeds a campaign hands out by index, lazily: a plan of any size, or a list.
pub trait SeedSource: Sync {
    /// How many seeds.
    fn seed_count(&self) -> u64;
    /// The `i`-th seed, `i < seed_count()`.
    fn seed_at(&self, i: u64) -> u64;
}

impl SeedSource for SeedPlan {
    fn seed_count(&self) -> u64 {
        self.count
    }
    fn seed_at(&self, i: u64) -> u64 {
        assert!(i < self.count);
        self.start + i
    }
}

impl SeedSource for [u64] {
    fn seed_count(&self) -> u64 {
        self.len() as u64
    }
    fn seed_at(&self, i: u64) -> u64 {
        self[i as usize]
    }
}

impl SeedSource for Vec<u64> {
    fn seed_count(&self) -> u64 {
        self.len() as u64
    }
    fn seed_at(&self, i: u64) -> u64 {
        self[i as usize]
    }
}

/// Parses a seed: decimal, or hexadecimal with `0x`.
pub fn parse_seed(field: &str, text: &str) -> Result<u64, InputError> {
    let trimmed = text.trim();
    let parsed = match trimmed.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => trimmed.parse::<u64>(),
    };
    parsed.map_err(|_| InputError::new(field, text, "must be an unsigned 64-bit integer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_plans_and_bad_values() {
        assert_eq!(
            SeedPlan::from_vars(Some("7"), Some("100"), None, 32).unwrap(),
            SeedPlan::one(7)
        );
        let plan = SeedPlan::from_vars(None, Some("3"), Some("0x10"), 32).unwrap();
        assert_eq!(plan.seeds().collect::<Vec<_>>(), vec![16, 17, 18]);
        assert_eq!(SeedPlan::from_vars(None, None, None, 32).unwrap().count, 32);
        let err = SeedPlan::from_vars(None, Some("0"), None, 32).unwrap_err();
        assert_eq!(
            err.to_string(),
            "SHOPSIM_SEEDS: must be at least 1, got `0`"
        );
        // The whole 64-bit range is a plan like any other (nothing is built up front), but it
        // does not wrap around.
        let all = SeedPlan::from_vars(None, Some("18446744073709551615"), None, 32).unwrap();
        assert_eq!(all.seed_at(all.count - 1), u64::MAX - 1);
        assert_eq!(all.seeds().nth(3), Some(3));
        let err =
            SeedPlan::from_vars(None, Some("2"), Some("18446744073709551615"), 32).unwrap_err();
        assert_eq!(err.field, "SHOPSIM_SEEDS");
        let err = SeedPlan::from_vars(Some("12ab"), None, None, 32).unwrap_err();
        assert_eq!(err.field, "SHOPSIM_SEED");
        assert_eq!(err.value, "12ab");
    }
}
