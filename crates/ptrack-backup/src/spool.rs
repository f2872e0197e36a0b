//! Asynchronous `archive-push` and `archive-get` prefetch (issue 13 §1; pgBackRest's
//! `archive-async` is the model): a spool directory shared by the processes PostgreSQL starts
//! for `archive_command` and `restore_command` and one background worker process each.
//!
//! **Push.** The archiver runs `archive-push --async` for its oldest `.ready` file. That process
//! (the foreground, [`await_pushed`]) only looks for the file's marker in `out/`: `<name>.ok`
//! once the pusher stored the file durably, `<name>.error` when it could not. It starts the
//! pusher when none runs (`push.lock` is free) and waits, at most its timeout. The pusher
//! ([`run_pusher`]) lists `pg_wal/archive_status/*.ready` in the archiver's order (history files
//! first, then by name), pushes a batch ahead with `jobs` threads, writes each file's marker as
//! soon as it is stored, and exits when nothing is left or after a failure: the foreground
//! reports it, PostgreSQL retries, the retry starts a new pusher (the archiver's own backoff).
//! An attempt ignores an error marker left by an earlier one: its outcome is its own.
//!
//! **What is guaranteed.** `archive-push --async` exits 0 only for a file whose `.ok` marker the
//! pusher wrote after the repository returned it durable, and whose identity (device, inode,
//! size, modification time) is that of the file the pusher read, before and after reading it:
//! a stale marker (a spool reused by another cluster, a file re-created) is never taken for
//! success. When the repository is unreachable every call fails with the pusher's error and
//! the backlog (`.ready` files, so `pg_wal`) grows exactly as with a synchronous
//! `archive_command`; nothing is dropped, and [`backlog`] above the queue bound is printed as a
//! warning into the server's log on every call. Killed at any point, the pusher leaves at
//! most a stored file without a marker (pushed again: an identical file is success) or a
//! `.tmp` (removed by the next pusher).
//!
//! **Prefetch.** `archive-get --prefetch N` keeps its files in `in/` and the `get.lock` of this
//! spool; the prefetching itself is `crate::prefetch`'s.
//!
//! Mirrors `src/backend/postmaster/pgarch.c` (`.ready`/`.done`, the order of files, retries)
//! and `src/backend/access/transam/xlogarchive.c` (what `%p` and `%f` are).

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use ptrack_format::archived::WalFile;
use ptrack_format::repo::Repository;
use ptrack_format::stored::Compression;

use crate::archive::{control, instance_for, push_to};
use crate::{Error, Refusal, Result, parallel};

/// A spool directory (0700): `out/` markers of pushed files, `in/` prefetched files, the
/// workers' locks and logs.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
}

/// Which background worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    /// The asynchronous pusher of `archive-push`.
    Push,
    /// The prefetcher of `archive-get`.
    Get,
}

impl Worker {
    fn name(self) -> &'static str {
        match self {
            Worker::Push => "push",
            Worker::Get => "get",
        }
    }
}

impl Spool {
    /// Opens (creating) the spool at `root`.
    pub fn open(root: &Path) -> Result<Spool> {
        for d in [root.to_path_buf(), root.join("out"), root.join("in")] {
            ptrack_durable::create_private_dir(&d).map_err(|e| Error::io(&d, "create", e))?;
        }
        Ok(Spool {
            root: root.to_path_buf(),
        })
    }

    /// Opens (creating) the spool at `root` for the cluster in `pgdata`: refused inside the
    /// data directory (a base backup would copy it, and its locks and markers are this host's
    /// runtime state, not the cluster's).
    pub fn open_for(root: &Path, pgdata: &Path) -> Result<Spool> {
        // Resolved through links; a spool not made yet through its parent's.
        let abs = |p: &Path| {
            let a = std::path::absolute(p).map_err(|e| Error::io(p, "resolve", e))?;
            let via_parent = || {
                let (parent, name) = (a.parent()?, a.file_name()?);
                Some(parent.canonicalize().ok()?.join(name))
            };
            Ok::<_, Error>(a.canonicalize().ok().or_else(via_parent).unwrap_or(a))
        };
        let (r, d) = (abs(root)?, abs(pgdata)?);
        if r.starts_with(&d) {
            return Err(Refusal::SpoolInDataDir {
                spool: root.display().to_string(),
                pgdata: pgdata.display().to_string(),
            }
            .into());
        }
        let spool = Spool::open(root)?;
        spool.claim(&d)?;
        Ok(spool)
    }

