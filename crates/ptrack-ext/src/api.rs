//! The SQL API of ptrack 2.2–2.4 (spec ptrack.md §1): `ptrack_version()`, `ptrack_init_lsn()`,
//! `ptrack_get_pagemapset(pg_lsn)` and `ptrack_get_change_stat(pg_lsn)`, with the original's
//! messages. pgrx has no `pg_lsn` type, so the functions take and return it as its by-value
//! 64-bit datum and declare their SQL by hand; EXECUTE stays with PUBLIC (no REVOKE).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pgrx::prelude::*;
use ptrack_map::{FsmRule, ScanConfig, Strategy};
use ptrack_types::Lsn;

use crate::{shmem, tracker};

/// Waits until `done()` or `ptrack.wait_timeout`; false on timeout.
fn wait_for(done: &dyn Fn() -> bool) -> bool {
    let limit = Duration::from_millis(u64::try_from(crate::WAIT_TIMEOUT.get()).unwrap_or(60_000));
    let started = Instant::now();
    while !done() {
        if started.elapsed() > limit {
            return false;
        }
        tracker::wake();
        pg_sys::check_for_interrupts!();
        // SAFETY: a plain sleep; interrupts are checked above.
        unsafe { pg_sys::pg_usleep(100) };
    }
    true
}

fn wait_until_ready() {
    let Some(rt) = shmem::runtime() else { return };
    if !wait_for(&|| rt.ready.load(Ordering::Acquire) == 1) {
        error!(
            "ptrack: the ptrack tracker has not started after {} ms; see the server log",
            crate::WAIT_TIMEOUT.get()
        );
    }
}

#[pg_extern(
    immutable,
    sql = "CREATE FUNCTION ptrack_version() RETURNS text IMMUTABLE STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'ptrack_version_wrapper';"
)]
fn ptrack_version() -> &'static str {
    crate::PTRACK_VERSION
}

#[pg_extern(
    sql = "CREATE FUNCTION ptrack_init_lsn() RETURNS pg_lsn VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'ptrack_init_lsn_wrapper';"
)]
fn ptrack_init_lsn() -> i64 {
    let Some(map) = shmem::map() else {
        warning!("ptrack is disabled");
        return 0;
    };
    wait_until_ready();
    map.init_lsn().0 as i64
}

#[pg_extern(
    sql = "CREATE FUNCTION ptrack_get_pagemapset(start_lsn pg_lsn) RETURNS TABLE (path text, pagecount bigint, pagemap bytea) STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'ptrack_get_pagemapset_wrapper';"
)]
fn ptrack_get_pagemapset(
    start_lsn: i64,
) -> TableIterator<
    'static,
    (
        name!(path, String),
        name!(pagecount, i64),
        name!(pagemap, Vec<u8>),
    ),
> {
    let Some(map) = shmem::map() else {
        error!("ptrack is disabled");
    };
    let start = Lsn(start_lsn as u64);
    wait_until_ready();
    let init_before = map.init_lsn();
    if start < init_before {
        warning!(
            "ptrack: start LSN {start} is before init_lsn {init_before}: changes before {init_before} are not tracked, the result is incomplete"
        );
    }
    // Every change the server made durable before this call must be in the map.
    let (target, _) = tracker::wal_position();
    let rt = shmem::runtime();
    if let Some(rt) = rt
        && !wait_for(&|| rt.caught_up.load(Ordering::Acquire) >= target.0)
    {
        error!(
            "ptrack: the tracker has not processed WAL up to {target} within ptrack.wait_timeout ({} ms); it is at {}; see the server log",
            crate::WAIT_TIMEOUT.get(),
            Lsn(rt.caught_up.load(Ordering::Acquire))
        );
    }
    let init_after = map.init_lsn();
    if start >= init_before && start < init_after {
        error!(
            "ptrack: WAL was lost while this call waited: changes before {init_after} are not tracked; take a full backup"
        );
    }
    let (_, control) = match shmem::identity() {
        Ok(x) => x,
        Err(e) => error!("{e}"),
    };
    // SAFETY: plain reads of server state.
    let hints_logged = unsafe {
        (pg_sys::DataChecksumsEnabled() || pg_sys::wal_log_hints) && !pg_sys::RecoveryInProgress()
    };
    let cfg = ScanConfig {
        root: crate::pgdata(),
        ts_version_dir: control.major.tablespace_dir(control.catalog_version_no),
        blcksz: control.blcksz,
        relseg_blocks: control.relseg_size,
        strategy: if crate::FULL_SCAN.get() {
            Strategy::Full
        } else {
            Strategy::Skip
        },
        fsm: fsm_rule(hints_logged, start, init_after),
    };
    let sets = change_sets(start, init_after, target, control.system_identifier);
    let (rows, stats) = match ptrack_map::pagemapset_with(&map, start, &cfg, sets.as_ref()) {
        Ok(x) => x,
        Err(e) => error!("{e}"),
    };
    debug1!(
        "ptrack_get_pagemapset({start}): {} rows; {} files, {} skipped, {} chunks skipped, {} blocks probed, {} blocks from change sets ({}), {} FSM forks whole ({:?})",
        rows.len(),
        stats.files,
        stats.files_skipped,
        stats.chunks_skipped,
        stats.blocks_probed,
        stats.blocks_listed,
        if sets.is_some() { "used" } else { "not used" },
        stats.fsm_whole,
        cfg.fsm
    );
    TableIterator::new(
        rows.into_iter()
            .map(|r| (r.path, r.pagecount as i64, r.pagemap)),
    )
}

