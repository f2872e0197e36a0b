//! Which backups and which archived WAL a retention policy keeps: a pure function of the
//! catalog, the policy and the time, shared by `ptrack delete --expired`, `ptrack show` (which
//! marks what would go) and the property test against a model. Nothing here touches storage;
//! [`crate::expire`] carries the plan out.
//!
//! The rules, after pg_probackup's (`src/delete.c: do_retention_internal`), with "kept if any
//! rule keeps it" between them:
//!
//! - redundancy N: the newest N OK full backups and every OK backup built on them;
//! - window D days: every OK backup that ends within the last D days, and the newest OK backup
//!   that ended before the window opened (the one a restore to the window's first moment
//!   starts from);
//! - a pinned backup (`keep_until` in the future) is kept whatever the policy says;
//! - a kept backup keeps its whole chain (an incremental is nothing without its parents);
//! - a backup that is not OK (ERROR, CORRUPT) goes once it is older than the oldest kept OK
//!   backup, and stays while newer (it is evidence of a recent failure); RUNNING ones are
//!   never touched;
//! - with no redundancy and no window, nothing expires.
//!
//! WAL: archived segments wholly before the start LSN of the oldest backup that keeps
//! point-in-time recovery go (every kept OK backup, or the newest `wal_depth` of them and the
//! window's first one). That rule is per LSN, not per timeline, so it never removes a segment a
//! kept backup's recovery could read, on its timeline or a later one; timeline history files
//! always stay (they are small and every path through the archive needs them).

use std::collections::{BTreeMap, BTreeSet};

use ptrack_format::catalog::{BackupInfo, Catalog, KEEP_FOREVER, Mode, Status};
use ptrack_format::policy::RetentionPolicy;
use ptrack_types::Lsn;

/// Why a backup stays or goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Why {
    /// No policy expires anything.
    NoPolicy,
    /// Among the newest N full backups' chains.
    Redundancy,
    /// Ends within the window.
    Window,
    /// The newest backup that ended before the window opened.
    WindowStart,
    /// Pinned until a time (or forever).
    Pinned {
        /// Unix seconds, [`KEEP_FOREVER`] for ever.
        until: i64,
    },
    /// Another kept backup is built on it.
    ParentOf {
        /// The kept descendant.
        child: String,
    },
    /// Still being taken.
    Running,
    /// Not OK, but newer than the oldest kept OK backup.
    RecentFailure,
    /// Outside every rule.
    Expired,
    /// Not OK and older than every kept OK backup.
    OldFailure,
    /// Left DELETING by an interrupted delete.
    BeingDeleted,
    /// Not OK, and its parent expires.
    ParentExpires,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::NoPolicy => f.write_str("no retention policy is set"),
            Why::Redundancy => f.write_str("within the redundancy"),
            Why::Window => f.write_str("within the window"),
            Why::WindowStart => f.write_str("the restore point where the window opens"),
            Why::Pinned { until } if *until == KEEP_FOREVER => f.write_str("pinned forever"),
            Why::Pinned { until } => write!(f, "pinned until {until} (Unix time)"),
            Why::ParentOf { child } => write!(f, "kept backup {child} is built on it"),
            Why::Running => f.write_str("running"),
            Why::RecentFailure => f.write_str("not OK, newer than the oldest kept backup"),
            Why::Expired => f.write_str("outside the retention policy"),
            Why::OldFailure => f.write_str("not OK, older than every kept backup"),
            Why::BeingDeleted => f.write_str("left by an interrupted delete"),
            Why::ParentExpires => f.write_str("not OK, and its parent expires"),
        }
    }
}

/// The verdict on one backup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// The backup.
    pub id: String,
    /// Kept (`false`: expired).
    pub keep: bool,
    /// Why.
    #[serde(flatten)]
    pub why: Why,
}

/// What a policy keeps of an instance at one moment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    /// One verdict per backup, in ID order.
    pub verdicts: Vec<Verdict>,
    /// Archived WAL wholly before this LSN is not needed (`None`: keep all WAL).
    pub wal_keep_from: Option<Lsn>,
}

impl Plan {
    /// The expired backups, in ID order.
    pub fn expired(&self) -> impl Iterator<Item = &Verdict> {
        self.verdicts.iter().filter(|v| !v.keep)
    }

    /// The verdict on `id`.
    pub fn verdict(&self, id: &str) -> Option<&Verdict> {
        self.verdicts.iter().find(|v| v.id == id)
    }
}