    /// Records `pgdata` as the spool's cluster (`<spool>/cluster`), or refuses when it is
    /// another's: one pusher per spool scans one data directory, so a shared spool would
    /// starve the other cluster's files, and their markers would be confused.
    fn claim(&self, pgdata: &Path) -> Result<()> {
        let p = self.root.join("cluster");
        let want = pgdata.display().to_string();
        match read_if_there(&p)? {
            Some(b) if b == want.as_bytes() => Ok(()),
            Some(b) => Err(Refusal::SpoolOfAnotherCluster {
                spool: self.root.display().to_string(),
                other: String::from_utf8_lossy(&b).into_owned(),
                pgdata: want,
            }
            .into()),
            None => self.write(&p, want.as_bytes()),
        }
    }

    /// Where `archive-get --prefetch` keeps the files it fetched ahead.
    pub(crate) fn prefetched(&self) -> PathBuf {
        self.root.join("in")
    }

    /// Where worker `w` logs (its standard output and error).
    pub fn log(&self, w: Worker) -> PathBuf {
        self.root.join(format!("{}.log", w.name()))
    }

    fn lock_path(&self, w: Worker) -> PathBuf {
        self.root.join(format!("{}.lock", w.name()))
    }

    /// The lock of worker `w`, when no other process holds it.
    pub(crate) fn try_lock(&self, w: Worker) -> Result<Option<File>> {
        let p = self.lock_path(w);
        ptrack_durable::try_lock_file(&p).map_err(|e| Error::io(&p, "lock", e))
    }

    /// Whether a worker `w` runs (holds its lock).
    pub fn running(&self, w: Worker) -> Result<bool> {
        Ok(self.try_lock(w)?.is_none())
    }

    fn marker(&self, name: &str, ok: bool) -> PathBuf {
        let ext = if ok { "ok" } else { "error" };
        self.root.join("out").join(format!("{name}.{ext}"))
    }

    fn has_marker(&self, name: &str) -> bool {
        self.marker(name, true).exists() || self.marker(name, false).exists()
    }

    pub(crate) fn write(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        ptrack_durable::write_file(path, bytes).map_err(|e| Error::io(path, "write", e))
    }

    /// Takes (removes) the marker of `name`, whose file is at `path`: `Some(Ok)` for a valid
    /// `.ok` of this repository and this very file, `Some(Err(message))` for an `.error`.
    fn take_marker(
        &self,
        name: &str,
        path: &Path,
        repository: &str,
    ) -> Result<Option<std::result::Result<(), String>>> {
        let ok = self.marker(name, true);
        if let Some(b) = read_if_there(&ok)? {
            remove(&ok)?;
            let done: Option<Done> = serde_json::from_slice(&b).ok();
            let now = Identity::of(path).map_err(|e| Error::io(path, "stat", e))?;
            if done.is_some_and(|d| d.repository == repository && d.identity == now) {
                return Ok(Some(Ok(())));
            }
            // Stale: the pusher pushes the file again.
        }
        let err = self.marker(name, false);
        if let Some(b) = read_if_there(&err)? {
            remove(&err)?;
            return Ok(Some(Err(String::from_utf8_lossy(&b).into_owned())));
        }
        Ok(None)
    }

    /// Removes the markers and leftovers of files no longer waiting (`ready`).
    fn forget_markers(&self, ready: &BTreeSet<String>) -> Result<()> {
        let out = self.root.join("out");
        for n in list_names(&out)? {
            let base = n
                .strip_suffix(".ok")
                .or_else(|| n.strip_suffix(".error"))
                .filter(|b| ready.contains(*b));
            if base.is_none() {
                remove(&out.join(&n))?;
            }
        }
        Ok(())
    }
}

pub(crate) fn read_if_there(p: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(p) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(p, "read", e)),
    }
}

pub(crate) fn remove(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(p, "remove", e)),
        _ => Ok(()),
    }
}

pub(crate) fn list_names(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "list", e))?;
    let mut v = Vec::new();
    for e in rd {
        let e = e.map_err(|e| Error::io(dir, "list", e))?;
        if let Some(n) = e.file_name().to_str() {
            v.push(n.to_string());
        }
    }
    Ok(v)
}

/// What tells one file in `pg_wal` from another of the same name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl Identity {
    fn of(path: &Path) -> io::Result<Identity> {
        let m = std::fs::metadata(path)?;
        Ok(Identity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

/// An `.ok` marker: the file, as read, is durable in `repository`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Done {
    repository: String,
    identity: Identity,
}

/// How a foreground `archive-push --async` ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited {
    /// The file is durable in the repository.
    Archived,
    /// The pusher could not store it: its message.
    Failed(String),
    /// No marker within the timeout.
    TimedOut,
}

