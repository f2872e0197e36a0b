//! Finding PostgreSQL installations and running their programs as the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Majors CI must have: a missing one fails the test run when `CI=true`.
pub const CI_MAJORS: [u32; 6] = [13, 14, 15, 16, 17, 18];

/// One installed PostgreSQL major.
#[derive(Debug, Clone)]
pub struct PgInstall {
    /// Major version number.
    pub major: u32,
    /// Directory holding `initdb`, `pg_ctl`, `postgres` and whatever tools were installed.
    pub bindir: PathBuf,
    /// `postgres --version` output.
    pub version: String,
}

/// True when running under CI (`CI=true`).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl PgInstall {
    /// Finds major `major`, if installed.
    pub fn find(major: u32) -> Option<PgInstall> {
        let mut candidates = Vec::new();
        if let Ok(d) = std::env::var(format!("PTRACK_PG{major}_BINDIR")) {
            candidates.push(PathBuf::from(d));
        }
        candidates.push(workspace_root().join(".pg/bin").join(major.to_string()));
        candidates.push(PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")));
        for bindir in candidates {
            let postgres = bindir.join("postgres");
            if !postgres.is_file() {
                continue;
            }
            let Ok(out) = Command::new(&postgres).arg("--version").output() else {
                continue;
            };
            let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
            // "postgres (PostgreSQL) 15.20 (Debian ...)" -> 15
            let found = version
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.split('.').next())
                .and_then(|v| v.parse::<u32>().ok());
            if found == Some(major) {
                let bindir = bindir.canonicalize().unwrap_or(bindir);
                return Some(PgInstall {
                    major,
                    bindir,
                    version,
                });
            }
        }
        None
    }

    /// Every supported major that is installed, oldest first.
    pub fn available() -> Vec<PgInstall> {
        (13..=18).filter_map(PgInstall::find).collect()
    }

    /// Path of program `name` in this installation.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// Whether this installation has program `name` (a server-only build may lack the tools).
    pub fn has(&self, name: &str) -> bool {
        self.bin(name).is_file()
    }
}

/// Returns the installation of `major` for a test, or `None` (after a loud SKIPPED message) when
/// it is not installed. Under `CI=true` a missing major of [`CI_MAJORS`] panics: CI must run every
/// test.
pub fn require_pg(major: u32) -> Option<PgInstall> {
    if let Some(i) = PgInstall::find(major) {
        return Some(i);
    }
    let msg = format!(
        "PostgreSQL {major} is not installed (looked in $PTRACK_PG{major}_BINDIR, .pg/bin/{major}, /usr/lib/postgresql/{major}/bin); run scripts/setup"
    );
    if ci() && CI_MAJORS.contains(&major) {
        panic!("CI=true and {msg}");
    }
    eprintln!("\n*** SKIPPED: {msg} ***\n");
    None
}

/// Like [`require_pg`], and also requires the ptrack extension to be installed in that server
/// (`scripts/install-ext` builds and installs it; `scripts/test` runs it first).
pub fn require_ptrack(major: u32) -> Option<PgInstall> {
    let install = require_pg(major)?;
    let libdir = std::process::Command::new(install.bin("pg_config"))
        .arg("--pkglibdir")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let so = std::path::Path::new(&libdir).join("ptrack.so");
    if so.exists() {
        return Some(install);
    }
    let msg = format!(
        "the ptrack extension is not installed for PostgreSQL {major} ({} missing); run scripts/install-ext",
        so.display()
    );
    if ci() {
        panic!("CI=true and {msg}");
    }
    eprintln!("\n*** SKIPPED: {msg} ***\n");
    None
}

/// Like [`require_pg`], and for a major outside [`CI_MAJORS`] skips loudly even in CI.
pub fn optional_pg(major: u32) -> Option<PgInstall> {
    if CI_MAJORS.contains(&major) {
        return require_pg(major);
    }
    let found = PgInstall::find(major);
    if found.is_none() {
        eprintln!(
            "\n*** SKIPPED: optional PostgreSQL {major} is not installed (scripts/setup installs 13 to 18) ***\n"
        );
    }
    found
}

/// A command that runs `program` as the `postgres` user when we are root (PostgreSQL refuses
/// to run as root), or as ourselves otherwise.
pub fn run_as_postgres(program: &Path) -> Command {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let mut c = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    c.env("LC_ALL", "C").env("LANG", "C").env_remove("PGDATA");
    c
}
