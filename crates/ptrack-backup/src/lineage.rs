//! Telling restored clusters apart. Two clusters restored from the same backup end recovery on
//! the same new timeline at the same switch point, so their timeline histories are equal; only
//! their WAL differs, and that only while it is still in `pg_wal`. So every `ptrack restore`
//! appends a line to `ptrack.restored` in the restored data directory — a random 128-bit restore
//! ID, the backup restored and the time — and every backup records the IDs it finds there (its
//! *lineage*). A backup can be the parent of an incremental only when its lineage is a prefix of
//! the server's: a cluster restored twice has two lineages, and a backup of one is never the
//! parent of the other's. PostgreSQL ignores the file; a base backup copies it.

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// The file's name in the data directory.
pub const FILE: &str = "ptrack.restored";

/// The restore IDs recorded in `content`, oldest first (the first word of each line).
pub fn ids(content: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(content)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.len() == 32 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
        .collect()
}

/// The lineage of the cluster in `pgdata` (empty when it was never restored by ptrack).
pub fn of_data_dir(pgdata: &Path) -> Result<Vec<String>> {
    let p = pgdata.join(FILE);
    match std::fs::read(&p) {
        Ok(c) => Ok(ids(&c)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(&p, "read", e)),
    }
}

/// `content` with a line for a new restore of backup `id` appended.
pub fn append(content: &[u8], id: &str, now: i64) -> Result<Vec<u8>> {
    let mut raw = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .map_err(|e| Error::io(Path::new("/dev/urandom"), "read", e))?;
    let mut out = content.to_vec();
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(
        format!(
            "{} restored from backup {id} at Unix time {now}\n",
            ptrack_format::paths::to_hex(&raw)
        )
        .as_bytes(),
    );
    Ok(out)
}

/// Whether a backup of lineage `parent` can be the parent of one of lineage `server`.
pub fn is_prefix(parent: &[String], server: &[String]) -> bool {
    parent.len() <= server.len() && parent.iter().zip(server).all(|(a, b)| a == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lineages_grow_and_fork() {
        let a = append(b"", "0TPDS8E", 1).unwrap();
        let b = append(b"", "0TPDS8E", 1).unwrap();
        let (la, lb) = (ids(&a), ids(&b));
        assert_eq!(la.len(), 1);
        assert_ne!(la, lb, "two restores of one backup differ");
        let a2 = append(&a, "0TPDS9X", 2).unwrap();
        let la2 = ids(&a2);
        assert!(is_prefix(&la, &la2) && is_prefix(&[], &la2));
        assert!(!is_prefix(&lb, &la2) && !is_prefix(&la2, &la));
    }
}