/// The files waiting for the archiver (`.ready`), in its order: history files first, then by
/// name (`pgarch.c: pgarch_readyXlog`).
pub fn ready_files(pgdata: &Path) -> Result<Vec<String>> {
    let dir = pgdata.join("pg_wal").join("archive_status");
    let mut v: Vec<String> = list_names(&dir)?
        .into_iter()
        .filter_map(|n| n.strip_suffix(".ready").map(str::to_string))
        .filter(|n| WalFile::parse(n).is_some())
        .collect();
    v.sort_by_key(|n| (!n.ends_with(".history"), n.clone()));
    Ok(v)
}

/// How many files wait for the archiver and the oldest of them.
pub fn backlog(pgdata: &Path) -> Result<(usize, Option<String>)> {
    let r = ready_files(pgdata)?;
    let oldest = r.iter().find(|n| !n.ends_with(".history")).cloned();
    Ok((r.len(), oldest))
}

/// The foreground of `archive-push --async` for the file at `path` (`%p`) of a cluster
/// archiving into `repository` (its address): waits for its marker, starting the pusher with
/// `start` whenever none runs, up to `timeout`.
pub fn await_pushed(
    spool: &Spool,
    path: &Path,
    repository: &str,
    timeout: Duration,
    start: &mut dyn FnMut() -> Result<Child>,
) -> Result<Waited> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| WalFile::parse(n).is_some())
        .ok_or_else(|| Refusal::NotAWalName(path.display().to_string()))?;
    // An error marker already there is an earlier attempt's (a batch fails as a whole when the
    // repository is away): this attempt pushes the file again and waits for its own outcome.
    remove(&spool.marker(name, false))?;
    let deadline = Instant::now() + timeout;
    let mut child: Option<Child> = None;
    let mut starts = 0;
    let mut poll = Duration::from_millis(1);
    loop {
        match spool.take_marker(name, path, repository)? {
            Some(Ok(())) => return Ok(Waited::Archived),
            Some(Err(m)) => return Ok(Waited::Failed(m)),
            None => {}
        }
        let ours_alive = match child.as_mut() {
            Some(c) => c
                .try_wait()
                .map_err(|e| Error::io(path, "wait", e))?
                .is_none(),
            None => false,
        };
        if !ours_alive && !spool.running(Worker::Push)? {
            if starts == 3 {
                return Ok(Waited::Failed(format!(
                    "the asynchronous pusher exited {starts} times without archiving {name}: see \"{}\"",
                    spool.log(Worker::Push).display()
                )));
            }
            child = Some(start()?);
            starts += 1;
        }
        if Instant::now() >= deadline {
            return Ok(Waited::TimedOut);
        }
        std::thread::sleep(poll);
        poll = (poll * 2).min(Duration::from_millis(20));
    }
}

/// Where a background worker works: its spool, the cluster, the repository, its threads.
#[derive(Debug, Clone)]
pub struct Site<'a> {
    /// Its spool.
    pub spool: &'a Spool,
    /// The cluster's data directory.
    pub pgdata: &'a Path,
    /// The repository's address, as markers and prefetch directories name it.
    pub repository: &'a str,
    /// Threads.
    pub jobs: usize,
}

/// What a pusher is told.
#[derive(Debug, Clone)]
pub struct Pusher<'a> {
    /// Where.
    pub site: Site<'a>,
    /// Compression of archived files.
    pub compression: Compression,
    /// Files taken per pass (pushed ahead of the archiver).
    pub batch: usize,
}

/// What a pusher did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PushedCount {
    /// Files stored (or found stored already).
    pub pushed: usize,
    /// Files marked failed.
    pub failed: usize,
    /// Another pusher held the lock: this one did nothing.
    pub other_running: bool,
}

