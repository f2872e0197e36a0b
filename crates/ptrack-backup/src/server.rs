//! The SQL a backup runs in its one session: the non-exclusive base backup functions
//! (`pg_backup_start`/`pg_backup_stop` from PG15, `pg_start_backup`/`pg_stop_backup` with
//! `exclusive => false` in PG13 and 14; `src/backend/access/transam/xlogfuncs.c`), a temporary
//! physical replication slot that keeps the backup's WAL from being recycled, and the ptrack API
//! driven as pg_probackup does (ptrack spec §1.7): version from `pg_extension`, `SHOW
//! ptrack.map_size`, `ptrack_init_lsn()`, `ptrack_get_pagemapset(lsn)`, all schema-qualified.

use std::str::FromStr;

use ptrack_types::{Lsn, TimeLineId};

use crate::conn::ConnOptions;
pub use crate::conn::pg_message;
use crate::{Error, Refusal, Result, ServerError};

/// Where the server is in its history: its timeline and WAL position now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Current timeline (insert timeline on a primary, replay timeline on a standby).
    pub timeline: TimeLineId,
    /// Current WAL position (insert on a primary, replay on a standby).
    pub lsn: Lsn,
}

/// The ptrack extension as installed in the connected database.
#[derive(Debug, Clone)]
pub struct PtrackExt {
    /// Schema holding its functions.
    pub schema: String,
    /// `extversion`.
    pub version: String,
}

/// What `pg_backup_stop` returns.
#[derive(Debug, Clone)]
pub struct StopInfo {
    /// Stop LSN.
    pub lsn: Lsn,
    /// Content of `backup_label`.
    pub label: String,
    /// Content of `tablespace_map` (empty when there are no tablespaces).
    pub tablespace_map: String,
}

/// One backup session.
pub struct Session {
    client: postgres::Client,
    /// Server major version.
    pub major: u32,
    /// Whether the server is a standby.
    pub in_recovery: bool,
    dbname: String,
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A failed query (or connection step), with the server's message.
fn failed(query: Option<&str>, e: &postgres::Error) -> Error {
    ServerError::Failed {
        query: query.map(str::to_string),
        message: pg_message(e),
    }
    .into()
}

/// An answer no PostgreSQL gives.
fn unexpected(query: Option<&str>, what: &'static str, value: &str) -> Error {
    ServerError::Unexpected {
        query: query.map(str::to_string),
        what,
        value: value.to_string(),
    }
    .into()
}

impl Session {
    /// Connects and reads the version.
    pub fn open(opts: &ConnOptions) -> Result<Session> {
        let dbname = opts.resolve()?.dbname;
        let mut client = opts.connect()?;
        let row = client
            .query_one(
                "SELECT current_setting('server_version_num')::int, pg_is_in_recovery()",
                &[],
            )
            .map_err(|e| failed(None, &e))?;
        let num: i32 = row.get(0);
        Ok(Session {
            client,
            major: (num / 10000) as u32,
            in_recovery: row.get(1),
            dbname,
        })
    }

    fn text(&mut self, sql: &str) -> Result<String> {
        let row = self
            .client
            .query_one(sql, &[])
            .map_err(|e| failed(Some(sql), &e))?;
        Ok(row.get(0))
    }

    fn lsn(&mut self, sql: &str) -> Result<Lsn> {
        let t = self.text(sql)?;
        Lsn::from_str(&t).map_err(|_| unexpected(Some(sql), "LSN", &t))
    }

    /// `pg_control_system().system_identifier`.
    pub fn system_identifier(&mut self) -> Result<u64> {
        let t = self.text("SELECT system_identifier::text FROM pg_control_system()")?;
        t.parse()
            .map_err(|_| unexpected(None, "system identifier", &t))
    }

    /// Creates a temporary physical slot that reserves WAL from the last checkpoint's redo point
    /// (which precedes the backup's start) until the session ends. Returns a warning instead when
    /// the server will not (no free slot, no REPLICATION privilege).
    pub fn reserve_wal(&mut self, name: &str) -> Option<String> {
        match self.client.execute(
            "SELECT pg_create_physical_replication_slot($1, true, true)",
            &[&name],
        ) {
            Ok(_) => None,
            Err(e) => Some(format!(
                "could not create a temporary replication slot to keep the backup's WAL ({}); \
                 WAL recycled during the backup will make it fail",
                pg_message(&e)
            )),
        }
    }

