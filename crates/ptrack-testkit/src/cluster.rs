//! `PgCluster`: a throwaway cluster in a private directory, run as the `postgres` user.
//!
//! Layout of the private directory (`$TMPDIR/ptrack-tk-<test pid>-<n>/`, owned by `postgres`):
//! `data/` (PGDATA), `sock/` (the only Unix socket directory), `server.log`. The server listens on
//! `127.0.0.1` and a free port picked by binding port 0. Drop stops the server immediately and
//! deletes the directory (set `PTRACK_KEEP_CLUSTERS=1` to keep it for a post-mortem). Directories
//! left by test processes that were killed outright are swept when the next cluster is created.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls, SimpleQueryMessage};

use crate::install::{PgInstall, run_as_postgres};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The line [`PgCluster::adopt`] starts its `postgresql.conf` addition with.
pub const ADOPTED_MARK: &str = "\n# adopted by ptrack-testkit";

/// How to stop a server (`pg_ctl stop -m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// `-m fast`: a shutdown checkpoint, pg_control says "shut down".
    Fast,
    /// `-m immediate`: no checkpoint, like a crash.
    Immediate,
}

/// How to create a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `initdb --data-checksums` (or, on PG18 where it is the default, `--no-data-checksums` when false).
    pub checksums: bool,
    /// Extra `postgresql.conf` settings, appended after ours.
    pub settings: Vec<(String, String)>,
}

impl ClusterConfig {
    /// Defaults with data checksums on or off.
    pub fn new(checksums: bool) -> ClusterConfig {
        ClusterConfig {
            checksums,
            settings: Vec::new(),
        }
    }

    /// Adds a `postgresql.conf` setting.
    pub fn set(mut self, name: &str, value: &str) -> ClusterConfig {
        self.settings.push((name.into(), value.into()));
        self
    }
}

/// A throwaway cluster.
#[derive(Debug)]
pub struct PgCluster {
    /// The installation it runs on.
    pub install: PgInstall,
    base: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    port: u16,
    running: bool,
}

fn check(what: &str, out: std::io::Result<Output>) -> Output {
    let out = out.unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Parses PostgreSQL's `X/X` LSN text into a number (0 for anything else, such as NULL).
fn parse_lsn(s: &str) -> u64 {
    s.split_once('/')
        .and_then(|(h, l)| {
            Some((u64::from_str_radix(h, 16).ok()? << 32) | u64::from_str_radix(l, 16).ok()?)
        })
        .unwrap_or(0)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("find a free loopback port: {e}"))
}

fn chown_postgres(path: &Path) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        check(
            &format!("chown postgres {}", path.display()),
            Command::new("chown").arg("postgres:").arg(path).output(),
        );
    }
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// A new private directory `<tmp>/ptrack-tk-<pid>-<n>` with a `sock/` inside, both owned by
/// `postgres`.
fn new_base_dir(tmp: &Path) -> PathBuf {
    let base = tmp.join(format!(
        "ptrack-tk-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(base.join("sock"))
        .unwrap_or_else(|e| panic!("create {}: {e}", base.display()));
    chown_postgres(&base);
    chown_postgres(&base.join("sock"));
    base
}

/// Stops servers and removes directories left by test processes that no longer exist.
fn sweep_orphans(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix("ptrack-tk-") else {
            continue;
        };
        let Some(owner) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid_alive(owner) {
            continue;
        }
        if let Ok(pidfile) = std::fs::read_to_string(e.path().join("data/postmaster.pid"))
            && let Some(pm) = pidfile
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<i32>().ok())
        {
            // SAFETY: SIGQUIT asks the postmaster for an immediate shutdown.
            unsafe { libc::kill(pm, libc::SIGQUIT) };
        }
        let _ = std::fs::remove_dir_all(e.path());
    }
}

impl PgCluster {
    /// `initdb` a new cluster (not started) with data checksums on or off.
    pub fn init(install: &PgInstall, checksums: bool) -> PgCluster {
        PgCluster::init_with(install, &ClusterConfig::new(checksums))
    }