/// The asynchronous pusher: pushes waiting files until none is left or one fails. `repo` is the
/// opened repository, or why it could not be opened (every waiting file is then marked
/// failed with it, so the archiver reports it).
pub fn run_pusher(
    p: &Pusher<'_>,
    repo: std::result::Result<Repository, String>,
) -> Result<PushedCount> {
    let mut count = PushedCount::default();
    let Some(_lock) = p.site.spool.try_lock(Worker::Push)? else {
        count.other_running = true;
        return Ok(count);
    };
    let setup = repo.and_then(|r| {
        let c = control(p.site.pgdata).map_err(|e| e.to_string())?;
        let i = instance_for(&r, &c, p.site.pgdata).map_err(|e| e.to_string())?;
        Ok((c, i))
    });
    loop {
        let ready = ready_files(p.site.pgdata)?;
        p.site
            .spool
            .forget_markers(&ready.iter().cloned().collect())?;
        let todo: Vec<&String> = ready
            .iter()
            .filter(|n| !p.site.spool.has_marker(n))
            .take(p.batch.max(1))
            .collect();
        if todo.is_empty() {
            return Ok(count);
        }
        let (control, inst) = match &setup {
            Ok(s) => s,
            Err(why) => {
                for n in &todo {
                    p.site
                        .spool
                        .write(&p.site.spool.marker(n, false), why.as_bytes())?;
                }
                count.failed += todo.len();
                return Ok(count);
            }
        };
        let done = parallel::run(
            p.site.jobs,
            todo.len(),
            |_| Ok(()),
            |_, i| push_one(p, inst, control, todo[i]),
            |_, _| Ok(()),
        )?;
        let failed = done.iter().filter(|ok| !**ok).count();
        count.pushed += done.len() - failed;
        count.failed += failed;
        if failed > 0 {
            return Ok(count);
        }
    }
}

