//! A throwaway PostgreSQL server for integration tests.
//!
//! Include it from a test binary with
//!
//! ```ignore
//! #[path = "common/pg.rs"]
//! mod pg;
//! ```
//!
//! `TestPostgres::start()` runs `initdb` into a fresh temp dir, starts `postgres` on a free
//! 127.0.0.1 port (trust auth, user `postgres`, fsync off) and waits until it accepts
//! connections. Dropping the value stops the server and removes the dir, also when the test
//! panics (the tail of the server log is printed to stderr first).
//!
//! Postgres refuses to run as root: when the tests run as root, `initdb` and `pg_ctl` are run
//! as the `postgres` OS user (the child process drops to its uid/gid, see
//! `CommandExt::uid`); otherwise they run as the current user.
//!
//! All methods block. Calling them from inside a `#[tokio::test]` is fine (they do not need the
//! test's runtime).
#![allow(dead_code)]

use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long to wait for the server to start or stop.
const TIMEOUT_SECS: u64 = 30;
/// Ports are picked here: below Linux's ephemeral range (32768-60999), so an outgoing
/// connection from some other process cannot take the port while the server is restarting.
const PORT_RANGE: std::ops::Range<u16> = 20000..32000;
/// Environment variables that could point the Postgres tools somewhere else.
const PG_ENV: &[&str] = &[
    "PGDATA",
    "PGPORT",
    "PGHOST",
    "PGHOSTADDR",
    "PGUSER",
    "PGDATABASE",
    "PGOPTIONS",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGPASSFILE",
    "PGSYSCONFDIR",
];

pub struct TestPostgres {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// `<root>/data`, the cluster.
    data_dir: PathBuf,
    /// `<root>/postgres.log`, written by the server.
    log_path: PathBuf,
    /// `<root>`: also the unix socket directory.
    root: PathBuf,
    pg_ctl: PathBuf,
    /// `Some((uid, gid))` of the `postgres` OS user when running as root.
    run_as: Option<(u32, u32)>,
    /// `fsync=off` unless started with `start_durable` (a benchmark of the durable path needs it on).
    fsync: bool,
    /// Removes `<root>` on drop (after the server has been stopped).
    _dir: tempfile::TempDir,
}

impl TestPostgres {
    /// Creates a cluster in a temp dir and starts a server on a free 127.0.0.1 port.
    ///
    /// Panics, with instructions, when the Postgres binaries or (when running as root) the
    /// `postgres` OS user cannot be found (`what_is_missing` says so beforehand), or when the
    /// server does not start within 30 s.
    pub fn start() -> TestPostgres {
        Self::start_with(false)
    }

    /// As `start`, with `fsync` on (every commit reaches the disk), as a production server runs.
    pub fn start_durable() -> TestPostgres {
        Self::start_with(true)
    }

