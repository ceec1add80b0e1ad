//! Reading what users and machines hand shopsim: files with a size limit, and flag values with
//! bounds. Every refusal is an error naming the flag or file and the value (exit code 2).

use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// The largest scenario file, bytes (the built-in ones are under 2 KiB).
pub const SCENARIO_BYTES_MAX: u64 = 1 << 20;
/// The largest artifact, bytes (a multi-tenant-mixed history with faults is a few MiB).
pub const ARTIFACT_BYTES_MAX: u64 = 32 << 20;
/// The largest campaign state file, bytes. A state holds counts and at most `--max-groups`
/// groups (10000 at most, each with a witness of up to 2000 characters and its kept
/// artifacts), never a list of seeds; it is typed while it is parsed, so reading one costs
/// about its size in memory.
pub const STATE_BYTES_MAX: u64 = 64 << 20;
/// The largest conformance script file, bytes (hermitage.toml is 30 KiB).
pub const CONFORMANCE_BYTES_MAX: u64 = 4 << 20;
/// The most worker threads (`--jobs`): more would only queue runs, each with its own memory.
pub const JOBS_MAX: usize = 256;
/// The longest `fuzz --duration` (and `--status-interval`): 100 years of 366 days, the
/// longest elapsed time a campaign state holds.
pub const FUZZ_DURATION_S_MAX: u64 = 100 * 366 * 86_400;
/// The most machines a campaign can be sharded over (`--shard K/N`).
pub const SHARDS_MAX: u64 = 10_000;

/// O_NONBLOCK on Linux: opening a FIFO swapped in after the metadata check must not wait for
/// a writer. Regular files ignore the flag.
#[cfg(target_os = "linux")]
const O_NONBLOCK: i32 = 0o4000;

/// Reads the text file `path`, refusing what is not a regular file (a FIFO, `/dev/zero`, a
/// directory, also behind a symbolic link) and anything longer than `limit` bytes, without
/// ever reading more than `limit + 1` bytes.
pub fn read_text(path: &Path, limit: u64) -> Result<String, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    check_regular(path, &meta, limit)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(target_os = "linux")]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, O_NONBLOCK);
    let file = options.open(path).map_err(|e| format!("{shown}: {e}"))?;
    // The file opened may not be the one looked at: check again what it is.
    let meta = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
    check_regular(path, &meta, limit)?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{shown}: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "{shown}: longer than the limit of {limit} bytes for this kind of file"
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "{shown}: not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

fn check_regular(path: &Path, meta: &std::fs::Metadata, limit: u64) -> Result<(), String> {
    let shown = path.display();
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a device, FIFO or socket)"
        };
        return Err(format!("{shown}: {what}; expected a regular file"));
    }
    if meta.len() > limit {
        return Err(format!(
            "{shown}: {} bytes, longer than the limit of {limit} bytes for this kind of file",
            meta.len()
        ));
    }
    Ok(())
}

/// A JSON file's error, naming the field's path (`config.faults.loss_probability`) or, for a
/// syntax error, the line and column.
pub fn json_error(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let inner = e.inner();
    // serde_json appends the position to every message; keep it once, in front.
    let message = inner.to_string();
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_string();
    if path == "." || inner.is_syntax() || inner.is_eof() {
        format!(
            "line {}, column {}: {message}",
            inner.line(),
            inner.column()
        )
    } else {
        format!("{path}: {message}")
    }
}

/// Parses `--jobs`: `1..=JOBS_MAX`.
pub fn parse_jobs(jobs: Option<usize>) -> Result<usize, String> {
    match jobs {
        Some(j) if (1..=JOBS_MAX).contains(&j) => Ok(j),
        Some(j) => Err(format!(
            "--jobs: expected a whole number in 1..={JOBS_MAX}, got `{j}`"
        )),
        None => Ok(std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(JOBS_MAX)),
    }
}

/// Parses `--duration`: see [`parse_duration_flag`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_duration_flag("--duration", text)
}