    /// `initdb` a new cluster (not started) with `cfg`.
    pub fn init_with(install: &PgInstall, cfg: &ClusterConfig) -> PgCluster {
        let tmp = std::env::temp_dir();
        sweep_orphans(&tmp);
        let base = new_base_dir(&tmp);
        let data = base.join("data");
        let mut initdb = run_as_postgres(&install.bin("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--locale=C",
            "-E",
            "UTF8",
        ]);
        if cfg.checksums {
            initdb.arg("--data-checksums");
        } else if install.major >= 18 {
            initdb.arg("--no-data-checksums");
        }
        check(&format!("initdb (PG{})", install.major), initdb.output());
        let mut conf = String::from(
            "\n# ptrack-testkit\nlisten_addresses = '127.0.0.1'\nfsync = off\nautovacuum = off\n\
             max_connections = 30\nshared_buffers = 32MB\nlog_min_messages = warning\n\
             checkpoint_timeout = 1h\nmax_wal_size = 1GB\n",
        );
        conf.push_str(&format!(
            "unix_socket_directories = '{}'\n",
            base.join("sock").display()
        ));
        for (k, v) in &cfg.settings {
            conf.push_str(&format!("{k} = '{v}'\n"));
        }
        PgCluster::at(install, base, &conf)
    }

    /// A streaming standby of the running `primary`, made with `pg_basebackup -R -X stream`
    /// (checksums verified) into a private directory of its own (not started). Its socket
    /// directory and port are its own.
    pub fn standby_of(primary: &PgCluster) -> PgCluster {
        assert!(primary.running, "primary must be running");
        let base = new_base_dir(&std::env::temp_dir());
        let data = base.join("data");
        primary.run_tool(
            "pg_basebackup",
            &[
                "-D",
                &data.display().to_string(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        );
        let conf = format!(
            "\n# standby\nunix_socket_directories = '{}'\n",
            base.join("sock").display()
        );
        PgCluster::at(&primary.install, base, &conf)
    }

    /// The (stopped) cluster whose private directory is `base`, after appending `conf` to its
    /// `postgresql.conf`.
    fn at(install: &PgInstall, base: PathBuf, conf: &str) -> PgCluster {
        let data = base.join("data");
        let conf_path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path)
            .unwrap_or_else(|e| panic!("read {}: {e}", conf_path.display()));
        text.push_str(conf);
        std::fs::write(&conf_path, text)
            .unwrap_or_else(|e| panic!("write {}: {e}", conf_path.display()));
        PgCluster {
            install: install.clone(),
            log: base.join("server.log"),
            sock: base.join("sock"),
            data,
            base,
            port: 0,
            running: false,
        }
    }

    /// A new private directory (owned by `postgres`) for a data directory a test creates itself,
    /// such as a restore target: restore into `<dir>/data`, then [`PgCluster::adopt`].
    pub fn new_cluster_dir() -> PathBuf {
        new_base_dir(&std::env::temp_dir())
    }

    /// Takes over `<base>/data` (made by a restore): everything under `base` and `extra` (for
    /// example tablespace directories) is handed to `postgres`, and the server gets its own
    /// socket directory. Not started.
    pub fn adopt(install: &PgInstall, base: PathBuf, extra: &[&Path]) -> PgCluster {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            for p in std::iter::once(base.as_path()).chain(extra.iter().copied()) {
                check(
                    &format!("chown -R postgres {}", p.display()),
                    Command::new("chown")
                        .arg("-R")
                        .arg("postgres:")
                        .arg(p)
                        .output(),
                );
            }
        }
        let conf = format!(
            "{ADOPTED_MARK}\nunix_socket_directories = '{}'\n",
            base.join("sock").display()
        );
        PgCluster::at(install, base, &conf)
    }

    /// The private directory holding `data/`, `sock/` and the log.
    pub fn base_dir(&self) -> &Path {
        &self.base
    }

    /// `initdb` and start.
    pub fn start_new(install: &PgInstall, checksums: bool) -> PgCluster {
        let mut c = PgCluster::init(install, checksums);
        c.start();
        c
    }

    /// The data directory.
    pub fn datadir(&self) -> &Path {
        &self.data
    }

    /// The Unix socket directory.
    pub fn socket_dir(&self) -> &Path {
        &self.sock
    }

    /// The TCP port (valid while running).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server is running.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts the server and waits until it accepts connections. Retries on another port when the
    /// chosen one was taken in the meantime.
    pub fn start(&mut self) {
        if let Err(e) = self.try_start() {
            panic!("pg_ctl start (PG{}) failed:\n{e}", self.install.major);
        }
    }

