//! The tracker: a background worker that follows WAL up to the flush position (the replay
//! position during recovery) and marks every changed block, through `ptrack-map`'s follower.
//! It takes the place of the core patch's `mdwrite`/`mdextend`/`copydir` hooks (spec ptrack.md
//! §4) and of `engine.c: ptrackCheckpoint`: the map is saved each time a checkpoint record is
//! passed, and at shutdown.
//!
//! Where it starts: the position saved in the map when that position lies on the current
//! timeline's history, else (fresh, foreign or unusable map) the redo point of the last
//! checkpoint in `pg_control`, which becomes `init_lsn`. When WAL it needs is gone, it moves
//! `init_lsn` forward to where it can resume and logs a WARNING: never a silent gap.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;
use ptrack_blockmap::ChangeSet;
use ptrack_map::Map;
use ptrack_map::follow::{
    ApplyContext, Follower, Outcome, Recording, apply_record, read_history, resume_point,
};
use ptrack_types::{Lsn, TimeLineId};
use ptrack_wal::DecoderConfig;

use crate::shmem;
use crate::writer::Writer;

/// How long the worker sleeps when there is no new WAL (waiters set its latch).
const IDLE_WAIT: Duration = Duration::from_millis(5);

/// After a checkpoint record, the tracker reads on to the flush position before it saves when
/// that is at most this far (one default WAL segment, a few milliseconds of decoding): callers
/// waiting for the tracker are not held up by the save, and the save still comes soon after the
/// checkpoint. Further behind, it stops at the checkpoint record and saves first.
const SAVE_SLACK: u64 = 16 << 20;

/// Registers the worker (from `_PG_init`).
pub fn register() {
    BackgroundWorkerBuilder::new("ptrack tracker")
        .set_type("ptrack tracker")
        .set_library("ptrack")
        .set_function("ptrack_tracker_main")
        .enable_shmem_access(None)
        .set_start_time(BgWorkerStartTime::PostmasterStart)
        .set_restart_time(Some(Duration::from_secs(1)))
        .load();
}

/// The server's durable WAL position and timeline: flush position on a primary, replay position
/// during recovery.
pub fn wal_position() -> (Lsn, TimeLineId) {
    let mut tli: pg_sys::TimeLineID = 0;
    // SAFETY: plain calls into xlog.c, valid in any process attached to shared memory.
    let lsn = unsafe {
        if pg_sys::RecoveryInProgress() {
            pg_sys::GetXLogReplayRecPtr(&mut tli)
        } else {
            flush_position(&mut tli)
        }
    };
    (Lsn(lsn), TimeLineId(tli))
}

/// `GetFlushRecPtr` and the timeline written: 15 returns it through the call; 13 and 14 keep it
/// in `ThisTimeLineID`, which `RecoveryInProgress` (just called) set through `InitXLOGAccess`
/// once recovery had ended (`xlog.c`).
///
/// # Safety
/// As for [`wal_position`]: a process attached to shared memory, after `RecoveryInProgress()`
/// returned false.
unsafe fn flush_position(tli: &mut pg_sys::TimeLineID) -> pg_sys::XLogRecPtr {
    #[cfg(any(feature = "pg13", feature = "pg14"))]
    // SAFETY: per this function's contract; ThisTimeLineID is this process's own global.
    unsafe {
        *tli = pg_sys::ThisTimeLineID;
        pg_sys::GetFlushRecPtr()
    }
    #[cfg(not(any(feature = "pg13", feature = "pg14")))]
    // SAFETY: per this function's contract.
    unsafe {
        pg_sys::GetFlushRecPtr(tli)
    }
}

/// Redo pointer of the checkpoint in progress or last completed (`GetRedoRecPtr`).
fn current_redo() -> Lsn {
    // SAFETY: reads XLogCtl->RedoRecPtr under its spinlock.
    Lsn(unsafe { pg_sys::GetRedoRecPtr() })
}

