//! Private real servers: a PostgreSQL 15 or MariaDB 10.11 of our own in a temporary directory,
//! on loopback, on a free port, started and stopped by the code that needs it.
//!
//! Key invariant: a [`RealServer`] owns its processes. They run in a process group of their
//! own, and dropping the value (also while a test unwinds from a panic) stops the group and
//! removes the directory, so no server outlives its owner.
//!
//! PostgreSQL refuses to run as root, so as root both servers run as their packages' users
//! (`postgres`, `mysql`; `nobody` where those do not exist) and the directory is theirs.

use std::fmt;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The real engine family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EngineKind {
    /// PostgreSQL.
    Postgres,
    /// MariaDB with InnoDB.
    MariaDb,
}

impl EngineKind {
    /// The engine family of a simulated profile.
    pub fn of(profile: shopsim_sim::db::Profile) -> EngineKind {
        if profile.is_postgres() {
            EngineKind::Postgres
        } else {
            EngineKind::MariaDb
        }
    }

    /// A short name: `postgres`, `mariadb`.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Postgres => "postgres",
            EngineKind::MariaDb => "mariadb",
        }
    }
}

/// A server that could not be found, started or reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// The binary concerned (`initdb`, `postgres`, `mariadbd`, ...).
    pub binary: String,
    /// What went wrong, with what was tried.
    pub message: String,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.binary, self.message)
    }
}

impl std::error::Error for ServerError {}

fn server_error(binary: &str, message: impl Into<String>) -> ServerError {
    ServerError {
        binary: binary.to_string(),
        message: message.into(),
    }
}

/// A running private server.
pub struct RealServer {
    /// The engine.
    pub kind: EngineKind,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// The server's version string (`PostgreSQL 15.18 ...`, `10.11.19-MariaDB ...`).
    pub version: String,
    dir: PathBuf,
    child: Option<Child>,
    /// Stops the server if this process ends without dropping the value (killed, or the
    /// value lives in a static of a test binary, which Rust never drops).
    watchdog: Option<Child>,
    log: PathBuf,
}

impl fmt::Debug for RealServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RealServer({} on 127.0.0.1:{}, {})",
            self.kind.name(),
            self.port,
            self.dir.display()
        )
    }
}

/// Where binaries are looked for, in order: the override variable's directory, then the
/// distribution's places, then `PATH`.
fn find_binary(name: &str, env_dir: &str, places: &[&str]) -> Result<PathBuf, ServerError> {
    let mut tried = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(dir) = std::env::var(env_dir) {
        dirs.push(PathBuf::from(dir));
    }
    dirs.extend(places.iter().map(PathBuf::from));
    if let Ok(path) = std::env::var("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        tried.push(candidate.display().to_string());
    }
    Err(server_error(
        name,
        format!(
            "not found (tried {}; set {env_dir} to its directory, or install the engines with scripts/install-engines.sh)",
            tried.join(", ")
        ),
    ))
}

/// The user the server runs as: as root, the package's user (else `nobody`); otherwise the
/// current user (`None`: no change).
fn server_user(preferred: &str) -> Option<(u32, u32, String)> {
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok()?;
    if uid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for name in [preferred, "nobody"] {
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() >= 4 && fields[0] == name {
                if let (Ok(u), Ok(g)) = (fields[2].parse(), fields[3].parse()) {
                    return Some((u, g, name.to_string()));
                }
            }
        }
    }
    None
}

/// A free TCP port on loopback (bound and released; the server binds it right after).
fn free_port() -> Result<u16, ServerError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| server_error("tcp", format!("no free loopback port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| server_error("tcp", e.to_string()))
}

/// A fresh directory under the system's temporary directory, owned by `user`.
fn temp_dir(kind: EngineKind, user: &Option<(u32, u32, String)>) -> Result<PathBuf, ServerError> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "shopsim-{}-{}-{n}-{nanos}",
        kind.name(),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| server_error("mkdir", format!("{}: {e}", dir.display())))?;
    if let Some((uid, gid, _)) = user {
        std::os::unix::fs::chown(&dir, Some(*uid), Some(*gid))
            .map_err(|e| server_error("chown", format!("{}: {e}", dir.display())))?;
    }
    Ok(dir)
}

/// A command for `binary`, as `user`, in a process group of its own.
fn command(binary: &Path, user: &Option<(u32, u32, String)>) -> Command {
    let mut cmd = Command::new(binary);
    cmd.process_group(0).stdin(Stdio::null());
    if let Some((uid, gid, _)) = user {
        cmd.uid(*uid).gid(*gid);
    }
    cmd
}

