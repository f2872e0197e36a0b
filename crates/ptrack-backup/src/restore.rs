//! Restoring a backup: every file rebuilt from the chain (target → parents → full backup), the
//! stored WAL put into `pg_wal`, tablespaces relinked (`-T OLD=NEW`, `tablespace_map` rewritten
//! to match), recovery settings written when a recovery target is asked for, everything fsynced.
//! A data file's block comes from the newest backup of the chain that stored it, looking no
//! further back than a backup that stored the file whole; blocks no backup stored are zero (new,
//! never-written pages). Mirrors what PostgreSQL's `pg_combinebackup` does for its own format
//! (`src/bin/pg_combinebackup/reconstruct.c`) and what a server needs to start from a base backup
//! (`backup_label`, `recovery.signal`, `src/backend/access/transam/xlogrecovery.c`).

use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use ptrack_types::Lsn;

use crate::backup::{Progress, read_manifest};
use crate::bundle::{BundleReader, PageEntry};
use crate::catalog::{BackupInfo, Status};
use crate::manifest::{Entry, EntryKind, Manifest};
use crate::repo::{Instance, Repository};
use crate::{Error, Result, refused};

/// Where recovery should stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// As soon as the restored cluster is consistent (end of the backup).
    Immediate,
    /// At this LSN.
    Lsn(Lsn),
    /// At this time (`recovery_target_time` syntax).
    Time(String),
    /// After this transaction.
    Xid(String),
    /// At this named restore point.
    Name(String),
}

/// What to restore and where.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// New data directory (absent or empty).
    pub target: PathBuf,
    /// Backup to restore (default: the newest OK one).
    pub backup_id: Option<String>,
    /// Instance (system identifier) when the repository holds several.
    pub instance: Option<u64>,
    /// Tablespace relocations `OLD=NEW`.
    pub tablespace_map: Vec<(String, String)>,
    /// Recovery target; `None` lets the server recover to the end of the stored WAL.
    pub recovery_target: Option<RecoveryTarget>,
    /// `restore_command` to reach a WAL archive beyond the stored WAL.
    pub restore_command: Option<String>,
    /// Parallel writers.
    pub jobs: usize,
}

/// What was restored.
#[derive(Debug)]
pub struct RestoreReport {
    /// The backup.
    pub backup: BackupInfo,
    /// Backups read (the chain, newest first).
    pub chain: Vec<String>,
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// Picks the backup: the one asked for, or the newest OK one; it must be OK.
pub fn choose_backup(instance: &Instance, id: Option<&str>) -> Result<BackupInfo> {
    let cat = instance.catalog()?;
    let b = match id {
        Some(id) => cat.get(id).cloned().ok_or_else(|| {
            refused(format!(
                "backup {id} is not in the catalog of instance {} (`ptrack show` lists the backups)",
                instance.info.system_identifier
            ))
        })?,
        None => cat.latest_ok().cloned().ok_or_else(|| {
            refused(format!(
                "instance {} has no backup with status OK",
                instance.info.system_identifier
            ))
        })?,
    };
    if b.status != Status::Ok {
        return Err(refused(format!(
            "backup {} has status {}{}; only OK backups are restored",
            b.id,
            b.status,
            b.error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )));
    }
    Ok(b)
}

/// The chain of `b` with manifests, newest first, every link OK.
pub fn load_chain(instance: &Instance, b: &BackupInfo) -> Result<Vec<(BackupInfo, Manifest)>> {
    let cat = instance.catalog()?;
    let chain = cat.chain(&b.id).map_err(refused)?;
    let mut out = Vec::new();
    for c in chain {
        if c.status != Status::Ok {
            return Err(refused(format!(
                "backup {} needs backup {} which has status {}",
                b.id, c.id, c.status
            )));
        }
        out.push((c.clone(), read_manifest(instance, c)?));
    }
    Ok(out)
}

fn is_empty_dir(p: &Path) -> Result<bool> {
    match std::fs::read_dir(p) {
        Ok(mut it) => Ok(it.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::io(p, "read", e)),
    }
}

fn recovery_settings(t: &RecoveryTarget, restore_command: Option<&str>, id: &str) -> String {
    let q = |s: &str| s.replace('\'', "''");
    let target = match t {
        RecoveryTarget::Immediate => "recovery_target = 'immediate'".to_string(),
        RecoveryTarget::Lsn(l) => format!("recovery_target_lsn = '{l}'"),
        RecoveryTarget::Time(s) => format!("recovery_target_time = '{}'", q(s)),
        RecoveryTarget::Xid(s) => format!("recovery_target_xid = '{}'", q(s)),
        RecoveryTarget::Name(s) => format!("recovery_target_name = '{}'", q(s)),
    };
    // Archive recovery needs a restore_command; one that finds nothing makes the server read the
    // WAL restored into pg_wal.
    let cmd = restore_command.unwrap_or("/bin/false");
    format!(
        "\n# Recovery settings written by ptrack restore of backup {id}\n{target}\nrecovery_target_action = 'promote'\nrestore_command = '{}'\n",
        q(cmd)
    )
}

enum Job<'a> {
    Data {
        path: PathBuf,
        rel: &'a str,
        blocks: u32,
    },
    File {
        path: PathBuf,
        entry: &'a Entry,
        wal: bool,
    },
}