struct Tracker {
    map: Map<'static>,
    ctx: ApplyContext,
    cfg: DecoderConfig,
    pg_wal: PathBuf,
    follower: Follower,
    /// Redo pointer of the newest checkpoint the map was saved after.
    saved_redo: Lsn,
    /// The change set since the last cut, when change sets are kept (`pg_ptrack/`).
    changes: Option<ChangeSet>,
    /// Every record ending by this LSN has been applied by this tracker.
    caught_up: Lsn,
    writer: Option<Writer>,
}

fn redo_point() -> Result<(Lsn, TimeLineId), String> {
    let (_, c) = shmem::identity()?;
    Ok((c.redo, c.timeline))
}

impl Tracker {
    fn start() -> Result<Tracker, String> {
        let map = shmem::map().ok_or("ptrack: map not in shared memory")?;
        let (_, control) = shmem::identity()?;
        let root = crate::pgdata();
        let pg_wal = root.join("pg_wal");
        let ctx = ApplyContext {
            root,
            ts_version_dir: control.major.tablespace_dir(control.catalog_version_no),
            major: control.major,
            blcksz: control.blcksz,
            relseg_blocks: control.relseg_size,
        };
        let cfg = DecoderConfig {
            seg_size: control.xlog_seg_size,
            xlog_blcksz: control.xlog_blcksz,
            blcksz: control.blcksz,
            system_identifier: Some(control.system_identifier),
            major: Some(control.major),
        };
        // Wait until the server knows its WAL position (recovery may not have begun yet) and,
        // during recovery, until replay has passed the saved position.
        let (saved, saved_tli) = map.tracked();
        let (tli, history, resume) = loop {
            let (target, tli) = wal_position();
            if target.0 == 0 || tli.0 == 0 {
                if !BackgroundWorker::wait_latch(Some(IDLE_WAIT)) {
                    return Err("ptrack tracker: shutdown before start".into());
                }
                continue;
            }
            let history = read_history(&pg_wal, tli).unwrap_or_default();
            if saved.0 == 0 {
                break (tli, history, None);
            }
            match resume_point(&history, tli, saved_tli, saved) {
                Some(p) if p <= target => break (tli, history, Some(p)),
                // SAFETY: reads recovery state from shared memory.
                Some(_) if unsafe { pg_sys::RecoveryInProgress() } => {
                    if !BackgroundWorker::wait_latch(Some(IDLE_WAIT)) {
                        return Err("ptrack tracker: shutdown before start".into());
                    }
                }
                Some(p) => {
                    warning!(
                        "ptrack: map was saved at {p}, beyond this server's WAL end {target}; it is not used: init_lsn moves forward and a full backup is needed before the next incremental one"
                    );
                    break (tli, history, None);
                }
                None => {
                    warning!(
                        "ptrack: map was saved on timeline {saved_tli}, which is not in the history of timeline {tli}; it is not used: init_lsn moves forward and a full backup is needed before the next incremental one"
                    );
                    break (tli, history, None);
                }
            }
        };
        let start = match resume {
            Some(p) => p,
            None => {
                let (redo, _) = redo_point()?;
                map.raise_init_lsn(redo);
                redo
            }
        };
        log!(
            "ptrack tracker: following WAL from {start} on timeline {tli}, init_lsn {}",
            map.init_lsn()
        );
        let follower = Follower::new(&pg_wal, cfg, start, tli, history);
        Ok(Tracker {
            map,
            ctx,
            cfg,
            pg_wal,
            follower,
            saved_redo: Lsn(0),
            changes: crate::changes_dir().map(|_| ChangeSet::new(control.system_identifier, start)),
            caught_up: start,
            writer: Some(Writer::start(map)),
        })
    }

