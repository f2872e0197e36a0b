//! A lease (an expiring lock) on a name, safe on a store without conditional writes (issue 12
//! §2: Garage 2.5 ignores `If-None-Match`). Only puts, lists and deletes are used:
//!
//! 1. the candidate writes an intent object `NAME/<nonce>` (unique; its body: owner, expiry);
//! 2. it lists `NAME/`: intents whose expiry (plus [`SKEW_MS`] for clock differences) has
//!    passed are deleted, their owners being presumed dead;
//! 3. if any other live intent is listed, it deletes its own and the attempt fails with the
//!    other owner's name; otherwise it holds the lease.
//!
//! Why two holders cannot both win: if A holds, A's list did not show B's intent, so B's put
//! finished after A's list began; A's put finished before that, so B's list shows A and B
//! backs off. Two candidates at once may both back off (callers retry later); neither holds
//! wrongly. This needs a store whose listing shows every put finished before it began (a local
//! filesystem; S3, which is strongly consistent since 2020; Garage's quorum reads). A holder
//! renews its intent ([`Lease::renew`]) well within the time to live and releases it by
//! deleting it; a holder stalled past its expiry can be overtaken, so long work renews often
//! and checks [`Lease::renew`]'s answer before committing.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::key::Key;
use crate::storage::{Held, LockError, Result, Storage, StorageError};

/// Margin for clocks of different hosts: an intent is taken for dead only this long after
/// its expiry.
pub const SKEW_MS: u64 = 60_000;

/// Why a lease was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Someone else holds it (or was trying to at the same moment: try again).
    #[error("\"{name}\" is held by {owner} until Unix time {expires_ms} ms")]
    Held {
        /// The lease.
        name: String,
        /// The other intent's owner.
        owner: String,
        /// Its expiry.
        expires_ms: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A held lease; released on [`Lease::release`] (or left to expire).
#[derive(Debug)]
pub struct Lease<'a> {
    store: &'a dyn Storage,
    intent: Key,
    owner: String,
}

fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let h = std::collections::hash_map::RandomState::new().hash_one((n, std::process::id()));
    format!("{h:016x}{:08x}{n:x}", std::process::id())
}

fn body(owner: &str, expires_ms: u64) -> Vec<u8> {
    let local = local_identity().map_or(String::new(), |(boot, ns)| {
        format!("local {boot} {ns} {}\n", std::process::id())
    });
    format!("{expires_ms}\n{owner}\n{local}").into_bytes()
}

/// This host's boot and PID namespace (`/proc/sys/kernel/random/boot_id`, `/proc/self/ns/pid`):
/// a process id means the same process only where both are equal.
fn local_identity() -> Option<(String, String)> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let boot = boot.trim().to_string();
    let ns = ns.to_str()?.replace(' ', "_");
    (!boot.is_empty() && !boot.contains(' ')).then_some((boot, ns))
}

/// The `local BOOT NS PID` line of an intent body, if it has one (any bytes are accepted).
pub fn parse_local(bytes: &[u8]) -> Option<(String, String, u32)> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().nth(2)?;
    let mut f = line.strip_prefix("local ")?.split(' ');
    let (boot, ns, pid) = (f.next()?, f.next()?, f.next()?.parse().ok()?);
    f.next()
        .is_none()
        .then(|| (boot.to_string(), ns.to_string(), pid))
}

