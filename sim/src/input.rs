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
        if self.value.is_empty() {
            return write!(f, "{}: {}", self.field, self.expected);
        }
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

/// What values a setting accepts: the one description that both the validator and the
/// scenario template (`shopsim scenario --template`) read, so they cannot drift apart.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A whole number in `min..=max`.
    Int {
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: u64,
    },
    /// A finite number in `min..=max`; `min_exclusive` makes the lower end open.
    Float {
        /// Lower end.
        min: f64,
        /// Upper end (inclusive).
        max: f64,
        /// Whether `min` itself is refused.
        min_exclusive: bool,
    },
    /// `true` or `false`.
    Bool,
    /// Free text of at most this many characters.
    Text {
        /// Longest accepted text, in characters.
        len_max: usize,
    },
    /// A name of the form `[A-Za-z0-9_.-]+`, not starting with `.`, at most this long (it
    /// becomes part of a file path).
    Name {
        /// Longest accepted name, in characters.
        len_max: usize,
    },
    /// One name of a registry.
    Choice(fn() -> Vec<&'static str>),
    /// A list of distinct names of a registry, with `len_min..=` entries (at most the
    /// registry's size, since entries are distinct).
    Names {
        /// The registry.
        choices: fn() -> Vec<&'static str>,
        /// Fewest entries.
        len_min: usize,
    },
}

impl Kind {
    /// A probability: a number from 0 to 1.
    pub const PROBABILITY: Kind = Kind::Float {
        min: 0.0,
        max: 1.0,
        min_exclusive: false,
    };

    /// What the kind accepts, in words: `a whole number in 1..=2000`.
    pub fn expected(&self) -> String {
        match *self {
            Kind::Int { min, max } if max == u64::MAX => format!("a whole number ≥ {min}"),
            Kind::Int { min, max } => format!("a whole number in {min}..={max}"),
            Kind::Float { min, max, .. } if (min, max) == (0.0, 1.0) => {
                "a probability from 0 to 1".to_string()
            }
            Kind::Float {
                min,
                max,
                min_exclusive,
            } => {
                let above = if min_exclusive { "above" } else { "from" };
                format!("a number {above} {min} up to {max}")
            }
            Kind::Bool => "true or false".to_string(),
            Kind::Text { len_max } => format!("a string of at most {len_max} characters"),
            Kind::Name { len_max } => format!(
                "a name of at most {len_max} characters from A-Z a-z 0-9 _ . - (not starting with .)"
            ),
            Kind::Choice(choices) => format!("one of {}", choices().join(", ")),
            Kind::Names { choices, len_min } => format!(
                "a list of {}distinct names from {}",
                if len_min > 0 {
                    format!("{len_min} or more ")
                } else {
                    String::new()
                },
                choices().join(", ")
            ),
        }
    }

    /// Checks `value` (as serde_json sees the setting) against the kind.
    pub fn check(&self, field: &str, value: &serde_json::Value) -> Result<(), InputError> {
        let bad = || InputError::new(field, shown(value), format!("expected {}", self.expected()));
        match *self {
            Kind::Int { min, max } => {
                let ok = match (value.as_i64(), value.as_u64()) {
                    (_, Some(u)) => u <= max && (min <= 0 || u >= min as u64),
                    (Some(i), None) => i >= min,
                    _ => false,
                };
                ok.then_some(()).ok_or_else(bad)
            }
            Kind::Float {
                min,
                max,
                min_exclusive,
            } => {
                if value.is_null() {
                    // serde_json has no NaN or infinity: they serialize as null.
                    return Err(InputError::new(
                        field,
                        "NaN or infinity",
                        format!("expected {}", self.expected()),
                    ));
                }
                let x = value.as_f64().ok_or_else(bad)?;
                let low = if min_exclusive { x > min } else { x >= min };
                (x.is_finite() && low && x <= max)
                    .then_some(())
                    .ok_or_else(bad)
            }
            Kind::Bool => value.as_bool().map(|_| ()).ok_or_else(bad),
            Kind::Text { len_max } => {
                let s = value.as_str().ok_or_else(bad)?;
                (s.chars().count() <= len_max).then_some(()).ok_or_else(bad)
            }
            Kind::Name { len_max } => {
                let s = value.as_str().ok_or_else(bad)?;
                let ok = !s.is_empty()
                    && s.chars().count() <= len_max
                    && !s.starts_with('.')
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
                ok.then_some(()).ok_or_else(bad)
            }
            Kind::Choice(choices) => {
                let s = value.as_str().ok_or_else(bad)?;
                choices().contains(&s).then_some(()).ok_or_else(bad)
            }
            Kind::Names { choices, len_min } => {
                let list = value.as_array().ok_or_else(bad)?;
                if list.len() < len_min {
                    return Err(bad());
                }
                let known = choices();
                for (i, entry) in list.iter().enumerate() {
                    let at = format!("{field}[{i}]");
                    let name = entry.as_str().filter(|s| known.contains(s));
                    let Some(name) = name else {
                        return Err(InputError::new(
                            at,
                            shown(entry),
                            format!("expected one of {}", known.join(", ")),
                        ));
                    };
                    if list[..i].iter().any(|e| e.as_str() == Some(name)) {
                        return Err(InputError::new(at, name, "expected no duplicate entries"));
                    }
                }
                Ok(())
            }
        }
    }
}

/// A value as an error message shows it: strings bare, long values cut.
pub fn shown(value: &serde_json::Value) -> String {
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    cut(&text, 80)
}

/// `text` cut to at most `len_max` characters (an ellipsis marks a cut).
pub fn cut(text: &str, len_max: usize) -> String {
    if text.chars().count() <= len_max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(len_max).collect();
    out.push('…');
    out
}

/// One setting of a configuration file: its path (`shop.shoppers`), unit, accepted values
/// and meaning.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The dotted path as in the file: `shop.db.port`.
    pub path: &'static str,
    /// The unit in words (`ms`, `µs`, `count`, `cents`, ``), for the template.
    pub unit: &'static str,
    /// What values it accepts.
    pub kind: Kind,
    /// One sentence: what it means.
    pub doc: &'static str,
}

impl Field {
    /// The setting's value in `document` (a serde_json image of the whole file), if present.
    pub fn value_in<'a>(&self, document: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        self.path.split('.').try_fold(document, |v, key| v.get(key))
    }
}

/// Checks every field of `fields` present in `document` against its kind, in table order;
/// the first bad one is the error.
pub fn check_fields(fields: &[Field], document: &serde_json::Value) -> Result<(), InputError> {
    for field in fields {
        if let Some(value) = field.value_in(document) {
            field.kind.check(field.path, value)?;
        }
    }
    Ok(())
}
