//! 64-bit integers in JSON files as strings. Seeds and trace hashes use all 64 bits, and many
//! JSON readers (JavaScript, jq 1.6) hold numbers as doubles, which round any integer above
//! 2^53: `jq .seed` of seed 12345678901234567891 prints 12345678901234567000, a different
//! seed. As strings they read back exactly everywhere. Readers also accept a JSON integer, so
//! files written before the change still load.

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// A `u64` as a decimal string: `"12345678901234567891"`.
pub mod decimal {
    use super::*;

    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        deserializer.deserialize_any(U64Visitor { radix: 10 })
    }
}

/// A `u64` as 16 lowercase hexadecimal digits, as the CLI prints trace hashes.
pub mod hex {
    use super::*;

    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{value:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        deserializer.deserialize_any(U64Visitor { radix: 16 })
    }
}

/// An optional `u64` as [`hex`] (a field that older files do not have).
pub mod hex_option {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => super::hex::serialize(v, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u64>, D::Error> {
        super::hex::deserialize(deserializer).map(Some)
    }
}

/// Parses `text` as a `u64` in `radix` (10 or 16): digits only, no sign, no prefix, no
/// spaces, at most 20 decimal or 16 hexadecimal digits.
pub fn parse(text: &str, radix: u32) -> Option<u64> {
    assert!(radix == 10 || radix == 16);
    let digits_max = if radix == 10 { 20 } else { 16 };
    if text.is_empty() || text.len() > digits_max || !text.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(text, radix).ok()
}

struct U64Visitor {
    radix: u32,
}

impl Visitor<'_> for U64Visitor {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if self.radix == 10 {
            f.write_str("an unsigned 64-bit integer as a decimal string")
        } else {
            f.write_str("an unsigned 64-bit integer as a hexadecimal string")
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse(v, self.radix).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Both {
        #[serde(with = "super::decimal")]
        seed: u64,
        #[serde(with = "super::hex")]
        hash: u64,
    }

    #[test]
    fn every_u64_reads_back_and_bad_text_is_refused() {
        for v in [0, 1, (1 << 53) + 1, 12_345_678_901_234_567_891, u64::MAX] {
            let both = Both { seed: v, hash: v };
            let text = serde_json::to_string(&both).unwrap();
            assert_eq!(serde_json::from_str::<Both>(&text).unwrap(), both, "{text}");
        }
        let old: Both = serde_json::from_str(r#"{"seed": 18446744073709551615, "hash": 5}"#)
            .expect("integers of older files");
        assert_eq!((old.seed, old.hash), (u64::MAX, 5));
        for bad in [
            r#"{"seed": "-1", "hash": "0"}"#,
            r#"{"seed": "18446744073709551616", "hash": "0"}"#,
            r#"{"seed": " 1", "hash": "0"}"#,
            r#"{"seed": "1", "hash": "0x1"}"#,
            r#"{"seed": -1, "hash": "0"}"#,
            r#"{"seed": 1.5, "hash": "0"}"#,
            r#"{"seed": "1", "hash": "11112222333344445"}"#,
        ] {
            assert!(serde_json::from_str::<Both>(bad).is_err(), "{bad}");
        }
    }
}