/// Restores into `opts.target`.
pub fn run_restore(
    repo: &Repository,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let instance = repo.only_instance(opts.instance)?;
    let backup = choose_backup(&instance, opts.backup_id.as_deref())?;
    let chain = load_chain(&instance, &backup)?;
    let target_m = &chain[0].1;
    let blcksz = target_m.blcksz as usize;
    if !is_empty_dir(&opts.target)? {
        return Err(refused(format!(
            "restore target \"{}\" exists and is not empty; give an empty or new directory",
            opts.target.display()
        )));
    }
    // Tablespace locations, remapped, all checked before anything is written.
    let mut links = Vec::new();
    let mut used = vec![false; opts.tablespace_map.len()];
    for e in &target_m.entries {
        if let EntryKind::Link { target } = &e.kind {
            let mut to = target.clone();
            for (i, (old, new)) in opts.tablespace_map.iter().enumerate() {
                if old == target {
                    to = new.clone();
                    used[i] = true;
                }
            }
            if !Path::new(&to).is_absolute() {
                return Err(refused(format!(
                    "tablespace location \"{to}\" must be an absolute path"
                )));
            }
            if !is_empty_dir(Path::new(&to))? {
                return Err(refused(format!(
                    "tablespace directory \"{to}\" (for {}) exists and is not empty; relocate it with -T {target}=NEWDIR",
                    e.path
                )));
            }
            links.push((e.path.clone(), target.clone(), to));
        }
    }
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(refused(format!(
            "-T {}={}: backup {} has no tablespace at \"{}\"",
            opts.tablespace_map[i].0, opts.tablespace_map[i].1, backup.id, opts.tablespace_map[i].0
        )));
    }
    let root = &opts.target;
    let mkdir = |p: &Path| -> Result<()> {
        ptrack_durable::create_private_dir(p).map_err(|e| Error::io(p, "create", e))
    };
    if !root.exists() {
        mkdir(root)?;
    }
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    dirs.insert(root.clone());
    for e in &target_m.entries {
        match &e.kind {
            EntryKind::Dir => {
                mkdir(&root.join(&e.path))?;
                dirs.insert(root.join(&e.path));
            }
            EntryKind::Link { .. } => {
                let (_, _, to) = links.iter().find(|l| l.0 == e.path).expect("collected");
                std::fs::create_dir_all(to)
                    .map_err(|err| Error::io(Path::new(to), "create", err))?;
                let lp = root.join(&e.path);
                std::os::unix::fs::symlink(to, &lp)
                    .map_err(|err| Error::io(&lp, "create link", err))?;
                dirs.insert(PathBuf::from(to));
            }
            _ => {}
        }
    }
    for sub in ["pg_wal/archive_status", "pg_wal/summaries"] {
        if sub.ends_with("summaries") && target_m.pg_major < 17 {
            continue;
        }
        mkdir(&root.join(sub))?;
        dirs.insert(root.join(sub));
    }
    let mut jobs: Vec<Job> = Vec::new();
    let mut total = 0u64;
    for e in &target_m.entries {
        let path = root.join(&e.path);
        match &e.kind {
            EntryKind::Data { blocks, size, .. } => {
                total += size;
                jobs.push(Job::Data {
                    path,
                    rel: &e.path,
                    blocks: *blocks,
                });
            }
            EntryKind::File { size, .. } => {
                total += size;
                jobs.push(Job::File {
                    path,
                    entry: e,
                    wal: false,
                });
            }
            _ => {}
        }
    }
    for e in &target_m.wal {
        if let EntryKind::File { size, .. } = &e.kind {
            total += size;
            jobs.push(Job::File {
                path: root.join("pg_wal").join(&e.path),
                entry: e,
                wal: true,
            });
        }
    }
    let size_of = |j: &Job| match j {
        Job::Data { blocks, .. } => u64::from(*blocks) * blcksz as u64,
        Job::File { entry, .. } => match entry.kind {
            EntryKind::File { size, .. } => size,
            _ => 0,
        },
    };
    jobs.sort_by_key(|j| std::cmp::Reverse(size_of(j)));
    progress.start(total);
    progress.step("restoring files");
    let backup_dirs: Vec<PathBuf> = chain
        .iter()
        .map(|(b, _)| instance.backup_dir(&b.id))
        .collect();
    let written = crate::parallel::run(
        opts.jobs,
        jobs.len(),
        |_| {
            Ok(chain
                .iter()
                .zip(&backup_dirs)
                .map(|((_, m), d)| BundleReader::new(d, m.compression))
                .collect::<Vec<_>>())
        },
        |readers, i| {
            let job = &jobs[i];
            let n = match job {
                Job::Data { path, rel, blocks } => {
                    write_data(&chain, readers, rel, *blocks, blcksz, path)?
                }
                Job::File { path, entry, wal } => {
                    let mut data = file_content(&chain, readers, entry, *wal)?;
                    if entry.path == "tablespace_map" && !*wal {
                        data = remap_tablespace_map(&data, &links);
                    }
                    let mut f = ptrack_durable::StagedFile::create(path)
                        .map_err(|e| Error::io(path, "create", e))?;
                    f.write_all(&data)
                        .map_err(|e| Error::io(path, "write", e))?;
                    f.commit_deferring_dir_sync()
                        .map_err(|e| Error::io(path, "fsync", e))?;
                    data.len() as u64
                }
            };
            progress.advance(size_of(job));
            Ok(n)
        },
        |_, _| Ok(()),
    )?;
    if let Some(t) = &opts.recovery_target {
        let auto = root.join("postgresql.auto.conf");
        let mut text = std::fs::read(&auto).unwrap_or_default();
        text.extend_from_slice(
            recovery_settings(t, opts.restore_command.as_deref(), &backup.id).as_bytes(),
        );
        ptrack_durable::write_file(&auto, &text).map_err(|e| Error::io(&auto, "write", e))?;
        let sig = root.join("recovery.signal");
        ptrack_durable::write_file(&sig, b"").map_err(|e| Error::io(&sig, "write", e))?;
    }
    progress.step("syncing directories");
    for d in &dirs {
        ptrack_durable::sync_dir(d).map_err(|e| Error::io(d, "fsync", e))?;
    }
    Ok(RestoreReport {
        chain: chain.iter().map(|(b, _)| b.id.clone()).collect(),
        backup,
        files: written.len() as u64,
        bytes: written.iter().sum(),
    })
}