    /// Like [`PgCluster::start`], but returns pg_ctl's output and the server log when the server
    /// does not start (tests of settings that must refuse to start).
    pub fn try_start(&mut self) -> Result<(), String> {
        assert!(!self.running, "server already running");
        let mut last = String::new();
        for _ in 0..5 {
            self.port = free_port();
            let out = run_as_postgres(&self.install.bin("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(&self.log)
                .args(["-w", "-t", "120", "-o"])
                .arg(format!("-p {}", self.port))
                .arg("start")
                .output()
                .unwrap_or_else(|e| panic!("run pg_ctl: {e}"));
            if out.status.success() {
                self.running = true;
                return Ok(());
            }
            last = format!(
                "{}{}\n--- server log ---\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
            if !last.contains("Address already in use") {
                break;
            }
        }
        Err(last)
    }

    /// Appends settings to `postgresql.conf` (later lines win); they apply at the next start.
    pub fn append_conf(&self, settings: &[(&str, &str)]) {
        let conf_path = self.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path)
            .unwrap_or_else(|e| panic!("read {}: {e}", conf_path.display()));
        for (k, v) in settings {
            text.push_str(&format!("{k} = '{v}'\n"));
        }
        std::fs::write(&conf_path, text)
            .unwrap_or_else(|e| panic!("write {}: {e}", conf_path.display()));
    }

    /// Stops (fast) and starts again.
    pub fn restart(&mut self) {
        self.stop(StopMode::Fast);
        self.start();
    }

    /// The postmaster's PID (from `postmaster.pid`), while running.
    pub fn postmaster_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// PIDs of the postmaster's children whose process title contains `title` (for example a
    /// background worker's type), read from `/proc`.
    pub fn child_pids(&self, title: &str) -> Vec<i32> {
        let Some(pm) = self.postmaster_pid() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid ...: the fields after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if ppid == Some(pm) && String::from_utf8_lossy(&cmd).contains(title) {
                out.push(pid);
            }
        }
        out
    }

    /// Stops the server.
    pub fn stop(&mut self, mode: StopMode) {
        if !self.running {
            return;
        }
        let m = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        check(
            &format!("pg_ctl stop -m {m}"),
            run_as_postgres(&self.install.bin("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-w", "-t", "120", "-m", m, "stop"])
                .output(),
        );
        self.running = false;
    }

    /// Opens a connection to database `db`.
    pub fn connect_db(&self, db: &str) -> Client {
        assert!(self.running, "server not running");
        let mut cfg = postgres::Config::new();
        cfg.host_path(&self.sock)
            .port(self.port)
            .user("postgres")
            .dbname(db)
            .application_name("ptrack-testkit");
        cfg.connect(NoTls)
            .unwrap_or_else(|e| panic!("connect to PG{} db {db}: {e}", self.install.major))
    }

    /// Opens a connection to database `postgres`.
    pub fn connect(&self) -> Client {
        self.connect_db("postgres")
    }

    /// Runs SQL (one or more statements) in database `postgres` and returns every row of the last
    /// statement's result as text (NULL as empty).
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        self.query_db("postgres", sql)
    }