/// Runs a setup command to its end; a failure names the binary and shows its output.
fn run_to_end(binary: &Path, mut cmd: Command, log: &Path) -> Result<(), ServerError> {
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let out = std::fs::File::create(log)
        .map_err(|e| server_error(&name, format!("log {}: {e}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(|e| server_error(&name, e.to_string()))?;
    let status =
        cmd.stdout(out).stderr(err).status().map_err(|e| {
            server_error(&name, format!("{} could not start: {e}", binary.display()))
        })?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(8).collect();
        return Err(server_error(
            &name,
            format!(
                "{} failed ({status}): {}",
                binary.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ),
        ));
    }
    Ok(())
}

impl RealServer {
    /// Starts a private server of `kind`.
    pub fn start(kind: EngineKind) -> Result<RealServer, ServerError> {
        match kind {
            EngineKind::Postgres => RealServer::start_postgres(),
            EngineKind::MariaDb => RealServer::start_mariadb(),
        }
    }

    /// The engine's binaries, found or a [`ServerError`] naming what was tried.
    pub fn check_binaries(kind: EngineKind) -> Result<(), ServerError> {
        match kind {
            EngineKind::Postgres => {
                find_binary("initdb", "SHOPSIM_PG_BIN", PG_PLACES)?;
                find_binary("postgres", "SHOPSIM_PG_BIN", PG_PLACES)?;
            }
            EngineKind::MariaDb => {
                find_binary("mariadb-install-db", "SHOPSIM_MARIADB_BIN", MARIA_PLACES)?;
                find_binary("mariadbd", "SHOPSIM_MARIADB_BIN", MARIA_PLACES)?;
            }
        }
        Ok(())
    }

    fn start_postgres() -> Result<RealServer, ServerError> {
        let initdb = find_binary("initdb", "SHOPSIM_PG_BIN", PG_PLACES)?;
        let postgres = find_binary("postgres", "SHOPSIM_PG_BIN", PG_PLACES)?;
        let user = server_user("postgres");
        let dir = temp_dir(EngineKind::Postgres, &user)?;
        let mut server = RealServer {
            kind: EngineKind::Postgres,
            port: 0,
            version: String::new(),
            log: dir.join("server.log"),
            dir: dir.clone(),
            child: None,
            watchdog: None,
        };
        let data = dir.join("data");
        let mut cmd = command(&initdb, &user);
        cmd.arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .arg("--locale=C");
        run_to_end(&initdb, cmd, &dir.join("initdb.log"))?;
        for _attempt in 0..3 {
            let port = free_port()?;
            let mut cmd = command(&postgres, &user);
            cmd.arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(&dir)
                .args(["-c", "listen_addresses=127.0.0.1"])
                // The data is thrown away at the end: no durability needed.
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
                .args(["-c", "log_lock_waits=on"])
                // An autovacuum worker truncating a table takes its ACCESS EXCLUSIVE lock: an
                // insert that meets it waits until the worker notices and backs off, a wait of
                // the server's own timing that the stepping protocol would report as blocked.
                // Tables are emptied between inputs anyway.
                .args(["-c", "autovacuum=off"]);
            if server.launch("postgres", &postgres, cmd, port)? {
                return Ok(server);
            }
        }
        Err(server_error("postgres", "no free port after 3 attempts"))
    }

    fn start_mariadb() -> Result<RealServer, ServerError> {
        let install = find_binary("mariadb-install-db", "SHOPSIM_MARIADB_BIN", MARIA_PLACES)?;
        let mariadbd = find_binary("mariadbd", "SHOPSIM_MARIADB_BIN", MARIA_PLACES)?;
        let user = server_user("mysql");
        let dir = temp_dir(EngineKind::MariaDb, &user)?;
        let mut server = RealServer {
            kind: EngineKind::MariaDb,
            port: 0,
            version: String::new(),
            log: dir.join("server.log"),
            dir: dir.clone(),
            child: None,
            watchdog: None,
        };
        let data = dir.join("data");
        let mut cmd = command(&install, &user);
        // --no-defaults must come first: no system my.cnf may change the private server.
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg("--skip-name-resolve");
        if let Some(dir) = mariadbd.parent() {
            cmd.arg(format!(
                "--basedir={}",
                dir.parent().unwrap_or(dir).display()
            ));
        }
        run_to_end(&install, cmd, &dir.join("install.log"))?;
        for _attempt in 0..3 {
            let port = free_port()?;
            let mut cmd = command(&mariadbd, &user);
            cmd.arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--socket={}", dir.join("sock").display()))
                .arg(format!("--pid-file={}", dir.join("pid").display()))
                .args(["--bind-address=127.0.0.1", &format!("--port={port}")])
                .args(["--skip-name-resolve", "--skip-log-bin"])
                .args(["--innodb-buffer-pool-size=64M", "--max-connections=200"])
                // The data is thrown away at the end: no durability needed.
                .args([
                    "--innodb-flush-log-at-trx-commit=0",
                    "--innodb-doublewrite=0",
                ])
                // Tables in the system tablespace: CREATE and DROP need no files.
                .arg("--innodb-file-per-table=0")
                .arg("--innodb-flush-method=nosync");
            if server.launch("mariadbd", &mariadbd, cmd, port)? {
                return Ok(server);
            }
        }
        Err(server_error("mariadbd", "no free port after 3 attempts"))
    }

    /// Spawns the server `cmd` on `port` with its output in the log and waits until it
    /// accepts connections. `Ok(false)`: another process took the port between choosing it
    /// and binding it (the server is stopped again; the caller tries another port).
    fn launch(
        &mut self,
        name: &str,
        binary: &Path,
        mut cmd: Command,
        port: u16,
    ) -> Result<bool, ServerError> {
        assert!(self.child.is_none(), "{name}: one server process at a time");
        let log =
            std::fs::File::create(&self.log).map_err(|e| server_error(name, e.to_string()))?;
        let err = log
            .try_clone()
            .map_err(|e| server_error(name, e.to_string()))?;
        let child = cmd.stdout(log).stderr(err).spawn().map_err(|e| {
            server_error(name, format!("{} could not start: {e}", binary.display()))
        })?;
        self.child = Some(child);
        self.port = port;
        self.watch();
        match self.wait_ready() {
            Ok(version) => {
                self.version = version;
                Ok(true)
            }
            Err(_) if self.log_says("Address already in use") => {
                self.stop();
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Starts the watchdog: a shell that polls this process every 0.5 s and, once it is gone,
    /// stops the server's process group and removes its directory.
    fn watch(&mut self) {
        let (Some(child), None) = (&self.child, &self.watchdog) else {
            return;
        };
        let pgid = child.id();
        let first = match self.kind {
            EngineKind::Postgres => "-QUIT",
            EngineKind::MariaDb => "-KILL",
        };
        let script = format!(
            "while kill -0 {owner} 2>/dev/null; do sleep 0.5; done; \
             kill {first} {pgid} 2>/dev/null; sleep 3; kill -KILL -- -{pgid} 2>/dev/null; \
             rm -rf '{dir}'",
            owner = std::process::id(),
            dir = self.dir.display()
        );
        self.watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
    }

    fn binary_name(&self) -> &'static str {
        match self.kind {
            EngineKind::Postgres => "postgres",
            EngineKind::MariaDb => "mariadbd",
        }
    }

    fn log_says(&self, text: &str) -> bool {
        let mut content = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut content);
        }
        content.contains(text)
    }

    fn log_tail(&self) -> String {
        let content = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = content.lines().rev().take(6).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// Waits until the server accepts a connection and answers, or its process exits, or 60 s
    /// pass. Returns the server's version.
    fn wait_ready(&mut self) -> Result<String, ServerError> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Err(server_error(
                    self.binary_name(),
                    format!("exited during start ({status}): {}", self.log_tail()),
                ));
            }
            if let Ok(version) = crate::session::server_version(self.kind, self.port) {
                return Ok(version);
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(server_error(
                    self.binary_name(),
                    format!(
                        "not ready after 60 s on port {}: {}",
                        self.port,
                        self.log_tail()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's temporary directory (removed when the value is dropped).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server process (the leader of its process group).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The exit status if the server process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Whether the server process still runs.
    pub fn is_alive(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }

    /// Describes why the server is gone, for a run that stops because of it.
    pub fn death_report(&mut self) -> String {
        match self.exited() {
            Some(status) => format!(
                "{} on port {} exited ({status}): {}",
                self.binary_name(),
                self.port,
                self.log_tail()
            ),
            None => format!("{} on port {} is running", self.binary_name(), self.port),
        }
    }

    /// Stops the server's process group: a fast shutdown request first, then SIGKILL.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = child.id() as i32;
        // SIGQUIT is PostgreSQL's immediate shutdown (it cleans up shared memory); MariaDB's
        // data is thrown away, so it is killed at once.
        let first = match self.kind {
            EngineKind::Postgres => "-QUIT",
            EngineKind::MariaDb => "-KILL",
        };
        let _ = Command::new("kill")
            .args([first, &pgid.to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left of the group (backends, helpers) goes too.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let _ = child.kill();
        let _ = child.wait();
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const PG_PLACES: &[&str] = &["/usr/lib/postgresql/15/bin", "/usr/local/pgsql/bin"];
const MARIA_PLACES: &[&str] = &["/usr/sbin", "/usr/bin", "/usr/local/mysql/bin"];

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary that is nowhere is an error naming it and every place that was tried.
    #[test]
    fn a_missing_binary_names_what_was_tried() {
        let err = find_binary(
            "no-such-server-binary",
            "SHOPSIM_TEST_NO_DIR",
            &["/nonexistent/bin"],
        )
        .unwrap_err();
        assert_eq!(err.binary, "no-such-server-binary");
        assert!(
            err.message
                .contains("/nonexistent/bin/no-such-server-binary"),
            "{err}"
        );
        assert!(err.message.contains("install-engines.sh"), "{err}");
    }
}