/// The change sets that hold every change from `start` up to `target` ([`ptrack_map::changelog`]):
/// the tracker is asked to cut the current one, then the chain is checked against this
/// timeline's history. `None` (probe the map) when they are not kept, do not reach back to
/// `start`, or cannot be read.
fn change_sets(
    start: Lsn,
    init_lsn: Lsn,
    target: Lsn,
    system_identifier: u64,
) -> Option<ptrack_map::changelog::Changes> {
    let dir = crate::changes_dir()?;
    let rt = shmem::runtime()?;
    if start < init_lsn || crate::FULL_SCAN.get() {
        return None;
    }
    rt.cut_request.fetch_max(target.0, Ordering::AcqRel);
    if !wait_for(&|| rt.sets_end.load(Ordering::Acquire) >= target.0) {
        debug1!("ptrack: change sets not cut up to {target} in time; probing the map");
        return None;
    }
    let names = ptrack_map::changelog::list(&dir);
    let (_, tli) = tracker::wal_position();
    let history =
        ptrack_map::follow::read_history(&crate::pgdata().join("pg_wal"), tli).unwrap_or_default();
    let timeline_of = |l| ptrack_map::follow::timeline_of(&history, tli, l);
    let chain = ptrack_map::changelog::covering(&names, start, target, timeline_of)?;
    match ptrack_map::changelog::read_chain(&dir, &chain, start, system_identifier) {
        Ok(u) => Some(u),
        Err(e) => {
            debug1!("ptrack: change set not used ({e}); probing the map");
            None
        }
    }
}

/// How FSM changes since `start` are found: from the map when they are WAL-logged, else by file
/// modification time since the moment `start` was reached ([`ptrack_map::clock`]).
fn fsm_rule(hints_logged: bool, start: Lsn, init_lsn: Lsn) -> FsmRule {
    if hints_logged {
        return FsmRule::Logged;
    }
    let state = shmem::runtime().map(|rt| rt.clock().read());
    let now = ptrack_map::clock::now_ns();
    FsmRule::ModifiedSince(state.and_then(|st| st.changed_since(start, init_lsn, now)))
}

extension_sql!(
    r#"
CREATE FUNCTION ptrack_get_change_stat(start_lsn pg_lsn)
    RETURNS TABLE (files bigint, pages numeric, "size, MB" numeric)
AS $body$
DECLARE
    page_bytes bigint := current_setting('block_size')::bigint;
BEGIN
    RETURN QUERY
        SELECT count(m.path), sum(m.pagecount)::numeric,
               page_bytes * sum(m.pagecount)::numeric / (1024.0 * 1024)
        FROM ptrack_get_pagemapset(start_lsn) AS m;
END
$body$ LANGUAGE plpgsql;
"#,
    name = "ptrack_get_change_stat",
    requires = [ptrack_get_pagemapset]
);
