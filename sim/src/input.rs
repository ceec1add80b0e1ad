//! Bad input as a value: every rejected setting names its field and the value it got.

use std::fmt;

/// A rejected input: `SHOPSIM_SEEDS: must be at least 1, got 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// The field, flag or variable (`SHOPSIM_SEED`, `faults.packet_loss_probability`).
    pub field: String,
    /// The value as given.
    pub value: String,
    /// What was expected.
    pub expected: String,
}

impl InputError {
    /// An error for `field` having `value` when `expected` was wanted.
    pub fn new(
        field: impl Into<String>,
        value: impl fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        InputError {
            field: field.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}, got `{}`", self.field, self.expected, self.value)
    }
}

impl std::error::Error for InputError {}

/// Checks that a probability is in `0..=1`.
pub fn check_probability(field: &str, p: f64) -> Result<(), InputError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(InputError::new(field, p, "must be a probability in 0..=1"))
    }
}

/// Checks that a duration is positive.
pub fn check_positive_ms(field: &str, ms: u64) -> Result<(), InputError> {
    if ms > 0 {
        Ok(())
    } else {
        Err(InputError::new(field, ms, "must be greater than 0"))
    }
}
