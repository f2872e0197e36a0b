//! Validating stored backups: the manifest against the catalog, every bundle against its recorded
//! size, every page index and page against its CRC-32C and the `ptrack verify` rules, every whole
//! file against its CRC-32C, the chain links, and the stored WAL decoded from the start LSN to
//! past the stop LSN (as `pg_verifybackup` checks WAL with `pg_waldump`). A backup with any
//! problem is marked CORRUPT; one found clean again is marked OK.

use ptrack_page::relpath::{PathKind, classify_path};
use ptrack_page::verify::{PageCheck, verify_page};
use ptrack_types::ForkNumber;
use ptrack_wal::decoder::{DecoderConfig, Poll, Start, WalDecoder};
use serde::Serialize;

use std::collections::HashMap;

use crate::bundle::{BundleReader, FLAG_CORRUPT, bundle_key};
use crate::catalog::{BackupInfo, Catalog, Status};
use crate::chain::{check_link, read_manifest};
use crate::manifest::{EntryKind, Manifest, Stored};
use crate::paths::Digest;
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

/// Which backups to validate: `id` and its parents, or every OK and CORRUPT backup. Parents are
/// validated before their children, and a child is judged against its parent's fresh result.
pub fn run_validate(
    repo: &Repository,
    instance: Option<u64>,
    id: Option<&str>,
    jobs: usize,
) -> Result<Vec<BackupCheck>> {
    let inst = repo.only_instance(instance)?;
    let lock = inst.lock("validate")?;
    // Every record read, the index left aside: a damaged record is found here, not hidden.
    let cat = inst.catalog_verified()?;
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
                if v.contains(&c) {
                    break;
                }
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
    let mut out: Vec<BackupCheck> = Vec::new();
    let mut manifests: HashMap<String, (Manifest, Digest)> = HashMap::new();
    for id in ids {
        let b = cat.get(&id).expect("listed").clone();
        let mut chk = BackupCheck {
            id: id.clone(),
            status: b.status,
            pages: 0,
            files: 0,
            wal_segments: 0,
            recorded_damage: 0,
            problems: Vec::new(),
        };
        let mut problems = Vec::new();
        inst.take_storage_failure();
        match read_manifest(&inst, &b) {
            Err(e) => problems.push(e.to_string()),
            Ok((m, digest)) => {
                if let Some(p) = &b.parent {
                    check_parent(&inst, &cat, &out, &mut manifests, &b, &m, p, &mut problems);
                }
                check_backup(&inst, &b, &m, jobs, &mut chk, &mut problems);
                check_unchanged_files(&inst, &cat, &mut manifests, &m, &mut problems);
                manifests.insert(id.clone(), (m, digest));
            }
        }
        if let Some(why) = inst.take_storage_failure() {
            // Not damage: the repository could not be read. Nothing is marked.
            return Err(refused(format!(
                "validate of backup {id} stopped: the repository could not be read ({why}); no backup's status was changed"
            )));
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
    let cat = inst.catalog()?;
    for c in &out {
        let Some(b) = cat.get(&c.id) else { continue };
        let error = (!c.problems.is_empty()).then(|| format!("validate: {}", c.problems[0]));
        if b.status != c.status || b.error != error {
            let mut b = b.clone();
            b.status = c.status;
            b.error = error;
            inst.save_record(&b, &lock)?;
        }
    }
    Ok(out)
}

/// The manifest of backup `id`, from this run or read now.
fn manifest_of<'a>(
    inst: &Instance,
    cat: &Catalog,
    manifests: &'a mut HashMap<String, (Manifest, Digest)>,
    id: &str,
) -> std::result::Result<&'a (Manifest, Digest), String> {
    if !manifests.contains_key(id) {
        let b = cat
            .get(id)
            .ok_or_else(|| format!("backup {id} is missing from the catalog"))?;
        let md = read_manifest(inst, b).map_err(|e| e.to_string())?;
        manifests.insert(id.to_string(), md);
    }
    Ok(&manifests[id])
}

