//! The map in shared memory and its file: size request, creation and load at startup, save.
//! Mirrors ptrack's `engine.c: ptrackMapInit, ptrackMapReadFromFile, ptrackCheckpoint,
//! ptrackCleanFiles` (spec ptrack.md §3.4–3.6). Loading checks magic, version, size, CRC-32C and
//! the cluster's system identifier (through `ptrack-map`, reading the file in parallel ranges
//! straight into shared memory); any failure logs the original's WARNING, deletes the file and
//! resets the map (a failed load may have stored part of it), whose `init_lsn` the tracker
//! sets. A map left at the other `ptrack.map_location` is moved; a map path that is not a
//! regular file is left alone and the map kept in memory only. A loaded map saved with another
//! `data_checksum_version` than `pg_control` has now (pg_checksums ran) moves `init_lsn`.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use pgrx::prelude::*;
use ptrack_map::files::{self, Found};
use ptrack_map::{Map, MapIdentity, MapLayout};

/// DETAIL of the warnings that leave the map in memory only.
pub const MEMORY_ONLY_DETAIL: &str = "The map is kept in memory only and cannot be saved: every restart moves init_lsn, and a full backup is needed before the next incremental one. Remove or rename what is in the way, or set ptrack.map_location.";

/// State shared with the tracker that is not saved.
#[repr(C)]
pub struct Runtime {
    /// 1 once the tracker has chosen its start (and `init_lsn`).
    pub ready: AtomicU64,
    /// Every record ending at or before this LSN has been marked.
    pub caught_up: AtomicU64,
    /// The tracker's latch (a pointer into its PGPROC), 0 when not running.
    pub tracker_latch: AtomicU64,
    /// 1 while the map files on disk hold the map as loaded (the first tracker continues their
    /// delta chain); the tracker takes it.
    pub file_in_sync: AtomicU64,
    /// The next delta's sequence number in the loaded chain.
    pub next_seq: AtomicU64,
    /// The change sets should reach this LSN (a caller of `ptrack_get_pagemapset` asks).
    pub cut_request: AtomicU64,
    /// How far the written change sets reach.
    pub sets_end: AtomicU64,
    /// When WAL positions were reached ([`ptrack_map::clock`]).
    pub clock: [AtomicU64; ptrack_map::clock::CLOCK_WORDS],
}

impl Runtime {
    /// The clock samples.
    pub fn clock(&self) -> ptrack_map::clock::Clock<'_> {
        ptrack_map::clock::Clock::of(&self.clock)
    }
}

static MAP_WORDS: AtomicPtr<AtomicU64> = AtomicPtr::new(std::ptr::null_mut());
static MAP_LEN: AtomicU64 = AtomicU64::new(0);
static DIRTY_WORDS: AtomicPtr<AtomicU64> = AtomicPtr::new(std::ptr::null_mut());
static DIRTY_LEN: AtomicU64 = AtomicU64::new(0);
static RUNTIME: AtomicPtr<Runtime> = AtomicPtr::new(std::ptr::null_mut());

static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;
#[cfg(not(any(feature = "pg13", feature = "pg14")))]
static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;

fn layout() -> Option<MapLayout> {
    MapLayout::for_size_mb(u32::try_from(crate::MAP_SIZE.get()).unwrap_or(0))
}

/// The map, when tracking is on and shared memory is attached.
pub fn map() -> Option<Map<'static>> {
    let p = MAP_WORDS.load(Ordering::Acquire);
    if p.is_null() {
        return None;
    }
    // SAFETY: the pointer and length were set from ShmemInitStruct, which lives as long as the
    // process.
    let words = unsafe { std::slice::from_raw_parts(p, MAP_LEN.load(Ordering::Acquire) as usize) };
    let d = DIRTY_WORDS.load(Ordering::Acquire);
    let dirty: &[AtomicU64] = if d.is_null() {
        &[]
    } else {
        // SAFETY: as above, from ShmemInitStruct.
        unsafe { std::slice::from_raw_parts(d, DIRTY_LEN.load(Ordering::Acquire) as usize) }
    };
    Some(Map::with_dirty(words, dirty))
}

/// The runtime state, when tracking is on.
pub fn runtime() -> Option<&'static Runtime> {
    // SAFETY: set from ShmemInitStruct and never freed.
    unsafe { RUNTIME.load(Ordering::Acquire).as_ref() }
}

/// This cluster's identity from `global/pg_control`.
pub fn identity() -> Result<(MapIdentity, ptrack_page::control::ControlFile), String> {
    let c = ptrack_page::control::read_control_file(&crate::pgdata())
        .map_err(|e| format!("ptrack: cannot read global/pg_control: {e}"))?;
    Ok((
        MapIdentity {
            system_identifier: c.system_identifier,
            major: c.major.number(),
            data_checksum_version: c.data_checksum_version,
        },
        c,
    ))
}

/// Writes a map file image durably.
fn write_file(path: &str, image: &[u8]) -> Result<(), String> {
    ptrack_durable::write_file(std::path::Path::new(path), image)
        .map_err(|e| format!("ptrack: could not write \"{path}\": {e}"))
}

