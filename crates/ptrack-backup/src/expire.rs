//! Removing backups and archived WAL: `ptrack delete -i ID` (with its descendants when told),
//! `ptrack delete --expired` under the retention policy ([`crate::retention`]), pinning, and
//! the stored policy itself. Both backends alike, through the instance's storage.
//!
//! A delete is crash-safe by its order: with the instance lock held, every backup to remove is
//! first recorded DELETING, children before parents (from then on nothing restores from it or
//! builds on it, whatever objects remain); then each one's manifest, objects and record go,
//! newest first. Killed at any point, each backup is still whole and OK, or DELETING, or gone;
//! the next command that takes the lock finishes what is DELETING
//! (`ptrack_format::repo::Instance::lock`). Archived WAL goes oldest first, so an interrupted
//! expiry never leaves a gap in what remains.

use ptrack_format::catalog::{BackupInfo, Catalog, Status};
use ptrack_format::policy::RetentionPolicy;
use ptrack_format::repo::{Instance, Lock, Repository};
use ptrack_format::{archived, repo};
use ptrack_types::Lsn;
use ptrack_wal::segment::SegmentName;
use serde::Serialize;

use crate::retention::{self, Plan};
use crate::{Refusal, Result};

/// What a delete removed (or, with `dry_run`, would remove).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Deletion {
    /// Backups, newest first.
    pub backups: Vec<String>,
    /// Archived WAL files, oldest first.
    pub wal: Vec<String>,
    /// Nothing was removed: this is what would have been.
    pub dry_run: bool,
    /// Archived WAL before this LSN was expired (`None`: WAL was not touched).
    pub wal_keep_from: Option<Lsn>,
}

/// Options of [`delete_expired`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ExpireOptions {
    /// Fields set here replace the stored policy's for this run (0 unsets).
    pub over: RetentionPolicy,
    /// Only say what would go.
    pub dry_run: bool,
    /// Leave the WAL archive alone.
    pub keep_wal: bool,
}

/// Deletes backup `id` of the instance (the only one, or `instance`); with `descendants`, every
/// backup built on it too, else such backups are a refusal naming them.
pub fn delete_backup(
    repo: &Repository,
    instance: Option<u64>,
    id: &str,
    descendants: bool,
    dry_run: bool,
) -> Result<Deletion> {
    let inst = repo.only_instance(instance)?;
    let lock = inst.lock("delete a backup")?;
    let cat = inst.catalog_locked(&lock)?;
    let b = recorded(&inst, &cat, id)?;
    refuse_running(b)?;
    let below: Vec<&BackupInfo> = cat.descendants(id);
    if !below.is_empty() && !descendants {
        return Err(Refusal::HasDescendants {
            id: id.to_string(),
            descendants: below.iter().map(|d| d.id.clone()).collect(),
        }
        .into());
    }
    for d in &below {
        refuse_running(d)?;
    }
    let mut ids: Vec<String> = below.iter().map(|d| d.id.clone()).collect();
    ids.push(id.to_string());
    remove(&inst, &lock, &cat, ids, dry_run)
}

/// The record of `id`, or the refusal naming it.
fn recorded<'a>(inst: &Instance, cat: &'a Catalog, id: &str) -> Result<&'a BackupInfo> {
    Ok(cat.get(id).ok_or_else(|| Refusal::NoSuchBackup {
        id: id.to_string(),
        sysid: inst.info.system_identifier,
    })?)
}

fn refuse_running(b: &BackupInfo) -> Result<()> {
    if b.status == Status::Running {
        return Err(Refusal::DeleteRunning(b.id.clone()).into());
    }
    Ok(())
}

/// Removes `ids` (a set closed under descendants): all marked DELETING, then removed, newest
/// first.
fn remove(
    inst: &Instance,
    lock: &Lock,
    cat: &Catalog,
    mut ids: Vec<String>,
    dry_run: bool,
) -> Result<Deletion> {
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.dedup();
    if !dry_run {
        for id in &ids {
            if let Some(b) = cat.get(id)
                && b.status != Status::Deleting
            {
                let mut marked = b.clone();
                marked.status = Status::Deleting;
                inst.save_record(&marked, lock)?;
            }
        }
        for id in &ids {
            inst.finish_delete(id, lock)?;
        }
    }
    Ok(Deletion {
        backups: ids,
        dry_run,
        ..Deletion::default()
    })
}