/// The parent must be there and valid (its status from this run when it was validated in it),
/// and the child's manifest must record the parent's manifest digest (the hash chain).
#[allow(clippy::too_many_arguments)]
fn check_parent(
    inst: &Instance,
    cat: &Catalog,
    out: &[BackupCheck],
    manifests: &mut HashMap<String, (Manifest, Digest)>,
    b: &BackupInfo,
    m: &Manifest,
    p: &str,
    problems: &mut Vec<String>,
) {
    let Some(pb) = cat.get(p) else {
        problems.push(format!("parent backup {p} is missing from the catalog"));
        return;
    };
    let status = out
        .iter()
        .find(|c| c.id == p)
        .map_or(pb.status, |c| c.status);
    if status != Status::Ok {
        problems.push(format!("parent backup {p} has status {status}"));
        return;
    }
    match manifest_of(inst, cat, manifests, p) {
        Err(e) => problems.push(format!("parent backup {p}: {e}")),
        Ok((_, digest)) => {
            if let Err(e) = check_link(m, &b.id, pb, digest) {
                problems.push(e.to_string());
            }
        }
    }
}

/// Every file recorded as unchanged must be stored, with the same size and digest, by an
/// ancestor no further back than the first that stored it.
fn check_unchanged_files(
    inst: &Instance,
    cat: &Catalog,
    manifests: &mut HashMap<String, (Manifest, Digest)>,
    m: &Manifest,
    problems: &mut Vec<String>,
) {
    for e in m.entries.iter() {
        let EntryKind::File {
            size,
            digest,
            stored: None,
        } = &e.kind
        else {
            continue;
        };
        let mut cur = m.parent.clone();
        let mut found = false;
        let mut hops = 0;
        while let Some(id) = cur.take() {
            hops += 1;
            let Ok((pm, _)) = manifest_of(inst, cat, manifests, &id) else {
                break;
            };
            match pm.entry(&e.path).map(|x| x.kind) {
                Some(EntryKind::File {
                    size: s,
                    digest: d,
                    stored,
                }) if s == *size && d == *digest => {
                    if stored.is_some() {
                        found = true;
                    } else if hops < 100_000 {
                        cur = pm.parent.clone();
                    }
                }
                _ => {}
            }
        }
        if !found {
            problems.push(format!(
                "file \"{}\" is recorded as unchanged, but no earlier backup of the chain stores it",
                e.path
            ));
        }
    }
}