/// What `policy` keeps of `cat` at Unix time `now`.
pub fn plan(cat: &Catalog, policy: &RetentionPolicy, now: i64) -> Plan {
    let mut kept: BTreeMap<String, Why> = BTreeMap::new();
    let ok: Vec<&BackupInfo> = cat
        .backups
        .iter()
        .filter(|b| b.status == Status::Ok)
        .collect();
    // A backup being taken keeps its parents too (under the instance lock none is: the lock
    // marks a dead one's ERROR; `show` may see a live one).
    for b in cat.backups.iter().filter(|b| b.status == Status::Running) {
        kept.insert(b.id.clone(), Why::Running);
    }
    if policy.expires() {
        keep_by_rules(cat, &ok, policy, now, &mut kept);
    } else {
        for b in &cat.backups {
            kept.insert(b.id.clone(), Why::NoPolicy);
        }
    }
    keep_chains(cat, &mut kept);
    let oldest_kept_ok = ok
        .iter()
        .find(|b| kept.contains_key(&b.id))
        .map(|b| b.id.clone());
    let mut verdicts: Vec<Verdict> = Vec::with_capacity(cat.backups.len());
    for b in &cat.backups {
        let mut v = verdict(b, &kept, oldest_kept_ok.as_deref());
        // A failure kept as evidence must not outlive its parent (parents come first in ID
        // order; one that does not is kept, the safe side).
        let parent_goes = b
            .parent
            .as_deref()
            .is_some_and(|p| verdicts.iter().any(|pv| pv.id == p && !pv.keep));
        if v.why == Why::RecentFailure && parent_goes {
            v = Verdict {
                id: b.id.clone(),
                keep: false,
                why: Why::ParentExpires,
            };
        }
        verdicts.push(v);
    }
    let wal_keep_from = wal_keep_from(&ok, &kept, policy, now);
    Plan {
        verdicts,
        wal_keep_from,
    }
}

/// The redundancy, window and pin rules.
fn keep_by_rules(
    cat: &Catalog,
    ok: &[&BackupInfo],
    policy: &RetentionPolicy,
    now: i64,
    kept: &mut BTreeMap<String, Why>,
) {
    for b in &cat.backups {
        if b.pinned_at(now) {
            let until = b.keep_until.unwrap_or(KEEP_FOREVER);
            kept.insert(b.id.clone(), Why::Pinned { until });
        }
    }
    if let Some(n) = policy.redundancy {
        let fulls = ok.iter().rev().filter(|b| b.mode == Mode::Full);
        for full in fulls.take(n as usize) {
            kept.entry(full.id.clone()).or_insert(Why::Redundancy);
            for d in cat.descendants(&full.id) {
                if d.status == Status::Ok {
                    kept.entry(d.id.clone()).or_insert(Why::Redundancy);
                }
            }
        }
    }
    if let Some(days) = policy.window_days {
        let opens = window_opens(now, days);
        for b in ok.iter().filter(|b| restore_time(b) >= opens) {
            kept.entry(b.id.clone()).or_insert(Why::Window);
        }
        if let Some(b) = ok.iter().rev().find(|b| restore_time(b) < opens) {
            kept.entry(b.id.clone()).or_insert(Why::WindowStart);
        }
    }
}

/// Unix time at which a window of `days` days opens.
fn window_opens(now: i64, days: u32) -> i64 {
    now.saturating_sub(i64::from(days) * 86_400)
}

/// The moment a backup restores to (its end; its start when the end is unknown).
fn restore_time(b: &BackupInfo) -> i64 {
    b.end_time.unwrap_or(b.start_time)
}

/// Every parent of a kept backup is kept (with the child that needs it as the reason).
fn keep_chains(cat: &Catalog, kept: &mut BTreeMap<String, Why>) {
    let ids: Vec<String> = kept.keys().cloned().collect();
    for id in ids {
        let Some(mut child) = cat.get(&id) else {
            continue;
        };
        let mut seen = BTreeSet::new();
        while let Some(p) = child.parent.as_deref().and_then(|p| cat.get(p)) {
            if !seen.insert(p.id.as_str()) {
                break;
            }
            kept.entry(p.id.clone()).or_insert(Why::ParentOf {
                child: child.id.clone(),
            });
            child = p;
        }
    }
}

fn verdict(b: &BackupInfo, kept: &BTreeMap<String, Why>, oldest_kept_ok: Option<&str>) -> Verdict {
    let (keep, why) = match (b.status, kept.get(&b.id)) {
        (Status::Running, _) => (true, Why::Running),
        (Status::Deleting, _) => (false, Why::BeingDeleted),
        (_, Some(w)) => (true, w.clone()),
        (Status::Ok, None) => (false, Why::Expired),
        (Status::Error | Status::Corrupt, None) => match oldest_kept_ok {
            Some(o) if b.id.as_str() > o => (true, Why::RecentFailure),
            // With no kept OK backup nothing is older than one: keep the evidence.
            None => (true, Why::RecentFailure),
            Some(_) => (false, Why::OldFailure),
        },
    };
    Verdict {
        id: b.id.clone(),
        keep,
        why,
    }
}

/// The start LSN of the oldest backup that keeps point-in-time recovery.
fn wal_keep_from(
    ok: &[&BackupInfo],
    kept: &BTreeMap<String, Why>,
    policy: &RetentionPolicy,
    now: i64,
) -> Option<Lsn> {
    if !policy.expires() {
        return None;
    }
    let kept_ok: Vec<&BackupInfo> = ok
        .iter()
        .filter(|b| kept.contains_key(&b.id))
        .copied()
        .collect();
    let bases: Vec<&BackupInfo> = match policy.wal_depth {
        None => kept_ok,
        Some(depth) => {
            let mut bases: Vec<&BackupInfo> =
                kept_ok.iter().rev().take(depth as usize).copied().collect();
            if let Some(days) = policy.window_days {
                let opens = window_opens(now, days);
                let first = kept_ok.iter().rev().find(|b| restore_time(b) < opens);
                bases.extend(first.copied());
            }
            bases
        }
    };
    // No kept OK backup (none was ever taken): nothing says which WAL is needed; keep it all.
    bases.iter().map(|b| b.start_lsn).min()
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;