/// Parses the wall-clock duration of the flag `flag`: `90s`, `10m`, `8h`, `2d`, more than 0
/// and at most 100 years ([`FUZZ_DURATION_S_MAX`]).
pub fn parse_duration_flag(flag: &str, text: &str) -> Result<Duration, String> {
    let shown = shopsim_sim::input::cut(text, 40);
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (n, unit) = trimmed.split_at(split);
    let expected = format!(
        "{flag}: expected a whole number and a unit (s, m, h or d), at most 100 years ({}d), got `{shown}`",
        FUZZ_DURATION_S_MAX / 86_400
    );
    let n: u64 = n.parse().map_err(|_| expected.clone())?;
    let per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(expected),
    };
    let seconds = n
        .checked_mul(per_unit)
        .filter(|s| *s <= FUZZ_DURATION_S_MAX)
        .ok_or_else(|| expected.clone())?;
    if seconds == 0 {
        return Err(format!("{flag}: must be longer than 0, got `{shown}`"));
    }
    Ok(Duration::from_secs(seconds))
}

/// Parses `--shard K/N`: `1 <= K <= N <= SHARDS_MAX`.
pub fn parse_shard(text: &str) -> Result<(u64, u64), String> {
    let err = || {
        format!(
            "--shard: expected K/N with 1 <= K <= N <= {SHARDS_MAX}, got `{}`",
            shopsim_sim::input::cut(text, 40)
        )
    };
    let (k, n) = text.split_once('/').ok_or_else(err)?;
    let (k, n): (u64, u64) = (
        k.trim().parse().map_err(|_| err())?,
        n.trim().parse().map_err(|_| err())?,
    );
    if k == 0 || k > n || n > SHARDS_MAX {
        return Err(err());
    }
    Ok((k, n))
}

/// Parses `--expect-hash`: a 64-bit trace hash in hexadecimal (`0x` optional), as `replay`
/// prints it.
pub fn parse_hash(text: &str) -> Result<u64, String> {
    let hex = text.trim();
    let hex = hex.strip_prefix("0x").unwrap_or(hex);
    let ok = !hex.is_empty() && hex.len() <= 16 && hex.chars().all(|c| c.is_ascii_hexdigit());
    ok.then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
        .ok_or_else(|| {
            format!(
                "--expect-hash: expected a trace hash of 1 to 16 hexadecimal digits, got `{}`",
                shopsim_sim::input::cut(text, 40)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_are_bounded() {
        assert_eq!(parse_duration("8h").unwrap(), Duration::from_secs(28_800));
        assert!(parse_duration("8x").unwrap_err().contains("`8x`"));
        // Before: 213503982334602 days overflowed a multiplication.
        assert!(parse_duration("213503982334602d")
            .unwrap_err()
            .starts_with("--duration: "));
        assert!(parse_duration("36600d").is_ok());
        assert!(parse_duration("36601d").is_err());
        assert!(parse_duration_flag("--status-interval", "0s")
            .unwrap_err()
            .starts_with("--status-interval: must be longer than 0"));
        assert_eq!(parse_shard("2/3").unwrap(), (2, 3));
        assert!(parse_shard("3/2").unwrap_err().contains("`3/2`"));
        // Before: a shard count this large overflowed the seed index.
        assert!(parse_shard("1/4611686018427387904").is_err());
        assert_eq!(parse_hash("0x00ff").unwrap(), 255);
        assert!(parse_hash("zz").unwrap_err().starts_with("--expect-hash: "));
        assert!(parse_hash("12345678901234567").is_err());
        assert!(parse_jobs(Some(0)).is_err());
        assert!(parse_jobs(Some(1 << 40)).unwrap_err().contains("--jobs"));
    }

    #[test]
    fn files_that_are_not_regular_or_too_long_are_refused() {
        let dir = std::env::temp_dir().join(format!("shopsim-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let zero = dir.join("zero.json");
        let _ = std::fs::remove_file(&zero);
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(read_text(&zero, 100)
            .unwrap_err()
            .contains("not a regular file"));
        let long = dir.join("long.toml");
        std::fs::write(&long, "x".repeat(101)).unwrap();
        assert!(read_text(&long, 100).unwrap_err().contains("limit of 100"));
        assert!(read_text(&dir, 100).unwrap_err().contains("directory"));
        let binary = dir.join("binary.toml");
        std::fs::write(&binary, [b'a', 0xff]).unwrap();
        assert!(read_text(&binary, 100).unwrap_err().contains("UTF-8"));
        std::fs::write(&long, "ok").unwrap();
        assert_eq!(read_text(&long, 100).unwrap(), "ok");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
