//! When WAL positions were reached, as lower bounds of wall-clock time: what the pagemapset scan
//! needs to report free-space-map forks changed without WAL by their modification time. The FSM
//! (`freespace.c: fsm_set_avail` → `MarkBufferDirtyHint`) is updated by VACUUM and by backends
//! looking for space without any WAL record when neither data checksums nor `wal_log_hints` are
//! on; a write of such a page reaches the file system (and sets the file's mtime) like any other.
//!
//! The tracker takes a [`Sample`] now and then: it reads the clock first, then the flush (or
//! replay) position `P`. At that instant no WAL beyond `P` was flushed, so every position after
//! `P` was reached later. A backup that started at LSN `S` read its files after `S` was flushed;
//! a change it missed was written after it read the file, hence after the newest sample with
//! `P < S`. An FSM file modified at or after that sample's time (less [`MARGIN_NS`] for the
//! kernel's coarse file timestamps) may hold such a change and is reported whole; an older one
//! cannot.
//!
//! When the map was created in this server's lifetime (in the postmaster, before any other
//! process ran), the creation time bounds every change the map knows of: it answers start LSNs
//! before `init_lsn`, for which ptrack reports only what it tracked (the original's rule).
//!
//! The samples live in shared memory as 64-bit atomics, written by the tracker alone and read
//! by backends under a sequence counter (a seqlock): readers retry while a write is under way.
//! When the clock is seen going backwards, every sample is dropped (bounds unknown: every FSM
//! fork is reported whole until new samples exist).

use std::sync::atomic::{AtomicU64, Ordering};

use ptrack_types::Lsn;

/// Samples kept; when full, every other sample of the older half is dropped.
pub const SAMPLES: usize = 512;
/// Words of the shared area.
pub const CLOCK_WORDS: usize = HEADER + 2 * SAMPLES;
/// Subtracted from every bound: Linux stamps files with its coarse clock, up to one timer tick
/// (at most 10 ms) behind the precise clock the samples read.
pub const MARGIN_NS: u64 = 50_000_000;

const W_SEQ: usize = 0;
const W_COUNT: usize = 1;
const W_CREATED_NS: usize = 2;
const HEADER: usize = 4;

/// At wall-clock time `at_ns` (nanoseconds since the Unix epoch), WAL was flushed (or, during
/// recovery, replayed) no further than `flushed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// The position read after the clock.
    pub flushed: Lsn,
    /// The clock, read first.
    pub at_ns: u64,
}

/// The shared samples.
#[derive(Clone, Copy)]
pub struct Clock<'a> {
    words: &'a [AtomicU64],
}

/// A consistent copy of the samples.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClockState {
    /// When the map was created in this server's lifetime, if it was.
    pub created_ns: Option<u64>,
    /// Samples, oldest first; positions and times never decrease.
    pub samples: Vec<Sample>,
}

