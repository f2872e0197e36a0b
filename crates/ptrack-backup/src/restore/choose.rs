//! Which backup a restore starts from: the one asked for, or the newest OK one that is
//! consistent before the recovery target and lies on the target timeline's history (as
//! `xlogrecovery.c` checks that the target timeline is a child of the backup's); and the newer
//! backups passed over, for the user.

use ptrack_format::catalog::{BackupInfo, Catalog, Status};
use ptrack_format::repo::Instance;

use crate::target::RecoveryTarget;
use crate::timelines::TimelinePath;
use crate::{Error, Refusal, Result};

/// Picks the backup: the one asked for, or the newest OK one whose consistency point lies
/// before the recovery target and on the target timeline's `path` (when known). It must be OK,
/// on the path and able to reach the target.
pub fn choose_backup(
    instance: &Instance,
    cat: &Catalog,
    id: Option<&str>,
    target: Option<&RecoveryTarget>,
    path: Option<&TimelinePath>,
) -> Result<BackupInfo> {
    let off_path = |b: &BackupInfo| match (path, b.timeline, b.stop_lsn) {
        (Some(p), Some(t), Some(s)) => p.why_not_on(t, s).map(|w| {
            format!(
                "backup {} (timeline {t}) is not on the way to timeline {}: {w}",
                b.id,
                p.target()
            )
        }),
        _ => None,
    };
    let sysid = instance.info.system_identifier;
    let b = match id {
        Some(id) => cat.get(id).cloned().ok_or_else(|| {
            Error::from(Refusal::NoSuchBackup {
                id: id.to_string(),
                sysid,
            })
        })?,
        None => {
            let mut ok = cat
                .backups
                .iter()
                .rev()
                .filter(|b| b.status == Status::Ok)
                .peekable();
            if ok.peek().is_none() {
                return Err(Refusal::NoOkBackup(sysid).into());
            }
            let mut ok: Vec<&BackupInfo> = ok.collect();
            let first = ok[0].clone();
            ok.retain(|b| target.is_none_or(|t| t.before_consistency(b).is_none()));
            let before = ok.first().map(|b| (*b).clone());
            ok.retain(|b| off_path(b).is_none());
            ok.first().map(|b| (*b).clone()).ok_or_else(|| {
                let why = match &before {
                    Some(b) => off_path(b),
                    None => target.and_then(|t| t.before_consistency(&first)),
                };
                Error::from(Refusal::NoneBeforeTarget {
                    sysid,
                    why: why.unwrap_or_default(),
                })
            })?
        }
    };
    if b.status != Status::Ok {
        return Err(Refusal::NotRestorable {
            id: b.id.clone(),
            status: b.status,
            error: b.error.clone(),
        }
        .into());
    }
    if let Some(why) = target.and_then(|t| t.before_consistency(&b)) {
        return Err(Refusal::AfterTarget(why).into());
    }
    if let Some(why) = off_path(&b) {
        return Err(Refusal::OffTargetTimeline(why).into());
    }
    Ok(b)
}

/// Backups newer than the one restored, with their status when it is not OK.
pub(super) fn passed_over(cat: &Catalog, b: &BackupInfo) -> Vec<String> {
    cat.backups
        .iter()
        .filter(|x| x.id > b.id)
        .map(|x| {
            format!(
                "newer backup {} ({}) was not restored{}",
                x.id,
                x.status,
                x.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            )
        })
        .collect()
}