    /// Like [`PgCluster::query`] in database `db`.
    pub fn query_db(&self, db: &str, sql: &str) -> Vec<Vec<String>> {
        let msgs = self
            .connect_db(db)
            .simple_query(sql)
            .unwrap_or_else(|e| panic!("SQL failed on PG{}: {sql}\n{e:?}", self.install.major));
        let mut rows = Vec::new();
        for m in msgs {
            match m {
                SimpleQueryMessage::Row(r) => rows.push(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("").to_string())
                        .collect(),
                ),
                SimpleQueryMessage::CommandComplete(_) => {}
                _ => {}
            }
        }
        rows
    }

    /// The first column of the first row of `sql`.
    pub fn query_one(&self, sql: &str) -> String {
        self.query(sql)
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .unwrap_or_else(|| panic!("no rows from {sql}"))
    }

    /// Runs SQL in database `db` and returns the rows of the last statement (or the server's
    /// error message) together with every notice and warning the server sent.
    pub fn sql_with_notices(
        &self,
        db: &str,
        sql: &str,
    ) -> (Result<Vec<Vec<String>>, String>, Vec<String>) {
        assert!(self.running, "server not running");
        let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = notices.clone();
        let mut cfg = postgres::Config::new();
        cfg.host_path(&self.sock)
            .port(self.port)
            .user("postgres")
            .dbname(db)
            .notice_callback(move |n| {
                if let Ok(mut v) = sink.lock() {
                    v.push(format!("{}:  {}", n.severity(), n.message()));
                }
            });
        let mut client = cfg
            .connect(NoTls)
            .unwrap_or_else(|e| panic!("connect to PG{} db {db}: {e}", self.install.major));
        let result = client
            .simple_query(sql)
            .map(|msgs| {
                msgs.into_iter()
                    .filter_map(|m| match m {
                        SimpleQueryMessage::Row(r) => Some(
                            (0..r.len())
                                .map(|i| r.get(i).unwrap_or("").to_string())
                                .collect(),
                        ),
                        _ => None,
                    })
                    .collect()
            })
            .map_err(|e| {
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_string())
            });
        drop(client);
        let notices = notices.lock().map(|v| v.clone()).unwrap_or_default();
        (result, notices)
    }

    /// Runs SQL for its effect in database `db`.
    pub fn execute_db(&self, db: &str, sql: &str) {
        self.query_db(db, sql);
    }

    /// Runs SQL for its effect in database `postgres`.
    pub fn execute(&self, sql: &str) {
        self.query(sql);
    }

    /// `CREATE DATABASE name` with `extra` (e.g. `OID 20000`) and, from 15, `STRATEGY strategy`
    /// (`file_copy` or `wal_log`). Before 15 every database is created by file copy, which
    /// writes no page to WAL: the harder case for tracking.
    pub fn create_database(&self, name: &str, strategy: &str, extra: &str) {
        let strategy = if self.install.major >= 15 {
            format!("STRATEGY {strategy}")
        } else {
            String::new()
        };
        self.execute(&format!("CREATE DATABASE {name} {extra} {strategy}"));
    }

    /// Runs SQL in database `db` and returns the server's error text instead of panicking.
    pub fn try_execute_db(&self, db: &str, sql: &str) -> Result<(), String> {
        self.connect_db(db).batch_execute(sql).map_err(|e| {
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_string())
        })
    }

    /// A new empty directory owned by `postgres` next to the data directory, for
    /// `CREATE TABLESPACE … LOCATION`.
    pub fn new_tablespace_dir(&self, name: &str) -> PathBuf {
        let d = self.base.join(format!("ts_{name}"));
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
        chown_postgres(&d);
        d
    }

    /// Waits until the LSN returned by `sql` reaches `target`, polling the server (a condition,
    /// not a fixed sleep), and panics with `what` after `timeout`.
    pub fn wait_for_lsn(&self, sql: &str, target: &str, what: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let target = parse_lsn(target);
        loop {
            let now = self.query_one(sql);
            if parse_lsn(&now) >= target {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what} stuck at {now}, target {target:X}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `pg_relation_filepath(rel)`: the PGDATA-relative path of a relation's main fork.
    pub fn relation_path(&self, db: &str, rel: &str) -> String {
        self.query_db(db, &format!("SELECT pg_relation_filepath('{rel}')"))
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .unwrap_or_else(|| panic!("no file path for {rel}"))
    }

    /// A command for one of this installation's client programs (pgbench, pg_checksums, …),
    /// run as `postgres`, with the connection environment set to this cluster.
    pub fn tool(&self, name: &str) -> Command {
        let mut c = run_as_postgres(&self.install.bin(name));
        c.env("PGHOST", &self.sock)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGDATABASE", "postgres");
        c
    }

    /// Runs a client program to completion; panics with its output if it fails.
    pub fn run_tool(&self, name: &str, args: &[&str]) -> Output {
        check(name, self.tool(name).args(args).output())
    }

    /// `pgbench -i -s scale -q` in database `postgres`.
    pub fn pgbench_init(&self, scale: u32) {
        self.run_tool(
            "pgbench",
            &["-i", "-q", "-s", &scale.to_string(), "postgres"],
        );
    }

    /// Starts `pgbench` in the background with `args` (e.g. `-T 60 -c 2`); the caller waits or
    /// kills it.
    pub fn pgbench_spawn(&self, args: &[&str]) -> Child {
        self.tool("pgbench")
            .args(args)
            .arg("postgres")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn pgbench: {e}"))
    }

    /// Stops a pgbench started by [`PgCluster::pgbench_spawn`]: killing the child would only
    /// kill `runuser`, so its sessions are terminated on the server until pgbench exits
    /// (bounded: 60 s).
    pub fn pgbench_stop(&self, bench: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgbench'",
            );
            if bench.try_wait().expect("wait for pgbench").is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "pgbench did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = self
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'");
        assert_eq!(left, "0", "pgbench sessions left");
    }

    /// `pg_controldata -D data` as a map of its `Key: value` lines.
    pub fn controldata(&self) -> BTreeMap<String, String> {
        let out = self.run_tool("pg_controldata", &["-D", &self.data.display().to_string()]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let stopped = run_as_postgres(&self.install.bin("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-w", "-t", "60", "-m", "immediate", "stop"])
                .output()
                .is_ok_and(|o| o.status.success());
            if !stopped
                && let Ok(pidfile) = std::fs::read_to_string(self.data.join("postmaster.pid"))
                && let Some(pm) = pidfile
                    .lines()
                    .next()
                    .and_then(|l| l.trim().parse::<i32>().ok())
            {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pm, libc::SIGKILL) };
            }
        }
        if std::env::var("PTRACK_KEEP_CLUSTERS").is_ok_and(|v| v == "1") {
            eprintln!("keeping cluster directory {}", self.base.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }
}
