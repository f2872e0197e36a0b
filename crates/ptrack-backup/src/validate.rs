//! Validating stored backups: the manifest against the catalog, every bundle against its recorded
//! size, every page index and page against its CRC-32C and the `ptrack verify` rules, every whole
//! file against its CRC-32C, the chain links, and the stored WAL decoded from the start LSN to
//! past the stop LSN (as `pg_verifybackup` checks WAL with `pg_waldump`). A backup with any
//! problem is marked CORRUPT; one found clean again is marked OK.

use ptrack_page::relpath::{PathKind, classify_path};
use ptrack_page::verify::{PageCheck, verify_page};
use ptrack_types::{ForkNumber, Lsn};
use ptrack_wal::decoder::{DecoderConfig, Poll, Start, WalDecoder};
use serde::Serialize;

use crate::backup::read_manifest;
use crate::bundle::{BundleReader, FLAG_CORRUPT, bundle_path};
use crate::catalog::{BackupInfo, Status};
use crate::manifest::{EntryKind, Manifest};
use crate::repo::{Instance, Repository};
use crate::{Result, refused};

/// The result for one backup.
#[derive(Debug, Clone, Serialize)]
pub struct BackupCheck {
    /// The backup.
    pub id: String,
    /// Status after validation.
    pub status: Status,
    /// Pages checked.
    pub pages: u64,
    /// Files checked.
    pub files: u64,
    /// WAL segments checked.
    pub wal_segments: u64,
    /// Damaged pages recorded at backup time (`--allow-corruption`), not counted as problems.
    pub recorded_damage: u64,
    /// Everything wrong.
    pub problems: Vec<String>,
}

/// Which backups to validate: `id` and its parents, or every OK and CORRUPT backup.
pub fn run_validate(
    repo: &Repository,
    instance: Option<u64>,
    id: Option<&str>,
    jobs: usize,
) -> Result<Vec<BackupCheck>> {
    let inst = repo.only_instance(instance)?;
    let lock = inst.lock("validate")?;
    let cat = inst.catalog()?;
    let ids: Vec<String> = match id {
        Some(id) => {
            let b = cat.get(id).ok_or_else(|| {
                refused(format!(
                    "backup {id} is not in the catalog of instance {} (`ptrack show` lists the backups)",
                    inst.info.system_identifier
                ))
            })?;
            if matches!(b.status, Status::Running | Status::Error) {
                return Err(refused(format!(
                    "backup {id} has status {}; there is nothing to validate",
                    b.status
                )));
            }
            let mut v: Vec<String> = Vec::new();
            let mut cur = Some(id.to_string());
            while let Some(c) = cur {
                let Some(b) = cat.get(&c) else { break };
                v.push(c);
                cur = b.parent.clone();
            }
            v.reverse();
            v
        }
        None => cat
            .backups
            .iter()
            .filter(|b| matches!(b.status, Status::Ok | Status::Corrupt))
            .map(|b| b.id.clone())
            .collect(),
    };
    let mut out = Vec::new();
    for id in ids {
        let b = cat.get(&id).expect("listed").clone();
        let mut problems = Vec::new();
        let mut chk = BackupCheck {
            id: id.clone(),
            status: b.status,
            pages: 0,
            files: 0,
            wal_segments: 0,
            recorded_damage: 0,
            problems: Vec::new(),
        };
        // Chain link: the parent must be there, OK (or found corrupt in this run) and older.
        if let Some(p) = &b.parent {
            let found_corrupt = out
                .iter()
                .any(|c: &BackupCheck| &c.id == p && !c.problems.is_empty());
            match cat.get(p) {
                None => problems.push(format!("parent backup {p} is missing from the catalog")),
                Some(_) if found_corrupt => problems.push(format!("parent backup {p} is corrupt")),
                Some(pb) if pb.status != Status::Ok => {
                    problems.push(format!("parent backup {p} has status {}", pb.status))
                }
                Some(pb) if pb.start_lsn > b.start_lsn => {
                    problems.push(format!("parent backup {p} starts after this backup"))
                }
                _ => {}
            }
        }
        match read_manifest(&inst, &b) {
            Err(e) => problems.push(e.to_string()),
            Ok(m) => check_backup(&inst, &b, &m, jobs, &mut chk, &mut problems),
        }
        problems.dedup();
        chk.status = if problems.is_empty() {
            Status::Ok
        } else {
            Status::Corrupt
        };
        chk.problems = problems;
        out.push(chk);
    }
    let mut cat = inst.catalog()?;
    for c in &out {
        if let Some(b) = cat.get_mut(&c.id) {
            b.status = c.status;
            b.error = (!c.problems.is_empty()).then(|| format!("validate: {}", c.problems[0]));
        }
    }
    inst.save_catalog(&cat, &lock)?;
    Ok(out)
}