impl<'a> Clock<'a> {
    /// Views `words` (at least [`CLOCK_WORDS`], zeroed when created) as the sample area.
    pub fn new(words: &'a [AtomicU64]) -> Option<Clock<'a>> {
        (words.len() >= CLOCK_WORDS).then_some(Clock { words })
    }

    /// Views a sample area of the exact size.
    pub fn of(words: &'a [AtomicU64; CLOCK_WORDS]) -> Clock<'a> {
        Clock { words }
    }

    fn write(&self, f: impl FnOnce(&mut ClockState)) {
        let mut st = self.read();
        f(&mut st);
        let seq = self.words[W_SEQ].fetch_add(1, Ordering::AcqRel);
        debug_assert!(seq.is_multiple_of(2), "one writer at a time");
        self.words[W_CREATED_NS].store(st.created_ns.unwrap_or(0), Ordering::Relaxed);
        self.words[W_COUNT].store(st.samples.len() as u64, Ordering::Relaxed);
        for (i, s) in st.samples.iter().enumerate() {
            self.words[HEADER + 2 * i].store(s.flushed.0, Ordering::Relaxed);
            self.words[HEADER + 2 * i + 1].store(s.at_ns, Ordering::Relaxed);
        }
        self.words[W_SEQ].fetch_add(1, Ordering::Release);
    }

    /// Records that the map was (re)created now, at `now_ns`: earlier samples described another
    /// map's history and are dropped.
    pub fn map_created(&self, now_ns: u64) {
        self.write(|st| {
            st.created_ns = Some(now_ns);
            st.samples.clear();
        });
    }

    /// Adds a sample (the tracker, the only writer). A sample older than the newest one (the
    /// clock went backwards) drops every bound.
    pub fn push(&self, s: Sample) {
        self.write(|st| push_sample(st, s));
    }

    /// Drops every sample and the creation time: nothing is known until new samples come.
    pub fn forget(&self) {
        self.write(|st| *st = ClockState::default());
    }

    /// The newest sample, if any (read without copying the others: the tracker asks at every
    /// turn of its loop).
    pub fn newest(&self) -> Option<Sample> {
        self.consistent(|| {
            let n = (self.words[W_COUNT].load(Ordering::Relaxed) as usize).min(SAMPLES);
            n.checked_sub(1).map(|i| self.sample(i))
        })
    }

    /// A consistent copy (retries while the tracker writes).
    pub fn read(&self) -> ClockState {
        self.consistent(|| {
            let created = self.words[W_CREATED_NS].load(Ordering::Relaxed);
            let n = (self.words[W_COUNT].load(Ordering::Relaxed) as usize).min(SAMPLES);
            ClockState {
                created_ns: (created != 0).then_some(created),
                samples: (0..n).map(|i| self.sample(i)).collect(),
            }
        })
    }

    fn sample(&self, i: usize) -> Sample {
        Sample {
            flushed: Lsn(self.words[HEADER + 2 * i].load(Ordering::Relaxed)),
            at_ns: self.words[HEADER + 2 * i + 1].load(Ordering::Relaxed),
        }
    }

    /// `f`'s reading of the area, repeated until no write overlapped it (the seqlock's read).
    fn consistent<T>(&self, f: impl Fn() -> T) -> T {
        loop {
            let seq = self.words[W_SEQ].load(Ordering::Acquire);
            if !seq.is_multiple_of(2) {
                std::hint::spin_loop();
                continue;
            }
            let value = f();
            std::sync::atomic::fence(Ordering::Acquire);
            if self.words[W_SEQ].load(Ordering::Relaxed) == seq {
                return value;
            }
        }
    }
}

/// Appends `s`, thinning the older half when full; a step backwards in time or position clears
/// everything (a position going back means another history: a new timeline from an earlier
/// point).
fn push_sample(st: &mut ClockState, s: Sample) {
    if let Some(last) = st.samples.last() {
        if s.at_ns < last.at_ns || s.flushed < last.flushed {
            *st = ClockState::default();
        } else if s.flushed == last.flushed {
            return;
        }
    }
    if let Some(created) = st.created_ns
        && s.at_ns < created
    {
        *st = ClockState::default();
    }
    if st.samples.len() >= SAMPLES {
        let half = st.samples.len() / 2;
        let newer = st.samples.split_off(half);
        let older: Vec<Sample> = st.samples.iter().copied().step_by(2).collect();
        st.samples = older;
        st.samples.extend(newer);
    }
    st.samples.push(s);
}

/// The system clock in nanoseconds since the Unix epoch (0 before it).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl ClockState {
    /// The earliest modification time (ns since the Unix epoch) a file changed without WAL
    /// since `start` can have, for a map whose `init_lsn` is `init_lsn`; `None` when unknown
    /// (the caller then reports every such file whole). `now_ns` is the caller's clock: a clock
    /// behind the newest sample went backwards, and nothing is known.
    pub fn changed_since(&self, start: Lsn, init_lsn: Lsn, now_ns: u64) -> Option<u64> {
        let newest = self
            .samples
            .last()
            .map(|s| s.at_ns)
            .max(self.created_ns)
            .unwrap_or(0);
        if now_ns < newest {
            return None;
        }
        let bound = if start < init_lsn && self.created_ns.is_some() {
            self.created_ns
        } else {
            let start = start.max(init_lsn);
            self.samples
                .iter()
                .rev()
                .find(|s| s.flushed < start)
                .map(|s| s.at_ns)
        }?;
        Some(bound.saturating_sub(MARGIN_NS))
    }
}

#[cfg(test)]
#[path = "clock_tests.rs"]
mod tests;