    fn start_with(fsync: bool) -> TestPostgres {
        let bins = find_binaries().unwrap_or_else(|what| {
            panic!("\n\n==== TestPostgres: {what} ====\nInstall them: `{INSTALL}`.\n")
        });
        let run_as = postgres_user_if_root().unwrap_or_else(|what| {
            panic!("\n\n==== TestPostgres: {what} ====\nCreate it: `useradd -r -m postgres`.\n")
        });

        let dir = tempfile::Builder::new()
            .prefix("pgtest-")
            .tempdir_in(temp_base(run_as.is_some()))
            .unwrap_or_else(|e| panic!("TestPostgres: could not create a temp dir: {e}"));
        let root = dir.path().to_path_buf();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&root, Some(uid), Some(gid)).unwrap_or_else(|e| {
                panic!(
                    "TestPostgres: could not chown {} to the postgres user: {e}",
                    root.display()
                )
            });
        }
        let data_dir = root.join("data");
        let log_path = root.join("postgres.log");

        let started = Instant::now();
        let out = run(pg_command(&bins.initdb, run_as, &root)
            .arg("-D")
            .arg(&data_dir)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .arg("--locale=C"));
        if !out.status.success() {
            panic!(
                "\n\n==== TestPostgres: initdb failed ({}) ====\n{}\n{}\n",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        let mut pg = TestPostgres {
            port: 0,
            data_dir,
            log_path,
            root,
            pg_ctl: bins.pg_ctl,
            run_as,
            fsync,
            _dir: dir,
        };
        // The port was free when picked, but something else may bind it before the server
        // does: then pick another one.
        let mut last_error = String::new();
        for _ in 0..5 {
            pg.port = pick_port();
            match pg.try_start() {
                Ok(()) => {
                    eprintln!(
                        "TestPostgres: started on 127.0.0.1:{} in {:?} (data dir {})",
                        pg.port,
                        started.elapsed(),
                        pg.data_dir.display()
                    );
                    return pg;
                }
                Err(e) if e.contains("already in use") || e.contains("could not bind") => {
                    last_error = e;
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("{last_error}");
    }

    /// `postgres://postgres@127.0.0.1:{port}/{db}`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// `CREATE DATABASE "<name>"`. Panics on failure (e.g. the database already exists).
    pub fn create_database(&self, name: &str) {
        self.execute(
            "postgres",
            &format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\"")),
        );
    }

    /// Runs `sql` (one or more statements, simple query protocol) in database `db` on a fresh
    /// connection. Panics on failure.
    pub fn execute(&self, db: &str, sql: &str) {
        let url = self.url(db);
        let sql = sql.to_string();
        // A thread with its own runtime, so this works both from sync code and from inside a
        // runtime (where `block_on` would panic).
        let result = std::thread::spawn(move || -> Result<(), String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&url)
                    .await
                    .map_err(|e| format!("connect to {url}: {e}"))?;
                sqlx::raw_sql(&sql)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| format!("{sql}: {e}"))?;
                conn.close().await.map_err(|e| e.to_string())
            })
        })
        .join()
        .expect("TestPostgres::execute thread panicked");
        if let Err(e) = result {
            panic!("TestPostgres::execute: {e}\n{}", self.log_tail());
        }
    }

    /// Stops the server (`pg_ctl -m fast stop`: open sessions are terminated) and waits until
    /// it is down. Does nothing if it is not running. Panics if it does not stop in time.
    pub fn stop(&self) {
        if let Err(e) = self.try_stop("fast") {
            panic!("{e}");
        }
    }

    /// Stops the server and starts it again on the same port and data dir.
    pub fn restart(&self) {
        let began = Instant::now();
        self.stop();
        // The port stays ours unless something else grabs it in between: retry a little.
        let mut attempt = 0;
        loop {
            match self.try_start() {
                Ok(()) => break,
                Err(e) if attempt < 20 && e.contains("already in use") => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => panic!("{e}"),
            }
        }
        eprintln!(
            "TestPostgres: restarted on 127.0.0.1:{} in {:?}",
            self.port,
            began.elapsed()
        );
    }

    /// Whether the postmaster is running (its pid file exists).
    pub fn is_running(&self) -> bool {
        self.data_dir.join("postmaster.pid").exists()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last ~60 lines of the server log, headed with its path; for failure messages.
    pub fn log_tail(&self) -> String {
        const MAX_BYTES: u64 = 8192;
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)));
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        format!(
            "---- tail of {} ----\n{tail}\n---- end of postgres log ----",
            self.log_path.display()
        )
    }

    fn try_start(&self) -> Result<(), String> {
        // `MT_PG_OPTS`: more server options, e.g. `-c shared_preload_libraries=pg_stat_statements` to see
        // where a benchmark's database spends its time.
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' \
             -c fsync={} -c max_connections=200 {}",
            self.port,
            self.root.display(),
            if self.fsync { "on" } else { "off" },
            std::env::var("MT_PG_OPTS").unwrap_or_default(),
        );
        let out = run(pg_command(&self.pg_ctl, self.run_as, &self.root)
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-o")
            .arg(&opts)
            .arg("-l")
            .arg(&self.log_path)
            .args(["-w", "-t", &TIMEOUT_SECS.to_string(), "start"]));
        let failure = |what: &str| {
            format!(
                "\n\n==== TestPostgres: {what} (port {}) ====\npg_ctl: {}\n{}\n{}\n{}\n",
                self.port,
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim(),
                self.log_tail()
            )
        };
        if !out.status.success() {
            let message = failure("the server did not start");
            // A failed start can leave a half-started server behind (e.g. after a timeout).
            let _ = self.try_stop("immediate");
            return Err(message);
        }
        // pg_ctl -w returns once the server reports "ready"; check TCP as well.
        let deadline = Instant::now() + Duration::from_secs(TIMEOUT_SECS);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            if Instant::now() > deadline {
                return Err(failure("the server does not accept TCP connections"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn try_stop(&self, mode: &str) -> Result<(), String> {
        if !self.is_running() {
            return Ok(());
        }
        let out = run(pg_command(&self.pg_ctl, self.run_as, &self.root)
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", mode, "-w", "-t", &TIMEOUT_SECS.to_string(), "stop"]));
        if out.status.success() || !self.is_running() {
            Ok(())
        } else {
            Err(format!(
                "\n\n==== TestPostgres: pg_ctl -m {mode} stop failed ({}) ====\n{}\n{}\n{}\n",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim(),
                self.log_tail()
            ))
        }
    }

    /// Last resort: SIGKILL the postmaster named in the pid file.
    fn kill_postmaster(&self) {
        let pid = std::fs::read_to_string(self.data_dir.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if let Some(pid) = pid {
            let _ = Command::new("kill")
                .args(["-KILL", &pid])
                .stdin(Stdio::null())
                .output();
        }
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        // Never panic here: this also runs while a failing test unwinds.
        if std::thread::panicking() {
            eprintln!(
                "TestPostgres (127.0.0.1:{}): the test panicked\n{}",
                self.port,
                self.log_tail()
            );
        }
        if let Err(e) = self.try_stop("fast") {
            eprintln!("{e}");
            if let Err(e) = self.try_stop("immediate") {
                eprintln!("{e}");
                self.kill_postmaster();
            }
        }
        // `_dir` (a TempDir) removes the directory after this.
    }
}

struct Binaries {
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

/// Set, the only directory searched for `initdb`, `pg_ctl` and `postgres` (not PATH, not
/// /usr/lib/postgresql). Set to a directory without them (or to nothing) to hide the programs.
pub const BIN_DIR_VAR: &str = "MT_PG_BIN_DIR";
/// The command that installs the PostgreSQL server programs where the lookup finds them.
pub const INSTALL: &str = "sudo apt-get install postgresql";

/// `None` when `TestPostgres::start` can run here, else what is missing and how to get it.
pub fn what_is_missing() -> Option<(String, &'static str)> {
    if let Err(what) = find_binaries() {
        return Some((what, INSTALL));
    }
    if let Err(what) = postgres_user_if_root() {
        return Some((what, "sudo useradd -r -m postgres"));
    }
    None
}

/// `initdb` from PATH, else from the newest `/usr/lib/postgresql/*/bin`; `pg_ctl` and
/// `postgres` from the same directory as (the resolved) `initdb` when there, else from PATH.
/// With `MT_PG_BIN_DIR` set, from that directory only.
fn find_binaries() -> Result<Binaries, String> {
    let override_dir = std::env::var_os(BIN_DIR_VAR);
    let search: Vec<PathBuf> = match &override_dir {
        Some(dir) if dir.is_empty() => Vec::new(),
        Some(dir) => vec![PathBuf::from(dir)],
        None => {
            let mut lib_dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    let version = e.file_name().to_str()?.split('.').next()?.parse().ok()?;
                    Some((version, e.path().join("bin")))
                })
                .collect();
            lib_dirs.sort();
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .chain(lib_dirs.into_iter().rev().map(|(_, d)| d))
                .collect()
        }
    };
    let find = |name: &str, first: Option<&Path>| -> Option<PathBuf> {
        first
            .into_iter()
            .map(Path::to_path_buf)
            .chain(search.iter().cloned())
            .map(|d| d.join(name))
            .find(|p| is_executable(p))
    };
    let where_looked = match &override_dir {
        Some(dir) => format!("{BIN_DIR_VAR}={}", dir.to_string_lossy()),
        None => "PATH and /usr/lib/postgresql/*/bin".to_string(),
    };
    let initdb = find("initdb", None);
    let bin_dir = initdb
        .as_ref()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let pg_ctl = find("pg_ctl", bin_dir.as_deref());
    // pg_ctl starts the `postgres` next to it, but check here to say so before starting.
    let postgres = find("postgres", bin_dir.as_deref());
    match (initdb, pg_ctl, postgres) {
        (Some(initdb), Some(pg_ctl), Some(_)) => Ok(Binaries { initdb, pg_ctl }),
        (initdb, pg_ctl, postgres) => {
            let missing: Vec<&str> = [
                ("initdb", initdb),
                ("pg_ctl", pg_ctl),
                ("postgres", postgres),
            ]
            .into_iter()
            .filter(|(_, found)| found.is_none())
            .map(|(name, _)| name)
            .collect();
            Err(format!(
                "the PostgreSQL server programs {} are not in {where_looked}",
                missing.join(", ")
            ))
        }
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `Ok(Some((uid, gid)))` of the `postgres` user when running as root, `Ok(None)` otherwise;
/// `Err` as root without a `postgres` user (Postgres refuses to run as root).
fn postgres_user_if_root() -> Result<Option<(u32, u32)>, String> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    let me = id(&["-u"]).expect("TestPostgres: `id -u` failed");
    if me != 0 {
        return Ok(None);
    }
    match (id(&["-u", "postgres"]), id(&["-g", "postgres"])) {
        (Some(uid), Some(gid)) if uid != 0 => Ok(Some((uid, gid))),
        _ => Err(
            "the tests run as root, Postgres refuses to run as root, and there is no \
                  `postgres` OS user to run it as"
                .to_string(),
        ),
    }
}

/// The temp dir base. As root it must be reachable by the postgres user: if some ancestor of
/// `$TMPDIR` is not searchable by others, use /tmp.
fn temp_base(as_other_user: bool) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let base = std::env::temp_dir();
    if !as_other_user {
        return base;
    }
    let reachable = base.ancestors().all(|a| {
        std::fs::metadata(a)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    });
    if reachable {
        base
    } else {
        PathBuf::from("/tmp")
    }
}

/// A random port in `PORT_RANGE` that can be bound on 127.0.0.1 right now.
fn pick_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let span = u64::from(PORT_RANGE.end - PORT_RANGE.start);
    for _ in 0..200 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        let port = PORT_RANGE.start + (h.finish() % span) as u16;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("TestPostgres: no free port found in {PORT_RANGE:?} on 127.0.0.1");
}

/// A command for a Postgres tool: as the postgres user when `run_as` is set, in `cwd` (which
/// that user can enter), without PG* variables and with stdin closed.
fn pg_command(program: &Path, run_as: Option<(u32, u32)>, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(cwd).stdin(Stdio::null());
    for var in PG_ENV {
        cmd.env_remove(var);
    }
    if let Some((uid, gid)) = run_as {
        // std drops root's supplementary groups (setgroups(0)) before setuid.
        cmd.uid(uid).gid(gid).env("HOME", cwd);
    }
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("TestPostgres: could not run {:?}: {e}", cmd.get_program()))
}
