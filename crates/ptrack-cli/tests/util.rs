//! Helpers shared by the integration tests: running the built `ptrack` binary and reading its
//! JSON report.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

thread_local! {
    /// Environment every `ptrack` this test thread runs gets (an S3 repository's endpoint and
    /// credentials): per thread, because tests run in parallel and each may have its own store.
    static ENV: std::cell::RefCell<Vec<(String, String)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Gives every `ptrack` this thread runs from now on the variables `vars`.
pub fn set_thread_env(vars: Vec<(String, String)>) {
    ENV.with(|e| *e.borrow_mut() = vars);
}

/// A command for the `ptrack` binary under test.
pub fn ptrack() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ptrack"));
    ENV.with(|e| {
        for (k, v) in e.borrow().iter() {
            c.env(k, v);
        }
    });
    c
}

/// Result of one `ptrack` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("bad JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr)
        })
    }

    /// Asserts the run never panicked (every failure must be a clean error).
    pub fn assert_no_panic(&self) {
        assert!(
            !self.stderr.contains("panicked") && self.code != 101,
            "ptrack panicked:\n{}",
            self.stderr
        );
    }
}

/// `ptrack <args>`.
pub fn run(args: &[&str]) -> Run {
    let r = Run::from_output(ptrack().args(args).output().expect("run ptrack"));
    r.assert_no_panic();
    r
}

/// `ptrack verify -D <dir> --json`.
pub fn verify_json(datadir: &Path) -> Run {
    run(&[
        "verify",
        "-D",
        &datadir.display().to_string(),
        "-j",
        "2",
        "--json",
    ])
}

/// (path, absolute block) of every damaged block in a verify JSON report.
pub fn damaged_set(report: &Value) -> BTreeSet<(String, u64)> {
    report["damaged"]
        .as_array()
        .expect("damaged array")
        .iter()
        .map(|d| {
            (
                d["path"].as_str().unwrap().to_string(),
                d["block"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Problem kinds reported for one block.
pub fn kinds_at(report: &Value, path: &str, block: u64) -> Vec<String> {
    report["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["path"] == path && d["block"] == block)
        .flat_map(|d| d["problems"].as_array().unwrap().clone())
        .map(|p| p["kind"].as_str().unwrap().to_string())
        .collect()
}

/// Block numbers of a relation segment file whose 8 KiB page is not all zeroes (written pages, as
/// opposed to pages a bulk extension added without WAL).
pub fn written_blocks(path: &Path) -> BTreeSet<u32> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .chunks(8192)
        .enumerate()
        .filter(|(_, p)| p.iter().any(|&b| b != 0))
        .map(|(i, _)| i as u32)
        .collect()
}

/// Decodes all WAL of `wal` from its first segment to the end, calling `f` for each record.
pub fn each_record(
    wal: &ptrack_wal::WalDir,
    f: &mut dyn FnMut(&ptrack_wal::Record),
) -> ptrack_wal::ScanEnd {
    ptrack_wal::scan_dir(
        wal,
        ptrack_wal::DecoderConfig::default(),
        None,
        None,
        f,
        &mut |_, _| {},
    )
    .expect("decode WAL")
}
