//! An instance's retention policy, kept in the repository beside its catalog so that every
//! host and every `ptrack delete --expired` applies the same one (pg_probackup keeps it in its
//! instance configuration, pgBackRest in each host's configuration file):
//!
//! ```text
//! <sysid>/retention   a `retention-policy` document (envelope, version 1); absent: no policy
//! ```
//!
//! What the numbers mean, and which backups and WAL they keep, is decided in
//! `ptrack_backup::retention`; this module only stores them.

use serde::{Deserialize, Serialize};

use crate::repo::{Instance, Lock};
use crate::{Result, envelope};

/// `retention-policy` document format version.
pub const POLICY_VERSION: u32 = 1;

/// How long backups and archived WAL are kept. Every field unset keeps everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Keep the newest N full backups with their incrementals (`--retention-redundancy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redundancy: Option<u32>,
    /// Keep every backup needed to restore to any point of the last N days
    /// (`--retention-window`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_days: Option<u32>,
    /// Keep archived WAL for point-in-time recovery from the newest N kept backups only; older
    /// kept backups still restore to their own end from the WAL stored in them (`--wal-depth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_depth: Option<u32>,
}

impl RetentionPolicy {
    /// Whether the policy expires anything (a redundancy or a window is set).
    pub fn expires(&self) -> bool {
        self.redundancy.is_some() || self.window_days.is_some()
    }

    /// This policy with each field `over` sets replaced (command-line options over the stored
    /// policy); a field set to 0 in `over` is unset.
    pub fn overridden_by(&self, over: &RetentionPolicy) -> RetentionPolicy {
        let pick = |mine: Option<u32>, theirs: Option<u32>| match theirs {
            Some(0) => None,
            Some(n) => Some(n),
            None => mine,
        };
        RetentionPolicy {
            redundancy: pick(self.redundancy, over.redundancy),
            window_days: pick(self.window_days, over.window_days),
            wal_depth: pick(self.wal_depth, over.wal_depth),
        }
    }
}

impl std::fmt::Display for RetentionPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(n) = self.redundancy {
            parts.push(format!("redundancy {n}"));
        }
        if let Some(d) = self.window_days {
            parts.push(format!("window {d} day(s)"));
        }
        if let Some(w) = self.wal_depth {
            parts.push(format!("WAL depth {w}"));
        }
        if parts.is_empty() {
            f.write_str("none (everything is kept)")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

impl Instance {
    /// The stored retention policy (the default, keeping everything, when none is stored).
    pub fn retention(&self) -> Result<RetentionPolicy> {
        let k = self.dir().join("retention")?;
        match envelope::read(self.store(), &k, "retention-policy", POLICY_VERSION) {
            Err(e) if e.is_not_found() => Ok(RetentionPolicy::default()),
            r => r,
        }
    }

    /// Stores `policy` (one atomic put, with the instance lock held).
    pub fn save_retention(&self, policy: &RetentionPolicy, lock: &Lock) -> Result<()> {
        lock.check()?;
        let k = self.dir().join("retention")?;
        envelope::write(self.store(), &k, "retention-policy", POLICY_VERSION, policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_set_fields_and_zero_unsets() {
        let stored = RetentionPolicy {
            redundancy: Some(2),
            window_days: Some(7),
            wal_depth: None,
        };
        let over = RetentionPolicy {
            redundancy: Some(0),
            window_days: None,
            wal_depth: Some(3),
        };
        let p = stored.overridden_by(&over);
        assert_eq!(p.redundancy, None);
        assert_eq!(p.window_days, Some(7));
        assert_eq!(p.wal_depth, Some(3));
        assert!(p.expires());
        assert!(!RetentionPolicy::default().expires());
        assert_eq!(p.to_string(), "window 7 day(s), WAL depth 3");
    }
}