/// Applies the retention policy (the stored one, with `opts.over` on top) at Unix time `now`:
/// expired backups are deleted, then the archived WAL no kept backup needs. Returns the plan
/// and what was removed.
pub fn delete_expired(
    repo: &Repository,
    instance: Option<u64>,
    opts: &ExpireOptions,
    now: i64,
) -> Result<(RetentionPolicy, Plan, Deletion)> {
    let inst = repo.only_instance(instance)?;
    let lock = inst.lock("delete expired backups")?;
    let policy = inst.retention()?.overridden_by(&opts.over);
    let cat = inst.catalog_locked(&lock)?;
    let plan = retention::plan(&cat, &policy, now);
    let ids: Vec<String> = plan.expired().map(|v| v.id.clone()).collect();
    let mut done = remove(&inst, &lock, &cat, ids, opts.dry_run)?;
    if let (false, Some(from)) = (opts.keep_wal, plan.wal_keep_from) {
        done.wal = expire_wal(&inst, &lock, from, opts.dry_run)?;
        done.wal_keep_from = Some(from);
    }
    Ok((policy, plan, done))
}

/// What the stored policy would do now (for `ptrack show`), without the lock.
pub fn preview(inst: &Instance, cat: &Catalog, now: i64) -> Result<(RetentionPolicy, Plan)> {
    let policy = inst.retention()?;
    let plan = retention::plan(cat, &policy, now);
    Ok((policy, plan))
}

/// The OK backups whose point-in-time recovery the archive must serve, and the IDs of those
/// whose recovery the stored policy's WAL depth gave up (they restore to their own end from the
/// WAL stored in them; `validate --archive` reports no gap after them).
pub fn pitr_backups(
    inst: &Instance,
    cat: &Catalog,
    now: i64,
) -> Result<(Vec<BackupInfo>, Vec<String>)> {
    let (policy, plan) = preview(inst, cat, now)?;
    let horizon = plan.wal_keep_from.filter(|_| policy.wal_depth.is_some());
    let (mut served, mut given_up) = (Vec::new(), Vec::new());
    for b in cat.backups.iter().filter(|b| b.status == Status::Ok) {
        match horizon {
            Some(h) if b.start_lsn < h => given_up.push(b.id.clone()),
            _ => served.push(b.clone()),
        }
    }
    Ok((served, given_up))
}

/// Removes archived segments (whole or `.partial`) and backup history files that end at or
/// before `from`, oldest first. Timeline history files stay.
fn expire_wal(inst: &Instance, lock: &Lock, from: Lsn, dry_run: bool) -> Result<Vec<String>> {
    let seg = inst.info.wal_seg_size;
    let listing = archived::list(inst.store(), inst.dir())?;
    let mut doomed: Vec<(u64, archived::WalFile)> = Vec::new();
    let mut consider = |name: &str, file: archived::WalFile| {
        if let Some(s) = SegmentName::parse(name, seg)
            && seg.start(s.segno + 1) <= from
        {
            doomed.push((s.segno, file));
        }
    };
    for name in &listing.segments {
        let file = archived::WalFile::Segment {
            name: name.clone(),
            partial: false,
        };
        consider(name, file);
    }
    for name in &listing.partial {
        let file = archived::WalFile::Segment {
            name: name.clone(),
            partial: true,
        };
        consider(name, file);
    }
    for f in &listing.backup_histories {
        if let archived::WalFile::BackupHistory { segment, .. } = f {
            consider(&segment.clone(), f.clone());
        }
    }
    doomed.sort();
    let mut names = Vec::with_capacity(doomed.len());
    for (_, file) in doomed {
        if !dry_run {
            lock.check()?;
            inst.store()
                .delete(&archived::wal_key(inst.dir(), &file)?)?;
        }
        names.push(file.file_name());
    }
    Ok(names)
}

/// Stores a new retention policy: the stored one with the fields of `over` replaced (0
/// unsets). Returns the policy now stored.
pub fn set_policy(
    repo: &Repository,
    instance: Option<u64>,
    over: &RetentionPolicy,
) -> Result<RetentionPolicy> {
    let inst = repo.only_instance(instance)?;
    let lock = inst.lock("set the retention policy")?;
    let policy = inst.retention()?.overridden_by(over);
    inst.save_retention(&policy, &lock)?;
    Ok(policy)
}

/// Pins backup `id` until Unix time `until` (`KEEP_FOREVER`: forever), or unpins it (`None`).
pub fn pin(
    repo: &Repository,
    instance: Option<u64>,
    id: &str,
    until: Option<i64>,
) -> Result<BackupInfo> {
    let inst = repo.only_instance(instance)?;
    let lock = inst.lock("pin a backup")?;
    let cat = inst.catalog_locked(&lock)?;
    let b = recorded(&inst, &cat, id)?;
    if b.status != Status::Ok {
        return Err(Refusal::PinNotOk {
            id: id.to_string(),
            status: b.status,
        }
        .into());
    }
    let mut b = b.clone();
    b.keep_until = until;
    inst.save_record(&b, &lock)?;
    Ok(b)
}

/// Now, Unix seconds.
pub fn now() -> i64 {
    repo::now()
}

#[cfg(test)]
#[path = "expire_tests.rs"]
mod tests;