fn runtime_bytes() -> usize {
    std::mem::size_of::<Runtime>()
}

fn dirty_bytes(l: MapLayout) -> usize {
    ptrack_map::mapsave::dirty_words(l.slots) * 8
}

fn request_space() {
    if let Some(l) = layout() {
        // SAFETY: called from the shmem request hook (or _PG_init before PG15).
        unsafe {
            pg_sys::RequestAddinShmemSpace(l.shmem_bytes() + runtime_bytes() + dirty_bytes(l))
        };
    }
}

#[cfg(not(any(feature = "pg13", feature = "pg14")))]
#[pg_guard]
unsafe extern "C-unwind" fn shmem_request() {
    // SAFETY: chaining to the previous hook as PostgreSQL requires.
    unsafe {
        if let Some(prev) = PREV_SHMEM_REQUEST {
            prev();
        }
    }
    request_space();
}

#[pg_guard]
unsafe extern "C-unwind" fn shmem_startup() {
    // SAFETY: chaining to the previous hook as PostgreSQL requires.
    unsafe {
        if let Some(prev) = PREV_SHMEM_STARTUP {
            prev();
        }
    }
    let Some(l) = layout() else { return };
    let mut found = false;
    // SAFETY: ShmemInitStruct under AddinShmemInitLock, as every extension does.
    let (words, rt) = unsafe {
        pg_sys::LWLockAcquire(
            &raw mut (*pg_sys::MainLWLockArray.add(21)).lock,
            pg_sys::LWLockMode::LW_EXCLUSIVE,
        );
        let words = pg_sys::ShmemInitStruct(c"ptrack map".as_ptr(), l.shmem_bytes(), &mut found)
            as *mut AtomicU64;
        let mut rt_found = false;
        let rt = pg_sys::ShmemInitStruct(c"ptrack runtime".as_ptr(), runtime_bytes(), &mut rt_found)
            as *mut Runtime;
        if !rt_found {
            std::ptr::write_bytes(rt as *mut u8, 0, runtime_bytes());
        }
        let mut dirty_found = false;
        let dirty = pg_sys::ShmemInitStruct(
            c"ptrack map dirty".as_ptr(),
            dirty_bytes(l),
            &mut dirty_found,
        ) as *mut AtomicU64;
        if !dirty_found {
            std::ptr::write_bytes(dirty as *mut u8, 0, dirty_bytes(l));
        }
        pg_sys::LWLockRelease(&raw mut (*pg_sys::MainLWLockArray.add(21)).lock);
        DIRTY_LEN.store((dirty_bytes(l) / 8) as u64, Ordering::Release);
        DIRTY_WORDS.store(dirty, Ordering::Release);
        (words, rt)
    };
    MAP_LEN.store(l.words() as u64, Ordering::Release);
    MAP_WORDS.store(words, Ordering::Release);
    RUNTIME.store(rt, Ordering::Release);
    if !found {
        load_or_reset();
    }
}

/// Runs `f` with every signal blocked on this thread, then restores the mask: threads spawned by
/// `f` inherit the full mask, so that no PostgreSQL signal handler ever runs on them (signals
/// arriving meanwhile stay pending and are delivered to this thread afterwards).
fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    /// Restores the saved mask when dropped, also when `f` panics.
    struct Restore(libc::sigset_t);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: restores the mask saved below, for this thread only.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
        }
    }
    // SAFETY: sigfillset/pthread_sigmask on local sets, for this thread only.
    let _restore = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        Restore(old)
    };
    f()
}

/// Loads the map file `f` into `map` ([`Map::load_file`], on up to
/// [`ptrack_map::mapload::MAX_THREADS`] threads); on failure logs the original's WARNING and
/// returns false. The map's content is then unspecified: the caller resets it (and deletes the
/// file).
fn load(map: &Map<'static>, f: &files::MapFile, id: MapIdentity) -> bool {
    let path = f.path.display();
    let start = std::time::Instant::now();
    // The loader's threads only read the file and store into the map's atomics (no PostgreSQL
    // function), and are all joined before load_file returns (scoped threads).
    match with_signals_blocked(|| map.load_file(&f.path, &f.file, id)) {
        Ok(loaded) => {
            log!(
                "ptrack: loaded map \"{path}\": init_lsn {}, tracked up to {} ({} bytes in {:.3} s, {} threads)",
                map.init_lsn(),
                map.tracked().0,
                loaded.bytes,
                start.elapsed().as_secs_f64(),
                loaded.threads
            );
            true
        }
        Err(e) => {
            ereport!(
                WARNING,
                PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
                e.to_string(),
                format!("Deleting file \"{path}\" and reinitializing ptrack map.")
            );
            false
        }
    }
}

