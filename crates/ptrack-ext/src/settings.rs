//! The extension's settings: `ptrack.map_size` and `ptrack.map_location` (postmaster context,
//! checked before they are defined so that a bad value stops the server, see
//! `ptrack_map::settings`), `ptrack.wait_timeout` and `ptrack.full_scan` (any session). Mirrors
//! ptrack's `ptrack.c: _PG_init` (the GUC definition) and PostgreSQL's `guc.c:
//! parse_and_validate_value` (the messages).

use std::ffi::{CStr, CString};

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{PgLogLevel, PgSqlErrorCode, PostgresGucEnum};
use ptrack_map::MapLocation;
use ptrack_map::settings::{ParsedSize, SettingError, check_map_location, check_map_size};

/// `ptrack.map_size` in MB (0 = off).
pub static MAP_SIZE: GucSetting<i32> = GucSetting::<i32>::new(0);
/// `ptrack.map_location`: where the map file is kept.
pub static MAP_LOCATION: GucSetting<Location> = GucSetting::<Location>::new(Location::PgPtrack);
/// `ptrack.wait_timeout` in ms: how long `ptrack_get_pagemapset` waits for the tracker.
pub static WAIT_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(60_000);
/// `ptrack.full_scan`: use the original's full hash scan (for benchmarks).
pub static FULL_SCAN: GucSetting<bool> = GucSetting::<bool>::new(false);

/// The values of `ptrack.map_location` ([`MapLocation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PostgresGucEnum)]
pub enum Location {
    /// `$PGDATA/pg_ptrack/ptrack.map`.
    #[name = c"pg_ptrack"]
    PgPtrack,
    /// `$PGDATA/global/ptrack.map`, the original's.
    #[name = c"global"]
    Global,
}

/// The configured location.
pub fn map_location() -> MapLocation {
    match MAP_LOCATION.get() {
        Location::PgPtrack => MapLocation::PgPtrack,
        Location::Global => MapLocation::Global,
    }
}

/// The text the configuration gave `name` while it was still a placeholder (before the setting
/// is defined): the value `define_custom_variable` would apply with only a WARNING.
fn placeholder(name: &CStr) -> Option<String> {
    // SAFETY: GetConfigOption with missing_ok returns NULL or a string owned by guc.c that stays
    // valid until the setting changes; it is copied at once.
    unsafe {
        let p = pg_sys::GetConfigOption(name.as_ptr(), true, false);
        (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
    }
}

fn refuse(e: SettingError) -> ! {
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        e.message,
        "ptrack _PG_init",
    )
    .set_hint(e.hint)
    .report(PgLogLevel::ERROR);
    unreachable!("an ERROR report does not return")
}

/// Stops the server (an ERROR in the postmaster) when `ptrack.map_size` or `ptrack.map_location`
/// has a value they do not accept.
fn check_postmaster_values() {
    if let Some(text) = placeholder(c"ptrack.map_size") {
        let mut mb: i32 = 0;
        let mut hint: *const std::ffi::c_char = std::ptr::null();
        let ok = CString::new(text.as_str()).is_ok_and(|c| {
            // SAFETY: parse_int reads a NUL-terminated string and writes the two outputs.
            unsafe { pg_sys::parse_int(c.as_ptr(), &mut mb, pg_sys::GUC_UNIT_MB as i32, &mut hint) }
        });
        // SAFETY: the hint, when set, is a static string of guc.c.
        let hint = (!ok && !hint.is_null()).then(|| {
            unsafe { CStr::from_ptr(hint) }
                .to_string_lossy()
                .into_owned()
        });
        let parsed = if ok {
            ParsedSize::Mb(mb)
        } else {
            ParsedSize::Invalid(hint.as_deref())
        };
        if let Err(e) = check_map_size(&text, parsed, pg_sys::PG_MAJORVERSION_NUM) {
            refuse(e);
        }
    }
    if let Some(text) = placeholder(c"ptrack.map_location")
        && let Err(e) = check_map_location(&text)
    {
        refuse(e);
    }
}

/// Checks the postmaster settings, then defines every setting (from `_PG_init`).
pub fn define() {
    check_postmaster_values();
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
    GucRegistry::define_enum_guc(
        c"ptrack.map_location",
        c"Where the ptrack map file is kept: pg_ptrack (the data directory's pg_ptrack/) or global (global/, as the original ptrack).",
        c"PostgreSQL's pg_checksums and PostgreSQL 15's pg_basebackup stop at a map file in global/. A map found at the other location is moved.",
        &MAP_LOCATION,
        GucContext::Postmaster,
        GucFlags::default(),
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
}