    /// Writes the change set since the last cut ([`ptrack_map::changelog`]) and starts the
    /// next; publishes how far the sets reach. A set spanning a timeline switch is not written
    /// (callers fall back to the map for starts before it).
    fn cut(&mut self) {
        let (Some(set), Some(dir)) = (self.changes.as_mut(), crate::changes_dir()) else {
            return;
        };
        // Every record ending by `caught_up` is applied (a record still being written may end
        // after the flush position the tracker caught up with, and goes to the next set).
        let pos = self.follower.position().max(self.caught_up);
        if pos > set.start {
            let mut done = std::mem::replace(set, ChangeSet::new(set.system_identifier, pos));
            done.end = pos;
            let tli = self.follower.timeline_of(done.start);
            if tli == self.follower.timeline_of(Lsn(pos.0 - 1))
                && let Err(e) = ptrack_map::changelog::write(&dir, tli, &done)
            {
                warning!("{e}");
            }
            let keep = (self.map.slot_count() * 2).max(16 << 20);
            if let Err(e) = ptrack_map::changelog::prune(&dir, self.map.init_lsn(), keep) {
                warning!(
                    "ptrack: could not remove old change sets in \"{}\": {e}",
                    dir.display()
                );
            }
        }
        if let Some(rt) = shmem::runtime() {
            rt.sets_end.fetch_max(pos.0, Ordering::AcqRel);
        }
    }

    fn save(&mut self) {
        self.cut();
        let pos = self.follower.position();
        self.saved_redo = current_redo().min(pos);
        self.map.set_tracked(pos, self.follower.timeline_of(pos));
        if let Some(w) = &self.writer {
            let full = !self.map.tracks_dirty() || w.wants_full();
            let save = self.map.take_save(full, w.spare());
            for e in w.submit(save) {
                warning!("{e}");
            }
        }
    }

    /// Saves synchronously and stops the writer (at exit).
    fn save_and_finish(&mut self) {
        self.save();
        if let Some(w) = self.writer.take() {
            for e in w.finish() {
                warning!("{e}");
            }
        }
    }

    /// Reads what is new; true when it did some work.
    fn step(&mut self) -> Result<bool, String> {
        // The clock first, then the position: no WAL beyond `target` was flushed at `now`.
        let now = ptrack_map::clock::now_ns();
        let (target, tli) = wal_position();
        sample_clock(now, target);
        if tli != self.follower.timeline() {
            self.cut();
            let history = read_history(&self.pg_wal, tli).unwrap_or_default();
            self.follower.set_timeline(tli, history);
        }
        let before = self.follower.read_up_to();
        let mut checkpoint = false;
        let mut stopped = false;
        let mut last_end = Lsn(0);
        let map = self.map;
        let ctx = &self.ctx;
        let changes = &mut self.changes;
        let outcome = self.follower.advance(target, &mut |r| {
            let a = match changes.as_mut() {
                Some(set) => apply_record(&mut Recording { map, set }, r, ctx),
                None => apply_record(&mut { map }, r, ctx),
            };
            if let Some(why) = a.untrusted {
                let new = map.raise_init_lsn(r.end_lsn);
                warning!(
                    "ptrack: {why}; changes before {new} cannot be tracked: init_lsn moved to {new}, a full backup is needed before the next incremental one"
                );
            }
            last_end = r.end_lsn;
            checkpoint |= a.checkpoint;
            stopped = a.checkpoint && target.0.saturating_sub(r.end_lsn.0) > SAVE_SLACK;
            !stopped
        });
        match outcome {
            Outcome::CaughtUp => {
                // Every record up to here is in the map: callers waiting for it go on now, not
                // after the save below (copying a large map takes tens of milliseconds). Records
                // come in order: every one ending by the last one's end was applied, and, unless
                // a checkpoint record stopped the reading, every one ending by the target.
                let done = if stopped {
                    last_end
                } else {
                    target.max(last_end)
                };
                self.caught_up = self.caught_up.max(done);
                if let Some(rt) = shmem::runtime() {
                    rt.caught_up.fetch_max(done.0, Ordering::AcqRel);
                    // A caller of ptrack_get_pagemapset wants the sets to reach this far.
                    if rt.cut_request.load(Ordering::Acquire) > rt.sets_end.load(Ordering::Acquire)
                    {
                        self.cut();
                    }
                }
                // Save after a checkpoint record, and as soon as the tracker has passed the redo
                // point of a checkpoint in progress: that checkpoint ends by removing the WAL
                // before its redo point, and a crash after that must not find the saved position
                // in removed WAL.
                let redo = current_redo();
                if checkpoint || (redo > self.saved_redo && self.follower.position() >= redo) {
                    self.save();
                    return Ok(true);
                }
            }
            Outcome::Gap { at, why } => {
                let (redo, _) = redo_point()?;
                if redo <= at {
                    return Err(format!(
                        "ptrack tracker: cannot read WAL at {at}: {why}; retrying (changes after {at} are not tracked yet)"
                    ));
                }
                let new = self.map.raise_init_lsn(redo);
                warning!(
                    "ptrack: WAL needed to track changes is gone ({why}); changes between {at} and {redo} are lost to ptrack: init_lsn moved to {new}, a full backup is needed before the next incremental one"
                );
                let history = read_history(&self.pg_wal, tli).unwrap_or_default();
                self.follower = Follower::new(&self.pg_wal, self.cfg, redo, tli, history);
                // The set so far lacks the lost range: drop it, the next begins at the resume.
                if let Some(set) = self.changes.as_mut() {
                    *set = ChangeSet::new(set.system_identifier, redo);
                }
                self.caught_up = self.caught_up.max(redo);
                self.save();
                return Ok(true);
            }
        }
        Ok(self.follower.read_up_to() > before)
    }
}