/// Pushes `pg_wal/<name>` and writes its marker; whether it is stored.
fn push_one(
    p: &Pusher<'_>,
    inst: &ptrack_format::repo::Instance,
    control: &ptrack_page::control::ControlFile,
    name: &str,
) -> Result<bool> {
    let path = p.site.pgdata.join("pg_wal").join(name);
    let pushed = (|| {
        let before = Identity::of(&path).map_err(|e| Error::io(&path, "stat", e))?;
        push_to(inst, control, &path, p.compression)?;
        let after = Identity::of(&path).map_err(|e| Error::io(&path, "stat", e))?;
        if before != after {
            return Err(Error::from(Refusal::BadWalFile {
                path: path.display().to_string(),
                why: "it changed while it was archived".into(),
            }));
        }
        Ok(before)
    })();
    match pushed {
        Ok(identity) => {
            let done = Done {
                repository: p.site.repository.to_string(),
                identity,
            };
            let json = serde_json::to_vec(&done).unwrap_or_default();
            p.site
                .spool
                .write(&p.site.spool.marker(name, true), &json)?;
            Ok(true)
        }
        Err(e) => {
            let msg = e.to_string();
            p.site
                .spool
                .write(&p.site.spool.marker(name, false), msg.as_bytes())?;
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pgdata_with_ready(names: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let st = d.path().join("pg_wal/archive_status");
        std::fs::create_dir_all(&st).unwrap();
        for n in names {
            std::fs::write(d.path().join("pg_wal").join(n), n.as_bytes()).unwrap();
            std::fs::write(st.join(format!("{n}.ready")), b"").unwrap();
        }
        std::fs::write(st.join("000000010000000000000001.done"), b"").unwrap();
        std::fs::write(st.join("junk.ready"), b"").unwrap();
        d
    }

    const A: &str = "000000010000000000000002";
    const B: &str = "000000010000000000000003";

    #[test]
    fn ready_files_come_in_the_archivers_order() {
        let d = pgdata_with_ready(&[B, "00000002.history", A]);
        assert_eq!(
            ready_files(d.path()).unwrap(),
            vec!["00000002.history", A, B]
        );
        assert_eq!(backlog(d.path()).unwrap(), (3, Some(A.to_string())));
    }

    fn ok_marker(sp: &Spool, name: &str, path: &Path, repository: &str) {
        let done = Done {
            repository: repository.into(),
            identity: Identity::of(path).unwrap(),
        };
        std::fs::write(sp.marker(name, true), serde_json::to_vec(&done).unwrap()).unwrap();
    }

    #[test]
    fn only_a_marker_of_this_very_file_and_repository_counts() {
        let d = pgdata_with_ready(&[A]);
        let s = tempfile::tempdir().unwrap();
        let sp = Spool::open(&s.path().join("spool")).unwrap();
        let path = d.path().join("pg_wal").join(A);
        assert_eq!(sp.take_marker(A, &path, "/repo").unwrap(), None);
        ok_marker(&sp, A, &path, "/repo");
        assert_eq!(sp.take_marker(A, &path, "/repo").unwrap(), Some(Ok(())));
        assert!(!sp.has_marker(A), "taken");
        // Another repository's marker, or one of a file since re-created: stale, removed.
        ok_marker(&sp, A, &path, "/other");
        assert_eq!(sp.take_marker(A, &path, "/repo").unwrap(), None);
        assert!(!sp.has_marker(A));
        ok_marker(&sp, A, &path, "/repo");
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"re-created, other inode").unwrap();
        assert_eq!(sp.take_marker(A, &path, "/repo").unwrap(), None);
        std::fs::write(sp.marker(A, true), b"not json").unwrap();
        assert_eq!(sp.take_marker(A, &path, "/repo").unwrap(), None);
        std::fs::write(sp.marker(A, false), b"disk full").unwrap();
        assert_eq!(
            sp.take_marker(A, &path, "/repo").unwrap(),
            Some(Err("disk full".into()))
        );
    }

    #[test]
    fn a_spool_inside_the_data_directory_is_refused() {
        let d = pgdata_with_ready(&[]);
        let e = Spool::open_for(&d.path().join("pg_wal/spool"), d.path()).unwrap_err();
        assert!(
            e.to_string().contains("is inside the data directory"),
            "{e}"
        );
        assert!(!d.path().join("pg_wal/spool").exists());
        let s = tempfile::tempdir().unwrap();
        assert!(Spool::open_for(&s.path().join("sp"), d.path()).is_ok());
        assert!(
            Spool::open_for(&s.path().join("sp"), d.path()).is_ok(),
            "again"
        );
        // Another cluster's spool: refused, naming both.
        let other = pgdata_with_ready(&[]);
        let e = Spool::open_for(&s.path().join("sp"), other.path()).unwrap_err();
        assert!(e.to_string().contains("spool of the cluster in"), "{e}");
    }

    #[test]
    fn markers_of_files_no_longer_waiting_are_forgotten() {
        let s = tempfile::tempdir().unwrap();
        let sp = Spool::open(s.path()).unwrap();
        for f in [
            format!("{A}.ok"),
            format!("{B}.error"),
            format!("{A}.ok.tmp"),
        ] {
            std::fs::write(s.path().join("out").join(f), b"x").unwrap();
        }
        sp.forget_markers(&[A.to_string()].into_iter().collect())
            .unwrap();
        assert_eq!(
            list_names(&s.path().join("out")).unwrap(),
            vec![format!("{A}.ok")]
        );
    }

    #[test]
    fn the_foreground_waits_for_its_marker_and_gives_up_on_a_pusher_that_never_writes_it() {
        let d = pgdata_with_ready(&[A]);
        let s = tempfile::tempdir().unwrap();
        let sp = Spool::open(s.path()).unwrap();
        let path = d.path().join("pg_wal").join(A);
        let true_ = || {
            std::process::Command::new("true")
                .spawn()
                .map_err(|e| Error::io(Path::new("true"), "spawn", e))
        };
        // A "pusher" that stores the file: its marker ends the wait.
        let mut starts = 0;
        let mut start = || {
            starts += 1;
            ok_marker(&sp, A, &path, "/repo");
            true_()
        };
        let w = await_pushed(&sp, &path, "/repo", Duration::from_secs(30), &mut start).unwrap();
        assert_eq!((w, starts), (Waited::Archived, 1));
        // An error marker of an earlier attempt is not this one's outcome.
        std::fs::write(sp.marker(A, false), b"earlier outage").unwrap();
        let mut starts = 0;
        let mut start = || {
            starts += 1;
            std::fs::write(sp.marker(A, false), b"now").unwrap();
            true_()
        };
        let w = await_pushed(&sp, &path, "/repo", Duration::from_secs(30), &mut start).unwrap();
        assert_eq!((w, starts), (Waited::Failed("now".into()), 1));
        // One that exits without a marker, three times: the file is reported not archived.
        let mut starts = 0;
        let mut start = || {
            starts += 1;
            true_()
        };
        let w = await_pushed(&sp, &path, "/repo", Duration::from_secs(30), &mut start).unwrap();
        assert!(
            matches!(w, Waited::Failed(ref m) if m.contains("exited 3 times")),
            "{w:?}"
        );
        assert_eq!(starts, 3);
        // A running pusher (its lock held) is waited for, never doubled, up to the timeout.
        let held = sp.try_lock(Worker::Push).unwrap().unwrap();
        let mut start = || -> Result<Child> { panic!("a pusher runs") };
        let w = await_pushed(&sp, &path, "/repo", Duration::from_millis(50), &mut start).unwrap();
        assert_eq!(w, Waited::TimedOut);
        drop(held);
        // Not a WAL file name: refused before anything.
        let mut start = || true_();
        assert!(
            await_pushed(
                &sp,
                &d.path().join("x"),
                "/repo",
                Duration::from_secs(1),
                &mut start
            )
            .is_err()
        );
    }
}