/// Applies the delta chain next to a loaded map file ([`ptrack_map::mapsave::load_deltas`]) and
/// records where the chain continues.
fn load_chain(map: &Map<'static>, dir: &std::path::Path, id: MapIdentity) {
    let report = ptrack_map::mapsave::load_deltas(map, dir, id);
    if report.applied > 0 {
        log!(
            "ptrack: applied {} map deltas ({} bytes): tracked up to {}",
            report.applied,
            report.bytes,
            map.tracked().0
        );
    }
    if let Some(seq) = report.missing {
        warning!(
            "ptrack: map delta \"{}\" is missing, so the {} deltas after it are not used; the map is as of the delta before it, tracked up to {}, and WAL from there is read again",
            dir.join(ptrack_map::mapsave::delta_name(seq)).display(),
            report.removed.len(),
            map.tracked().0
        );
    }
    if let Some((p, e)) = &report.stopped {
        warning!(
            "ptrack: map delta \"{}\" not used: {e}; it and the {} deltas after it are removed; the map is as of the delta before it, tracked up to {}, and WAL from there is read again",
            p.display(),
            report.removed.len().saturating_sub(1),
            map.tracked().0
        );
    }
    for e in &report.problems {
        warning!("ptrack: {e}");
    }
    if let Some(rt) = runtime() {
        rt.next_seq
            .store(u64::from(report.applied) + 1, Ordering::Release);
        let in_sync = report.problems.is_empty() && map.tracks_dirty();
        rt.file_in_sync.store(u64::from(in_sync), Ordering::Release);
    }
}

/// Writes a map loaded from the other location here, whole (its deltas applied), before the
/// files there are removed: never a moment without a file.
fn move_here(map: &Map<'static>, from: &str, path: &str, location: files::MapLocation) {
    crate::remove_map_files(location, false, false);
    match write_file(path, &map.to_file_bytes()) {
        Ok(()) => log!(
            "ptrack: map moved from \"{from}\" to \"{path}\" (ptrack.map_location is '{}')",
            location.name()
        ),
        Err(e) => warning!("{e}"),
    }
    if let Some(rt) = runtime() {
        rt.next_seq.store(1, Ordering::Release);
        rt.file_in_sync.store(0, Ordering::Release);
    }
}

/// Fills a new shared map from its file (or one left at the other location), or resets it;
/// then removes whatever is left at the other location, so that no stale map can be loaded
/// later.
fn load_or_reset() {
    let Some(map) = map() else { return };
    let (id, control) = match identity() {
        Ok(x) => x,
        Err(e) => error!("{e}"),
    };
    let pgdata = crate::pgdata();
    let location = crate::map_location();
    let path = crate::map_path();
    // Every branch that returns false leaves the map to the reset below: a failed load may
    // have stored part of the file.
    let loaded = match files::find_map(&pgdata, location) {
        Found::Here(f) => {
            let ok = load(&map, &f, id);
            drop(f);
            if ok {
                load_chain(&map, &location.dir(&pgdata), id);
            } else {
                crate::remove_map_files(location, false, false);
            }
            ok
        }
        Found::Moved(f) => {
            let ok = load(&map, &f, id);
            let from_s = f.path.display().to_string();
            drop(f);
            if ok {
                load_chain(&map, &location.other().dir(&pgdata), id);
                move_here(&map, &from_s, &path, location);
            }
            ok
        }
        Found::Unusable(e) => {
            ereport!(
                WARNING,
                crate::file_error_code(&e),
                format!("ptrack read map: cannot use map file: {e}"),
                MEMORY_ONLY_DETAIL
            );
            false
        }
        Found::Nothing => {
            let dir = location.dir(&pgdata);
            let orphans = files::delta_files(&dir);
            if !orphans.is_empty() {
                warning!(
                    "ptrack: {} map deltas found in \"{}\" without the map file \"{path}\": the map is lost and a new one starts; init_lsn moves forward and a full backup is needed before the next incremental one",
                    orphans.len(),
                    dir.display()
                );
                crate::remove_map_files(location, false, false);
            }
            false
        }
    };
    crate::remove_map_files(location.other(), true, true);
    if !loaded {
        map.reset(id);
        if let Some(dir) = crate::changes_dir()
            && let Err(e) = ptrack_map::changelog::clear(&dir)
        {
            warning!(
                "ptrack: could not remove change sets in \"{}\": {e}",
                dir.display()
            );
        }
        // Before any other process runs: every change the new map can know of comes later.
        if let Some(rt) = runtime() {
            rt.clock().map_created(ptrack_map::clock::now_ns());
        }
        return;
    }
    if let Some(change) = map.check_checksum_version(control.data_checksum_version, control.redo) {
        ereport!(
            WARNING,
            PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            change.to_string()
        );
    }
}

/// Installs the shared-memory hooks (called from `_PG_init` when tracking is on).
pub fn install_hooks() {
    // SAFETY: hooks are installed once, from _PG_init in the postmaster.
    unsafe {
        PREV_SHMEM_STARTUP = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(shmem_startup);
        #[cfg(not(any(feature = "pg13", feature = "pg14")))]
        {
            PREV_SHMEM_REQUEST = pg_sys::shmem_request_hook;
            pg_sys::shmem_request_hook = Some(shmem_request);
        }
    }
    #[cfg(any(feature = "pg13", feature = "pg14"))]
    request_space();
}