fn check_backup(
    inst: &Instance,
    b: &BackupInfo,
    m: &Manifest,
    jobs: usize,
    chk: &mut BackupCheck,
    problems: &mut Vec<String>,
) {
    let dir = inst.backup_dir(&b.id);
    for bi in &m.bundles {
        let p = bundle_path(&dir, bi.number);
        match std::fs::metadata(&p) {
            Ok(md) if md.len() == bi.size => {}
            Ok(md) => problems.push(format!(
                "bundle \"{}\" has {} bytes, the manifest recorded {}",
                p.display(),
                md.len(),
                bi.size
            )),
            Err(e) => problems.push(format!("bundle \"{}\": {e}", p.display())),
        }
    }
    let blcksz = m.blcksz as usize;
    let relseg = inst.info.relseg_blocks;
    let items: Vec<&crate::manifest::Entry> = m
        .entries
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EntryKind::Data { .. }
                    | EntryKind::File {
                        stored: Some(_),
                        ..
                    }
            )
        })
        .collect();
    let res = crate::parallel::run(
        jobs,
        items.len(),
        |_| Ok(BundleReader::new(&dir, m.compression)),
        |r, i| {
            let e = items[i];
            let mut probs: Vec<String> = Vec::new();
            let (mut pages, mut recorded) = (0u64, 0u64);
            match &e.kind {
                EntryKind::File {
                    size,
                    crc,
                    stored: Some(s),
                } => {
                    if let Err(err) = r.blob(*s, *size, *crc) {
                        probs.push(format!("file \"{}\": {err}", e.path));
                    }
                }
                EntryKind::Data { parts, blocks, .. } => {
                    let segno = match classify_path(&e.path) {
                        PathKind::Relation(s) => s.segno,
                        _ => 0,
                    };
                    let check = PageCheck {
                        checksums: m.data_checksums,
                        fork: ForkNumber::Main,
                    };
                    let mut page = Vec::with_capacity(blcksz);
                    for p in parts {
                        let idx = match r.index(p) {
                            Ok(i) => i,
                            Err(err) => {
                                probs.push(format!("\"{}\": {err}", e.path));
                                continue;
                            }
                        };
                        for pe in idx {
                            pages += 1;
                            if pe.block >= *blocks {
                                probs.push(format!(
                                    "\"{}\" block {}: stored beyond the file's {blocks} blocks",
                                    e.path, pe.block
                                ));
                                continue;
                            }
                            if let Err(err) = r.page(p.at.bundle, &pe, blcksz, &mut page) {
                                probs.push(format!("\"{}\": {err}", e.path));
                                continue;
                            }
                            if pe.flags & FLAG_CORRUPT != 0 {
                                recorded += 1;
                                continue;
                            }
                            let v = verify_page(&page, segno * relseg + pe.block, check);
                            if !v.is_empty() {
                                let what: Vec<String> = v.iter().map(|x| x.to_string()).collect();
                                probs.push(format!(
                                    "\"{}\" block {}: {}",
                                    e.path,
                                    pe.block,
                                    what.join("; ")
                                ));
                            }
                        }
                    }
                }
                _ => {}
            }
            Ok((probs, pages, recorded))
        },
        |_, _| Ok(()),
    );
    match res {
        Err(e) => problems.push(e.to_string()),
        Ok(v) => {
            for (p, pages, rec) in v {
                problems.extend(p);
                chk.pages += pages;
                chk.recorded_damage += rec;
                chk.files += 1;
            }
        }
    }
    check_wal(&dir, m, chk, problems);
}

fn check_wal(
    dir: &std::path::Path,
    m: &Manifest,
    chk: &mut BackupCheck,
    problems: &mut Vec<String>,
) {
    let mut r = BundleReader::new(dir, m.compression);
    let mut segs = Vec::new();
    for e in &m.wal {
        if let EntryKind::File {
            size,
            crc,
            stored: Some(s),
        } = &e.kind
        {
            match r.blob(*s, *size, *crc) {
                Ok(d) => {
                    if !e.path.ends_with(".history") {
                        chk.wal_segments += 1;
                        segs.push(d);
                    }
                }
                Err(err) => problems.push(format!("WAL \"{}\": {err}", e.path)),
            }
        } else {
            problems.push(format!("WAL \"{}\" is not stored", e.path));
        }
    }
    if !problems.is_empty() {
        return;
    }
    let seg = m.wal_seg_size;
    let cfg = DecoderConfig {
        seg_size: seg as u32,
        blcksz: m.blcksz,
        system_identifier: Some(m.system_identifier),
        ..DecoderConfig::default()
    };
    let stream_start = Lsn(m.start_lsn.0 - m.start_lsn.0 % seg);
    let mut dec = WalDecoder::new(
        cfg,
        stream_start,
        Start::Record {
            lsn: m.start_lsn,
            prev: None,
        },
    );
    let mut segs = segs.into_iter();
    loop {
        match dec.poll() {
            Ok(Poll::Record(rec)) => {
                if rec.end_lsn >= m.stop_lsn {
                    return;
                }
            }
            Ok(Poll::Abandoned { .. }) => {}
            Ok(Poll::NeedMore) => match segs.next() {
                Some(s) => dec.feed_owned(s),
                None => {
                    problems.push(format!(
                        "stored WAL ends at {} before the stop LSN {}",
                        dec.position(),
                        m.stop_lsn
                    ));
                    return;
                }
            },
            Ok(Poll::End(e)) => {
                problems.push(format!(
                    "stored WAL is invalid at {} ({:?}) before the stop LSN {}",
                    e.lsn, e.reason, m.stop_lsn
                ));
                return;
            }
            Err(e) => {
                problems.push(format!("stored WAL: {e}"));
                return;
            }
        }
    }
}