/// Whether the intent was written by a process of this host and PID namespace that no longer
/// exists: its holder died without releasing it, and it need not wait for its expiry. Never
/// true for this process or for a process that exists (whoever it is now).
fn holder_died_here(bytes: &[u8]) -> bool {
    let (Some((boot, ns, pid)), Some((my_boot, my_ns))) = (parse_local(bytes), local_identity())
    else {
        return false;
    };
    if boot != my_boot || ns != my_ns || pid == std::process::id() || pid == 0 {
        return false;
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// (expiry, owner) of an intent's body, which another process wrote: any bytes are accepted,
/// an unreadable body counting as long expired (fuzzed: `fuzz/fuzz_targets/lease.rs`).
pub fn parse_intent(bytes: &[u8]) -> (u64, String) {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.lines();
    let expires = lines.next().and_then(|l| l.parse().ok()).unwrap_or(0);
    (expires, lines.next().unwrap_or("?").to_string())
}

/// Tries to take lease `name` for `owner` (a description shown to others: host, pid,
/// command) for `ttl_ms`, at time `now_ms` (Unix milliseconds).
pub fn acquire<'a>(
    store: &'a dyn Storage,
    name: &Key,
    owner: &str,
    ttl_ms: u64,
    now_ms: u64,
) -> std::result::Result<Lease<'a>, LeaseError> {
    let intent = name.join(&nonce())?;
    store.put(&intent, &body(owner, now_ms.saturating_add(ttl_ms)))?;
    let lease = Lease {
        store,
        intent,
        owner: owner.to_string(),
    };
    match lease.others(now_ms) {
        Ok(None) => Ok(lease),
        Ok(Some((other, expires_ms))) => {
            store.delete(&lease.intent)?;
            Err(LeaseError::Held {
                name: name.to_string(),
                owner: other,
                expires_ms,
            })
        }
        Err(e) => {
            let _ = store.delete(&lease.intent);
            Err(e.into())
        }
    }
}