/// Rewrites `tablespace_map` lines (`<oid> <path>`) for relocated tablespaces; `links` holds
/// (`pg_tblspc/<oid>`, old location, new location).
fn remap_tablespace_map(data: &[u8], links: &[(String, String, String)]) -> Vec<u8> {
    let text = String::from_utf8_lossy(data);
    let mut out = String::new();
    for line in text.lines() {
        let relocated = line.split_once(' ').and_then(|(oid, path)| {
            links
                .iter()
                .find(|(link, old, _)| link.rsplit('/').next() == Some(oid) && path == old)
                .map(|(_, _, new)| format!("{oid} {new}"))
        });
        out.push_str(relocated.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out.into_bytes()
}

/// The content of a whole file: from the newest chain member that stored it.
fn file_content(
    chain: &[(BackupInfo, Manifest)],
    readers: &mut [BundleReader],
    entry: &Entry,
    wal: bool,
) -> Result<Vec<u8>> {
    let EntryKind::File { size, crc, .. } = entry.kind else {
        unreachable!("file jobs hold file entries")
    };
    for (k, (b, m)) in chain.iter().enumerate() {
        let e = if wal {
            if k > 0 {
                break;
            }
            Some(entry)
        } else {
            m.entry(&entry.path)
        };
        match e.map(|e| &e.kind) {
            Some(EntryKind::File {
                size: s,
                crc: c,
                stored,
            }) if *s == size && *c == crc => {
                if let Some(st) = stored {
                    return readers[k].blob(*st, size, crc).map_err(|err| {
                        Error::Corrupt(format!("backup {}: file \"{}\": {err}", b.id, entry.path))
                    });
                }
            }
            _ => break,
        }
    }
    Err(Error::Corrupt(format!(
        "file \"{}\" of backup {} is recorded as unchanged, but no earlier backup of the chain stores it",
        entry.path, chain[0].0.id
    )))
}

/// Rebuilds one relation segment from the chain and writes it.
fn write_data(
    chain: &[(BackupInfo, Manifest)],
    readers: &mut [BundleReader],
    rel: &str,
    blocks: u32,
    blcksz: usize,
    path: &Path,
) -> Result<u64> {
    let mut slots: Vec<Option<(usize, u32, PageEntry)>> = vec![None; blocks as usize];
    for (k, (b, m)) in chain.iter().enumerate() {
        let Some(EntryKind::Data { parts, base, .. }) = m.entry(rel).map(|e| &e.kind) else {
            break;
        };
        for p in parts {
            let idx = readers[k]
                .index(p)
                .map_err(|e| Error::Corrupt(format!("backup {}: \"{rel}\": {e}", b.id)))?;
            for e in idx {
                if let Some(slot) = slots.get_mut(e.block as usize)
                    && slot.is_none()
                {
                    *slot = Some((k, p.at.bundle, e));
                }
            }
        }
        if *base {
            break;
        }
    }
    let f = ptrack_durable::StagedFile::create(path).map_err(|e| Error::io(path, "create", e))?;
    let mut out = BufWriter::with_capacity(1 << 20, f);
    let zero = vec![0u8; blcksz];
    let mut page = Vec::with_capacity(blcksz);
    for slot in &slots {
        match slot {
            Some((k, bundle, e)) => {
                readers[*k]
                    .page(*bundle, e, blcksz, &mut page)
                    .map_err(|err| {
                        Error::Corrupt(format!("backup {}: \"{rel}\": {err}", chain[*k].0.id))
                    })?;
                out.write_all(&page)
            }
            None => out.write_all(&zero),
        }
        .map_err(|e| Error::io(path, "write", e))?;
    }
    let f = out
        .into_inner()
        .map_err(|e| Error::io(path, "write", e.into_error()))?;
    f.commit_deferring_dir_sync()
        .map_err(|e| Error::io(path, "fsync", e))?;
    Ok(u64::from(blocks) * blcksz as u64)
}