    /// Starts a non-exclusive backup with an immediate checkpoint; returns the start LSN.
    pub fn backup_start(&mut self, label: &str) -> Result<Lsn> {
        let sql = if self.major >= 15 {
            format!("SELECT pg_catalog.pg_backup_start('{label}', true)::text")
        } else {
            format!("SELECT pg_catalog.pg_start_backup('{label}', true, false)::text")
        };
        self.lsn(&sql)
    }

    /// Ends the backup (without waiting for archiving: the backup stores its own WAL).
    pub fn backup_stop(&mut self) -> Result<StopInfo> {
        let sql = if self.major >= 15 {
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_catalog.pg_backup_stop(false)"
        } else {
            "SELECT lsn::text, labelfile, spcmapfile FROM pg_catalog.pg_stop_backup(false, false)"
        };
        let row = self
            .client
            .query_one(sql, &[])
            .map_err(|e| failed(Some("pg_backup_stop"), &e))?;
        let lsn: String = row.get(0);
        Ok(StopInfo {
            lsn: Lsn::from_str(&lsn)
                .map_err(|_| unexpected(Some("pg_backup_stop"), "LSN", &lsn))?,
            label: row.get(1),
            tablespace_map: row.get::<_, Option<String>>(2).unwrap_or_default(),
        })
    }

    /// The position WAL is durable up to (flush on a primary, receive on a standby).
    pub fn wal_durable_lsn(&mut self) -> Result<Lsn> {
        if self.in_recovery {
            self.lsn("SELECT coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text")
        } else {
            self.lsn("SELECT pg_current_wal_flush_lsn()::text")
        }
    }

    /// The server's postmaster start time (Unix seconds) and port, as `postmaster.pid` records
    /// them.
    pub fn postmaster(&mut self) -> Result<(i64, u16)> {
        let t = self.text(
            "SELECT floor(extract(epoch FROM pg_catalog.pg_postmaster_start_time()))::bigint::text || ' ' || pg_catalog.current_setting('port')",
        )?;
        let (a, b) = t
            .split_once(' ')
            .ok_or_else(|| unexpected(None, "answer", &t))?;
        match (a.parse(), b.parse()) {
            (Ok(a), Ok(b)) => Ok((a, b)),
            _ => Err(unexpected(None, "answer", &t)),
        }
    }

    /// The server's timeline and WAL position now.
    pub fn position(&mut self) -> Result<Position> {
        if self.in_recovery {
            let row = self
                .client
                .query_one(
                    "SELECT greatest((SELECT max(received_tli) FROM pg_catalog.pg_stat_wal_receiver), \
                     (SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()))::int, \
                     pg_catalog.pg_last_wal_replay_lsn()::text",
                    &[],
                )
                .map_err(|e| failed(None, &e))?;
            let lsn: Option<String> = row.get(1);
            let tli = row.get::<_, i32>(0);
            let timeline = u32::try_from(tli)
                .map(TimeLineId)
                .map_err(|_| unexpected(None, "timeline", &tli.to_string()))?;
            return Ok(Position {
                timeline,
                lsn: lsn
                    .and_then(|l| Lsn::from_str(&l).ok())
                    .unwrap_or(Lsn::INVALID),
            });
        }
        let t = self.text(
            "SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_insert_lsn()) || ' ' || pg_catalog.pg_current_wal_insert_lsn()::text",
        )?;
        let (file, lsn) = t
            .split_once(' ')
            .ok_or_else(|| unexpected(None, "WAL position", &t))?;
        let timeline = file
            .get(..8)
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .map(TimeLineId)
            .ok_or_else(|| unexpected(None, "WAL file name", file))?;
        Ok(Position {
            timeline,
            lsn: Lsn::from_str(lsn).map_err(|_| unexpected(None, "LSN", lsn))?,
        })
    }