impl Lease<'_> {
    /// Another live intent (owner, expiry), after deleting dead ones.
    fn others(&self, now_ms: u64) -> Result<Option<(String, u64)>> {
        let Some((dir, _)) = self.intent.as_str().rsplit_once('/') else {
            return Ok(None);
        };
        let dir = Key::new(dir)?;
        for k in self.store.list(Some(&dir))? {
            if k == self.intent {
                continue;
            }
            let bytes = match self.store.get(&k) {
                Ok(b) => b,
                // Released meanwhile.
                Err(StorageError::NotFound { .. }) => continue,
                // A sealed intent that fails its tag ([`crate::encrypted`]) says no more than
                // a garbled plain one, which reads as long expired.
                Err(StorageError::Damaged { .. }) => {
                    self.store.delete(&k)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (expires, owner) = parse_intent(&bytes);
            if expires.saturating_add(SKEW_MS) < now_ms || holder_died_here(&bytes) {
                self.store.delete(&k)?;
                continue;
            }
            return Ok(Some((owner, expires)));
        }
        Ok(None)
    }

    /// Extends the lease to `now_ms + ttl_ms`. An error means it may be lost: stop before
    /// committing anything.
    pub fn renew(&self, ttl_ms: u64, now_ms: u64) -> Result<()> {
        match self.store.get(&self.intent) {
            Ok(_) => self.store.put(
                &self.intent,
                &body(&self.owner, now_ms.saturating_add(ttl_ms)),
            ),
            Err(StorageError::NotFound { key }) => Err(StorageError::Io {
                key,
                op: "renew lease",
                transient: false,
                cause: std::io::Error::other("the lease expired and was taken over"),
            }),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up.
    pub fn release(self) -> Result<()> {
        self.store.delete(&self.intent)
    }
}

/// Time to live of a [`keep`]-ed lease: a holder killed without releasing it is overtaken
/// this long plus [`SKEW_MS`] after its last renewal (two minutes at most).
pub const KEEP_TTL_MS: u64 = 60_000;

/// How often a [`keep`]-ed lease is renewed (a quarter of its time to live: three renewals
/// may fail in a row before it can expire).
const RENEW_EVERY: Duration = Duration::from_millis(KEEP_TTL_MS / 4);

/// Current time in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A lease kept alive by a thread that renews it every [`RENEW_EVERY`]; released when dropped.
#[derive(Debug)]
pub struct Kept {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    lost: Arc<Mutex<Option<StorageError>>>,
    intent: Key,
}

/// Takes lease `name` for `owner` on `store` and keeps it (see [`Kept`]): the lock of
/// backends without a lock of their own (object storage).
pub fn keep(
    store: Arc<dyn Storage>,
    name: &Key,
    owner: &str,
) -> std::result::Result<Kept, LockError> {
    let lease = acquire(&*store, name, owner, KEEP_TTL_MS, now_ms()).map_err(|e| match e {
        LeaseError::Held {
            owner, expires_ms, ..
        } => LockError::Held {
            owner: format!(
                "{owner} (lease {name}, expiring {}s from now unless renewed)",
                expires_ms.saturating_sub(now_ms()) / 1000
            ),
        },
        LeaseError::Storage(e) => LockError::Storage(e),
    })?;
    let (intent, owner) = (lease.intent, lease.owner);
    let lost = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel::<()>();
    let thread = {
        let (intent, lost) = (intent.clone(), Arc::clone(&lost));
        std::thread::Builder::new()
            .name("ptrack-lease".into())
            .spawn(move || {
                let lease = Lease {
                    store: &*store,
                    intent,
                    owner,
                };
                loop {
                    match rx.recv_timeout(RENEW_EVERY) {
                        Err(RecvTimeoutError::Timeout) => {
                            if let Err(e) = lease.renew(KEEP_TTL_MS, now_ms()) {
                                let mut l = lost.lock().unwrap_or_else(|p| p.into_inner());
                                l.get_or_insert(e);
                            }
                        }
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                            // A release that fails for good leaves the intent to expire.
                            for attempt in 0..4 {
                                match store.delete(&lease.intent) {
                                    Err(e) if e.is_transient() => {
                                        std::thread::sleep(Duration::from_millis(50 << attempt))
                                    }
                                    _ => break,
                                }
                            }
                            return;
                        }
                    }
                }
            })
            .map_err(|e| StorageError::io(name, "start lease thread", e))?
    };
    Ok(Kept {
        stop: Some(tx),
        thread: Some(thread),
        lost,
        intent,
    })
}

/// [`keep`] as a [`Storage::lock`] answer.
pub fn keep_boxed(
    store: Arc<dyn Storage>,
    name: &Key,
    owner: &str,
) -> std::result::Result<Box<dyn Held>, LockError> {
    Ok(Box::new(keep(store, name, owner)?))
}

/// `Storage::lock` of a wrapper (`Retrying`, `Encrypted`) over `inner`: on a store whose lock is
/// a lease, the lease is kept through the wrapper (its objects retried, sealed, … like every
/// other object); otherwise the inner store's own lock.
pub fn lock_through(
    wrapper: Arc<dyn Storage>,
    inner: &dyn Storage,
    name: &Key,
    owner: &str,
) -> std::result::Result<Box<dyn Held>, LockError> {
    if inner.capabilities().lease_lock {
        return keep_boxed(wrapper, name, owner);
    }
    inner.lock(name, owner)
}

impl Held for Kept {
    fn check(&self) -> Result<()> {
        let lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        match &*lost {
            None => Ok(()),
            Some(e) => Err(StorageError::Io {
                key: self.intent.to_string(),
                op: "renew lease",
                transient: false,
                cause: std::io::Error::other(format!("the lock may be lost: {e}")),
            }),
        }
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalFs;
    use crate::memory::MemStore;
    use std::sync::atomic::AtomicUsize;

    fn k(s: &str) -> Key {
        Key::new(s).unwrap_or_else(|e| unreachable!("{e}"))
    }

    fn exclusion(s: &dyn Storage) {
        let name = k("inst/lock");
        let a = acquire(s, &name, "backup A", 600_000, 1_000).expect("free");
        match acquire(s, &name, "backup B", 600_000, 2_000) {
            Err(LeaseError::Held { owner, .. }) => assert_eq!(owner, "backup A"),
            other => unreachable!("B must not get it: {other:?}"),
        }
        a.renew(600_000, 3_000).expect("renew");
        a.release().expect("release");
        let b = acquire(s, &name, "backup B", 600_000, 4_000).expect("free again");
        // A dead holder: its intent expires, and the next candidate deletes it and takes over.
        let later = 4_000 + 600_000 + SKEW_MS + 1;
        let c = acquire(s, &name, "backup C", 600_000, later).expect("taken over");
        assert!(
            b.renew(600_000, later).is_err(),
            "B learns its lease is gone"
        );
        c.release().expect("release");
        assert_eq!(s.list(Some(&name)).expect("list"), Vec::<Key>::new());
    }

    #[test]
    fn one_holder_on_each_backend() {
        exclusion(&MemStore::new());
        exclusion(&MemStore::new().without_conditional_put());
        let d = tempfile::tempdir().expect("tempdir");
        exclusion(&LocalFs::new(d.path()));
    }

    /// Threads racing for the lease: never two inside at once, and someone gets in.
    fn race(s: &dyn Storage) {
        let inside = AtomicUsize::new(0);
        let entered = AtomicUsize::new(0);
        let name = k("inst/lock");
        std::thread::scope(|sc| {
            for t in 0..4 {
                let (inside, entered, name) = (&inside, &entered, &name);
                sc.spawn(move || {
                    for _ in 0..50 {
                        if let Ok(l) = acquire(s, name, &format!("thread {t}"), 600_000, 1) {
                            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                            entered.fetch_add(1, Ordering::SeqCst);
                            std::thread::yield_now();
                            inside.fetch_sub(1, Ordering::SeqCst);
                            l.release().expect("release");
                        }
                    }
                });
            }
        });
        assert!(entered.load(Ordering::SeqCst) > 0);
    }

    #[test]
    fn racing_candidates_never_both_hold() {
        race(&MemStore::new().without_conditional_put());
        let d = tempfile::tempdir().expect("tempdir");
        race(&LocalFs::new(d.path()));
    }

    #[test]
    fn intent_bodies_round_trip_and_garbage_is_expired() {
        assert_eq!(
            parse_intent(&body("backup A", 42)),
            (42, "backup A".to_string())
        );
        assert_eq!(parse_intent(b""), (0, "?".to_string()));
        let (boot, ns) = local_identity().expect("Linux /proc");
        assert_eq!(
            parse_local(&body("x", 1)),
            Some((boot, ns, std::process::id()))
        );
        assert_eq!(parse_local(b"1\nx\nlocal a b\n"), None);
        assert_eq!(parse_intent(b"\xff\xfe\nx").0, 0);
    }

    #[test]
    fn a_kept_lease_excludes_and_is_released_when_dropped() {
        let s: Arc<dyn Storage> = Arc::new(MemStore::new().without_conditional_put());
        let name = k("inst/lock");
        let a = keep(Arc::clone(&s), &name, "backup A").expect("free");
        a.check().expect("held");
        match keep(Arc::clone(&s), &name, "backup B") {
            Err(LockError::Held { owner }) => assert!(owner.starts_with("backup A"), "{owner}"),
            other => unreachable!("B must not get it: {other:?}"),
        }
        drop(a);
        assert_eq!(s.list(Some(&name)).expect("list"), Vec::<Key>::new());
        keep(s, &name, "backup B").expect("free after drop");
    }

    /// An intent of a process of this host that has exited is taken over before it expires;
    /// one of a live process (this one) is not.
    #[test]
    fn a_dead_local_holder_is_overtaken_at_once() {
        let s = MemStore::new().without_conditional_put();
        let name = k("inst/lock");
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let dead = child.id();
        child.wait().expect("wait");
        let (boot, ns) = local_identity().expect("Linux /proc");
        let far = 10_000_000_000_000u64;
        let intent = name.join("dead").expect("key");
        s.put(
            &intent,
            format!("{far}\nkilled backup\nlocal {boot} {ns} {dead}\n").as_bytes(),
        )
        .expect("put");
        let l = acquire(&s, &name, "me", 60_000, 1).expect("the dead holder is overtaken");
        assert!(matches!(s.get(&intent), Err(StorageError::NotFound { .. })));
        match acquire(&s, &name, "second", 60_000, 1) {
            Err(LeaseError::Held { owner, .. }) => assert_eq!(owner, "me"),
            other => unreachable!("a live holder is never overtaken: {other:?}"),
        }
        l.release().expect("release");
    }

    #[test]
    fn a_failing_store_leaves_no_intent_behind() {
        let s = MemStore::new();
        s.fail_op(1, true); // the list after the intent's put
        let err = acquire(&s, &k("inst/lock"), "me", 1_000, 1).expect_err("list fails");
        assert!(err.to_string().contains("inst/lock"), "{err}");
        assert_eq!(s.list(None).expect("list"), Vec::<Key>::new());
    }
}
