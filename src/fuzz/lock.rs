//! The lock on a campaign's `--out` folder: one campaign per folder at a time.
//!
//! An advisory lock (`flock` through std's `File::try_lock`) on `--out/.lock`, held for the
//! whole campaign. The operating system releases it when the process ends however it ends
//! (Ctrl-C, SIGKILL, a crashed pod), so a stale lock never blocks `--resume`. The file holds
//! who holds it (pid, host, start time, command line), which a refused campaign prints.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

/// The lock file's name inside `--out`.
pub const LOCK_FILE: &str = ".lock";
/// The most of a holder's description read back.
const HOLDER_BYTES_MAX: u64 = 4_096;

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct OutLock {
    _file: File,
}

/// Who holds the lock, as its file describes them (one line, `key=value` pairs).
fn describe_holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.take(HOLDER_BYTES_MAX).read_to_string(&mut text);
    let line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    if line.is_empty() {
        "a process that has not written its name yet".to_string()
    } else {
        crate::signature::truncate_chars(&line, 400)
    }
}

/// This process, described for the lock file.
fn holder_text() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let command: Vec<String> = std::env::args().collect();
    format!(
        "pid={}\nhost={host}\nstarted_unix_s={started_unix_s}\ncommand={}\n",
        std::process::id(),
        command.join(" ")
    )
}

impl OutLock {
    /// Takes the lock on `out`, or says who holds it.
    pub fn acquire(out: &Path) -> Result<OutLock, String> {
        let path = out.join(LOCK_FILE);
        // Not truncated on open: the holder's description must survive a refused attempt.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                format!(
                    "--out {}: cannot open {}: {e}",
                    out.display(),
                    path.display()
                )
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(format!(
                    "--out {}: another campaign is running in it ({}); wait for it to end, or give another --out",
                    out.display(),
                    describe_holder(&mut file)
                ))
            }
            Err(TryLockError::Error(e)) => {
                return Err(format!(
                    "--out {}: cannot lock {} ({e}); campaigns need a file system with advisory locks",
                    out.display(),
                    path.display()
                ))
            }
        }
        let text = holder_text();
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(text.as_bytes()))
            .and_then(|()| file.flush());
        if let Err(e) = written {
            return Err(format!(
                "--out {}: writing {}: {e}",
                out.display(),
                path.display()
            ));
        }
        Ok(OutLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_freed_on_drop() {
        let dir = std::env::temp_dir().join(format!("shopsim-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let held = OutLock::acquire(&dir).unwrap();
        let err = OutLock::acquire(&dir).unwrap_err();
        assert!(
            err.contains(&format!("pid={}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("another campaign is running"), "{err}");
        drop(held);
        let again = OutLock::acquire(&dir).expect("free after drop");
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
