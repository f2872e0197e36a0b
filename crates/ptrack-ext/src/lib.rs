//! The `ptrack` extension: ptrack 2.x's SQL API on stock PostgreSQL 15–18 (spec ptrack.md §1–2).
//! A thin shell: the GUC, the shared-memory hooks, the background worker and the SQL functions
//! translate between PostgreSQL and `ptrack-map`, which holds the logic. Mirrors ptrack's
//! `ptrack.c: _PG_init` (preload check, GUC, `wal_level` check, file cleanup at 0).
//!
//! * [`shmem`]: the map in shared memory, loaded from and saved to `global/ptrack.map`;
//! * [`tracker`]: the background worker that follows WAL and marks changed blocks;
//! * [`api`]: `ptrack_version`, `ptrack_init_lsn`, `ptrack_get_pagemapset`, `ptrack_get_change_stat`.

use std::ffi::CStr;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;

pub mod api;
pub mod shmem;
pub mod tracker;

::pgrx::pg_module_magic!(name, version);

/// `ptrack.map_size` in MB (0 = off).
pub static MAP_SIZE: GucSetting<i32> = GucSetting::<i32>::new(0);
/// `ptrack.wait_timeout` in ms: how long `ptrack_get_pagemapset` waits for the tracker.
pub static WAIT_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(60_000);
/// `ptrack.full_scan`: use the original's full hash scan (for benchmarks).
pub static FULL_SCAN: GucSetting<bool> = GucSetting::<bool>::new(false);

/// The version `ptrack_version()` reports and `extversion` carries.
pub const PTRACK_VERSION: &str = "2.4";

fn data_dir() -> String {
    // SAFETY: DataDir is set by the postmaster before libraries are preloaded and never freed.
    unsafe {
        let p = pg_sys::DataDir;
        if p.is_null() {
            ".".to_string()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

/// `$PGDATA/global/ptrack.map`.
pub fn map_path() -> String {
    format!("{}/global/ptrack.map", data_dir())
}

/// Data directory as a path.
pub fn pgdata() -> std::path::PathBuf {
    std::path::PathBuf::from(data_dir())
}

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: reading a postmaster global flag.
    if unsafe { !pg_sys::process_shared_preload_libraries_in_progress } {
        error!(
            "ptrack module must be initialized by Postmaster. Put the following line to configuration file: shared_preload_libraries='ptrack'"
        );
    }
    GucRegistry::define_int_guc(
        c"ptrack.map_size",
        c"Sets the size of the ptrack map (0 turns ptrack off).",
        c"Changing it resets the map: the next incremental backup needs a new full backup first.",
        &MAP_SIZE,
        0,
        ptrack_map::map::MAX_MAP_SIZE_MB as i32,
        GucContext::Postmaster,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_int_guc(
        c"ptrack.wait_timeout",
        c"How long ptrack_get_pagemapset waits for the tracker to reach the current WAL position.",
        c"",
        &WAIT_TIMEOUT,
        1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_bool_guc(
        c"ptrack.full_scan",
        c"Scan every block like the original ptrack instead of skipping unchanged files and chunks.",
        c"For benchmarks; results are the same.",
        &FULL_SCAN,
        GucContext::Userset,
        GucFlags::default(),
    );
    // SAFETY: wal_level is a plain global set from the configuration before preloading.
    let minimal = unsafe { pg_sys::wal_level } == pg_sys::WalLevel::WAL_LEVEL_MINIMAL as i32;
    if MAP_SIZE.get() != 0 && minimal {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "assign_ptrack_map_size: cannot use ptrack if wal_level is minimal",
            "Set wal_level to \"replica\" or higher, or turn off ptrack with \"ptrack.map_size=0\""
        );
    }
    if MAP_SIZE.get() == 0 {
        shmem::remove_map_files();
        return;
    }
    shmem::install_hooks();
    tracker::register();
}
