//! `ptrack delete`, `ptrack set-retention`, `ptrack pin` / `unpin`, and the retention part of
//! `ptrack backup --delete-expired` and `ptrack show`: options in, report out; the decisions
//! are `ptrack_backup::retention`'s and the removal `ptrack_backup::expire`'s.

use anyhow::Result;
use clap::Args;
use ptrack_backup::expire::{self, Deletion, ExpireOptions};
use ptrack_backup::retention::Plan;
use ptrack_backup::target::parse_time;
use ptrack_format::catalog::KEEP_FOREVER;
use ptrack_format::policy::RetentionPolicy;
use ptrack_format::repo::Repository;

use crate::EXIT_OK;
use crate::backups::{RepoArgs, format_time, repo_owner};

/// Retention options (each replaces the stored policy's value; 0 unsets it).
#[derive(Debug, Args, Default, Clone)]
pub struct RetentionArgs {
    /// Keep the newest N full backups with their incrementals.
    #[arg(long = "retention-redundancy", value_name = "N")]
    redundancy: Option<u32>,
    /// Keep every backup needed to restore to any point of the last N days.
    #[arg(long = "retention-window", value_name = "DAYS")]
    window: Option<u32>,
    /// Keep archived WAL for point-in-time recovery from the newest N kept backups only.
    #[arg(long = "wal-depth", value_name = "N")]
    wal_depth: Option<u32>,
}

impl RetentionArgs {
    pub fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            redundancy: self.redundancy,
            window_days: self.window,
            wal_depth: self.wal_depth,
        }
    }
}

/// Options of `ptrack delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Cluster (system identifier) when the repository holds several.
    #[arg(long)]
    instance: Option<u64>,
    /// The backup to delete.
    #[arg(
        short = 'i',
        long = "backup-id",
        required_unless_present = "expired",
        conflicts_with = "expired"
    )]
    id: Option<String>,
    /// Delete the backups built on it too (otherwise they are a refusal naming them).
    #[arg(long = "with-descendants", requires = "id")]
    with_descendants: bool,
    /// Delete what the retention policy expires, and the archived WAL no kept backup needs.
    #[arg(long)]
    expired: bool,
    #[command(flatten)]
    retention: RetentionArgs,
    /// With --expired: leave the WAL archive alone.
    #[arg(long = "keep-wal", requires = "expired")]
    keep_wal: bool,
    /// Print what would be deleted; delete nothing.
    #[arg(long = "dry-run")]
    dry_run: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Options of `ptrack set-retention`.
#[derive(Debug, Args)]
pub struct SetRetentionArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Cluster (system identifier) when the repository holds several.
    #[arg(long)]
    instance: Option<u64>,
    #[command(flatten)]
    retention: RetentionArgs,
}

/// One backup of a repository.
#[derive(Debug, Args)]
pub struct BackupRef {
    #[command(flatten)]
    repo: RepoArgs,
    /// Cluster (system identifier) when the repository holds several.
    #[arg(long)]
    instance: Option<u64>,
    /// The backup.
    #[arg(short = 'i', long = "backup-id")]
    id: String,
}

/// Options of `ptrack pin`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("until").required(true).args(["ttl", "expire_time", "forever"])))]
pub struct PinArgs {
    #[command(flatten)]
    backup: BackupRef,
    /// Keep it for this long from now: N followed by s, min, h or d (e.g. 30d).
    #[arg(long, value_parser = parse_ttl)]
    ttl: Option<i64>,
    /// Keep it until this time ('YYYY-MM-DD HH:MM:SS', UTC unless a zone is given).
    #[arg(long = "expire-time", value_parser = parse_expire_time)]
    expire_time: Option<i64>,
    /// Keep it forever.
    #[arg(long)]
    forever: bool,
}

/// Options of `ptrack unpin`.
#[derive(Debug, Args)]
pub struct UnpinArgs {
    #[command(flatten)]
    backup: BackupRef,
}

fn parse_ttl(s: &str) -> Result<i64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected N followed by s, min, h or d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, min, h or d")),
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("{s:?}: must be positive and below 292 billion years"))
}

fn parse_expire_time(s: &str) -> Result<i64, String> {
    let t =
        parse_time(s).ok_or_else(|| format!("{s:?}: expected 'YYYY-MM-DD[ HH:MM[:SS]][ ZONE]'"))?;
    Ok(t.utc_seconds - i64::from(t.offset.unwrap_or(0)))
}