    /// Ends a backup that failed after `backup_start`, so the server does not keep it open (and
    /// does not warn about a backend exiting during a backup). Errors are ignored: the session
    /// ending aborts the backup anyway.
    pub fn abort_backup(&mut self) {
        let sql = if self.major >= 15 {
            "SELECT 1 FROM pg_catalog.pg_backup_stop(false)"
        } else {
            "SELECT 1 FROM pg_catalog.pg_stop_backup(false, false)"
        };
        let _ = self.client.query(sql, &[]);
    }

    /// Waits (up to 60 s) until WAL up to `lsn` is durable on the server.
    pub fn wait_wal_durable(&mut self, lsn: Lsn) -> Result<()> {
        let t0 = std::time::Instant::now();
        while self.wal_durable_lsn()? < lsn {
            if t0.elapsed() > std::time::Duration::from_secs(60) {
                return Err(ServerError::NotFlushed(lsn).into());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(())
    }

    /// Finds the ptrack extension and checks it is enabled (spec §1.7 steps 1–2) and callable.
    pub fn ptrack(&mut self) -> Result<PtrackExt> {
        let rows = self
            .client
            .query(
                "SELECT n.nspname::text, e.extversion FROM pg_catalog.pg_extension e \
                 JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'ptrack'",
                &[],
            )
            .map_err(|e| failed(None, &e))?;
        let Some(row) = rows.first() else {
            return Err(Refusal::NoExtension(self.dbname.clone()).into());
        };
        let ext = PtrackExt {
            schema: row.get(0),
            version: row.get(1),
        };
        let numeric = parse_ext_version(&ext.version);
        if numeric.is_none_or(|v| v < 200) {
            return Err(Refusal::OldExtension(ext.version).into());
        }
        let guc = if numeric == Some(200) {
            "ptrack_map_size"
        } else {
            "ptrack.map_size"
        };
        let size = self
            .text(&format!("SHOW {guc}"))
            .map_err(|e| Error::from(Refusal::NotLoaded(e.to_string())))?;
        if size == "0" || size == "-1" {
            return Err(Refusal::PtrackDisabled { guc, size }.into());
        }
        // Callable as this user and in this schema, before anything is started.
        self.ptrack_init_lsn(&ext)?;
        Ok(ext)
    }

    /// `ptrack_init_lsn()`.
    pub fn ptrack_init_lsn(&mut self, ext: &PtrackExt) -> Result<Lsn> {
        self.lsn(&format!(
            "SELECT {}.ptrack_init_lsn()::text",
            quote_ident(&ext.schema)
        ))
    }

    /// `ptrack_get_pagemapset(since)`: (segment path, bitmap of segment-relative blocks).
    pub fn ptrack_pagemapset(
        &mut self,
        ext: &PtrackExt,
        since: Lsn,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let sql = format!(
            "SELECT path, pagemap FROM {}.ptrack_get_pagemapset('{since}') ORDER BY 1",
            quote_ident(&ext.schema)
        );
        let query = format!("ptrack_get_pagemapset('{since}')");
        let rows = self
            .client
            .query(&sql, &[])
            .map_err(|e| failed(Some(&query), &e))?;
        if let Some(r) = rows.first().filter(|r| r.len() != 2) {
            let shape = format!("{} columns", r.len());
            return Err(unexpected(Some(&query), "row shape", &shape));
        }
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

/// Parses an extension version as pg_probackup does (`%u.%2u` → major*100 + minor).
pub fn parse_ext_version(v: &str) -> Option<u32> {
    let (a, b) = v.split_once('.')?;
    if b.is_empty()
        || b.len() > 2
        || !a.bytes().all(|c| c.is_ascii_digit())
        || !b.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    Some(a.parse::<u32>().ok()? * 100 + b.parse::<u32>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_versions() {
        assert_eq!(parse_ext_version("2.4"), Some(204));
        assert_eq!(parse_ext_version("2.10"), Some(210));
        assert_eq!(parse_ext_version("1.7"), Some(107));
        assert_eq!(parse_ext_version("2.4beta"), None);
        assert_eq!(parse_ext_version("2"), None);
    }
}