fn check_backup(
    inst: &Instance,
    b: &BackupInfo,
    m: &Manifest,
    jobs: usize,
    chk: &mut BackupCheck,
    problems: &mut Vec<String>,
) {
    let dir = match inst.backup_key(&b.id) {
        Ok(d) => d,
        Err(e) => return problems.push(e.to_string()),
    };
    for bi in &m.bundles {
        let size = bundle_key(&dir, bi.number).and_then(|p| Ok((inst.store().size(&p)?, p)));
        match size {
            Ok((n, _)) if n == bi.size => {}
            Ok((n, p)) => problems.push(format!(
                "bundle \"{p}\" has {n} bytes, the manifest recorded {}",
                bi.size
            )),
            Err(e) => problems.push(format!("bundle {}: {e}", bi.number)),
        }
    }
    let blcksz = m.blcksz as usize;
    let relseg = inst.info.relseg_blocks;
    let items: Vec<u32> = m
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            matches!(
                e.kind,
                EntryKind::Data { .. }
                    | EntryKind::File {
                        stored: Some(_),
                        ..
                    }
            )
        })
        .map(|(i, _)| i as u32)
        .collect();
    let res = crate::parallel::run(
        jobs,
        items.len(),
        |_| Ok(BundleReader::new(inst.shared_store(), &dir, m.compression)),
        |r, i| {
            let e = &m.entries.get(items[i] as usize);
            let mut probs: Vec<String> = Vec::new();
            let (mut pages, mut recorded) = (0u64, 0u64);
            match &e.kind {
                EntryKind::File {
                    size,
                    digest,
                    stored: Some(s),
                } => {
                    if let Err(err) = r.blob(*s, *size, *digest) {
                        probs.push(format!("file \"{}\": {err}", e.path));
                    }
                }
                EntryKind::Data {
                    parts,
                    blocks,
                    tail,
                    ..
                } => {
                    if let Some(t) = tail
                        && let Err(err) = r.blob(t.stored, u64::from(t.len), t.digest)
                    {
                        probs.push(format!("\"{}\" (partial last block): {err}", e.path));
                    }
                    let segno = match e.path.as_str().map(classify_path) {
                        Some(PathKind::Relation(s)) => s.segno,
                        _ => 0,
                    };
                    let check = PageCheck {
                        checksums: m.data_checksum_version != 0,
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
    check_wal(
        BundleReader::new(inst.shared_store(), &dir, m.compression),
        m,
        chk,
        problems,
    );
}

/// Checks the stored WAL: every segment's and history file's digest, then decodes it from the
/// start LSN past the consistency point, feeding the decoder piece by piece as the stored
/// segments are read again (no segment is held whole).
fn check_wal(mut r: BundleReader, m: &Manifest, chk: &mut BackupCheck, problems: &mut Vec<String>) {
    let mut segs = Vec::new();
    for e in &m.wal {
        if let EntryKind::File {
            size,
            digest,
            stored: Some(s),
        } = &e.kind
        {
            match r.blob_stream_zero_tail(*s, *size, e.zero_tail, *digest, |_, _| Ok(())) {
                Ok(()) => {
                    if !e.path.as_bytes().ends_with(b".history") {
                        chk.wal_segments += 1;
                        segs.push((*s, *size, *digest, e.zero_tail));
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
        seg_size: seg,
        blcksz: m.blcksz,
        system_identifier: Some(m.system_identifier),
        ..DecoderConfig::default()
    };
    let stream_start = seg.segment_start(m.start_lsn);
    let mut dec = WalDecoder::new(
        cfg,
        stream_start,
        Start::Record {
            lsn: m.start_lsn,
            prev: None,
        },
    );
    let mut segs = segs.into_iter();
    // The segment being fed, how far, and its zeros not stored (raw records are fed piece by
    // piece, then the zeros).
    let mut cur: Option<(Stored, u64, u64)> = None;
    loop {
        match dec.poll() {
            Ok(Poll::Record(rec)) => {
                if rec.end_lsn >= m.consistent() {
                    return;
                }
            }
            Ok(Poll::Abandoned { .. }) => {}
            Ok(Poll::NeedMore) => {
                if cur.is_none_or(|(s, off, tail)| off >= s.len + tail) {
                    cur = match segs.next() {
                        Some((s, size, _, tail)) if s.len + tail == size => Some((s, 0, tail)),
                        // Compressed (older backups): fed whole.
                        Some((s, size, digest, _)) => match r.blob(s, size, digest) {
                            Ok(d) => {
                                dec.feed_owned(d);
                                continue;
                            }
                            Err(e) => {
                                problems.push(format!("stored WAL: {e}"));
                                return;
                            }
                        },
                        // Consistent exactly at the end of the last stored segment.
                        None if dec.position() >= m.consistent() => return,
                        None => {
                            problems.push(format!(
                                "stored WAL ends at {} before the consistency point {} (stop LSN or standby minimum recovery point)",
                                dec.position(),
                                m.consistent()
                            ));
                            return;
                        }
                    };
                }
                let (s, off, tail) = cur.expect("a segment being fed");
                let piece = crate::bundle::STREAM_PIECE as u64;
                let n = if off < s.len {
                    let n = (s.len - off).min(piece);
                    match r.record_piece(s, off, n) {
                        Ok(p) => dec.feed_owned(p),
                        Err(e) => {
                            problems.push(format!("stored WAL: {e}"));
                            return;
                        }
                    }
                    n
                } else {
                    let n = (s.len + tail - off).min(piece);
                    dec.feed_owned(vec![0; n as usize]);
                    n
                };
                cur = Some((s, off + n, tail));
            }
            // A standby's stop LSN is the (aligned) position after its last replayed record: WAL
            // may end right there.
            Ok(Poll::End(e)) if e.lsn >= m.consistent() => return,
            Ok(Poll::End(e)) => {
                problems.push(format!(
                    "stored WAL is invalid at {} ({:?}) before the consistency point {}",
                    e.lsn,
                    e.reason,
                    m.consistent()
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