/// Samples taken at most this often (a step backwards of the clock is recorded at once).
const SAMPLE_EVERY_NS: u64 = 1_000_000_000;

/// Records when WAL reached where, for the FSM rule of `ptrack_get_pagemapset`
/// ([`ptrack_map::clock`]).
fn sample_clock(now: u64, flushed: Lsn) {
    let Some(rt) = shmem::runtime() else { return };
    let clock = rt.clock();
    let due = clock
        .newest()
        .is_none_or(|s| now < s.at_ns || flushed < s.flushed || now - s.at_ns >= SAMPLE_EVERY_NS);
    if due {
        clock.push(ptrack_map::clock::Sample {
            flushed,
            at_ns: now,
        });
    }
}

/// The worker's entry point.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn ptrack_tracker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let Some(rt) = shmem::runtime() else { return };
    // SAFETY: MyProc is this process's PGPROC, in shared memory, valid while it runs.
    let latch = unsafe { &raw mut (*pg_sys::MyProc).procLatch } as u64;
    rt.tracker_latch.store(latch, Ordering::Release);
    let mut tracker = match Tracker::start() {
        Ok(t) => t,
        Err(e) => {
            rt.tracker_latch.store(0, Ordering::Release);
            error!("{e}");
        }
    };
    rt.ready.store(1, Ordering::Release);
    loop {
        if BackgroundWorker::sigterm_received() {
            break;
        }
        match tracker.step() {
            Ok(true) => {
                pg_sys::check_for_interrupts!();
                continue;
            }
            Ok(false) => {}
            Err(e) => {
                warning!("{e}");
                if !BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
                    break;
                }
                continue;
            }
        }
        if !BackgroundWorker::wait_latch(Some(IDLE_WAIT)) {
            break;
        }
    }
    // Catch up with what is durable, then save: the next start resumes here.
    let _ = tracker.step();
    tracker.save_and_finish();
    rt.tracker_latch.store(0, Ordering::Release);
    rt.ready.store(0, Ordering::Release);
    log!(
        "ptrack tracker: saved map at {}",
        tracker.follower.position()
    );
}

/// Wakes the tracker (a backend waiting for it).
pub fn wake() {
    let Some(rt) = shmem::runtime() else { return };
    let latch = rt.tracker_latch.load(Ordering::Acquire);
    if latch != 0 {
        // SAFETY: the latch lives in the tracker's PGPROC in shared memory; SetLatch on a latch
        // of an exited process is harmless.
        unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) };
    }
}