/// `ptrack delete`.
pub fn delete(a: &DeleteArgs) -> Result<u8> {
    repo_owner(&a.repo.repo)?;
    let repo = a.repo.open()?;
    if let Some(id) = &a.id {
        let d = expire::delete_backup(&repo, a.instance, id, a.with_descendants, a.dry_run)?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&d)?);
        } else {
            print_deletion(&d);
        }
        return Ok(EXIT_OK);
    }
    let opts = ExpireOptions {
        over: a.retention.policy(),
        dry_run: a.dry_run,
        keep_wal: a.keep_wal,
    };
    expired(&repo, a.instance, &opts, a.json)
}

/// Applies the retention policy and prints what went (also `ptrack backup --delete-expired`).
pub fn expired(
    repo: &Repository,
    instance: Option<u64>,
    opts: &ExpireOptions,
    json: bool,
) -> Result<u8> {
    let (policy, plan, d) = expire::delete_expired(repo, instance, opts, expire::now())?;
    if json {
        let v = serde_json::json!({"policy": policy, "plan": plan, "deleted": d});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(EXIT_OK);
    }
    println!("ptrack: retention policy: {policy}");
    if !policy.expires() {
        println!("ptrack: no redundancy or window is set: nothing expires (ptrack set-retention)");
    }
    for v in plan.expired() {
        println!("  backup {}: expired ({})", v.id, v.why);
    }
    print_deletion(&d);
    Ok(EXIT_OK)
}

fn print_deletion(d: &Deletion) {
    let verb = if d.dry_run { "would delete" } else { "deleted" };
    if d.backups.is_empty() {
        println!("ptrack: no backup to delete");
    } else {
        println!(
            "ptrack: {verb} {} backup(s): {}",
            d.backups.len(),
            d.backups.join(", ")
        );
    }
    if let Some(from) = d.wal_keep_from {
        println!(
            "ptrack: {verb} {} archived WAL file(s) before {from}{}",
            d.wal.len(),
            match (d.wal.first(), d.wal.last()) {
                (Some(a), Some(b)) => format!(" ({a} … {b})"),
                _ => String::new(),
            }
        );
    }
}

/// `ptrack set-retention`.
pub fn set_retention(a: &SetRetentionArgs) -> Result<u8> {
    repo_owner(&a.repo.repo)?;
    let repo = a.repo.open()?;
    let p = expire::set_policy(&repo, a.instance, &a.retention.policy())?;
    println!("ptrack: retention policy: {p}");
    Ok(EXIT_OK)
}

/// `ptrack pin`.
pub fn pin(a: &PinArgs) -> Result<u8> {
    let until = match (a.ttl, a.expire_time, a.forever) {
        (Some(t), _, _) => expire::now().saturating_add(t),
        (_, Some(t), _) => t,
        _ => KEEP_FOREVER,
    };
    set_pin(&a.backup, Some(until))
}

/// `ptrack unpin`.
pub fn unpin(a: &UnpinArgs) -> Result<u8> {
    set_pin(&a.backup, None)
}

fn set_pin(b: &BackupRef, until: Option<i64>) -> Result<u8> {
    repo_owner(&b.repo.repo)?;
    let repo = b.repo.open()?;
    let info = expire::pin(&repo, b.instance, &b.id, until)?;
    match until {
        Some(t) => println!("ptrack: backup {} pinned {}", info.id, pinned_text(t)),
        None => println!("ptrack: backup {} unpinned", info.id),
    }
    Ok(EXIT_OK)
}

/// "until YYYY-MM-DD HH:MM:SS UTC" or "forever".
pub fn pinned_text(until: i64) -> String {
    if until == KEEP_FOREVER {
        "forever".into()
    } else {
        format!("until {} UTC", format_time(until))
    }
}

/// The retention note `ptrack show` prints after a backup's status.
pub fn show_note(plan: &Plan, id: &str, keep_until: Option<i64>, now: i64) -> String {
    let mut note = String::new();
    if let Some(t) = keep_until.filter(|&t| t > now) {
        note.push_str(&format!(", pinned {}", pinned_text(t)));
    }
    if plan.verdict(id).is_some_and(|v| !v.keep) {
        note.push_str(", expired");
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times() {
        assert_eq!(parse_ttl("30d"), Ok(30 * 86_400));
        assert_eq!(parse_ttl("90min"), Ok(5400));
        assert_eq!(parse_ttl("12"), Ok(12));
        assert!(parse_ttl("0d").is_err());
        assert!(parse_ttl("3w").is_err());
        assert!(parse_ttl("d").is_err());
        assert!(parse_ttl("99999999999999999d").is_err());
        assert_eq!(parse_expire_time("1970-01-02 00:00:00"), Ok(86_400));
        assert_eq!(parse_expire_time("1970-01-02 01:00:00+01"), Ok(86_400));
        assert!(parse_expire_time("tomorrow").is_err());
    }
}
