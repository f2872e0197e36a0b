//! Validating stored backups: the manifest against the catalog, every bundle against its recorded
//! size, every page index and page against its CRC-32C and the `ptrack verify` rules, every whole
//! file against its CRC-32C, the chain links, and the stored WAL decoded from the start LSN to
//! past the stop LSN (as `pg_verifybackup` checks WAL with `pg_waldump`). A backup with any
//! problem is marked CORRUPT; one found clean again is marked OK.

use ptrack_page::relpath::{PathKind, classify_path};
use ptrack_page::verify::{PageCheck, Problem as PageProblem, verify_page};
use ptrack_types::{ForkNumber, Lsn};
use ptrack_wal::decoder::{DecoderConfig, Poll, Start, WalDecoder};
use serde::Serialize;

use std::collections::HashMap;

use crate::chain::{check_link, read_manifest};
use crate::{Error, Refusal, Result};
use ptrack_format::bundle::{BundleReader, FLAG_CORRUPT, bundle_key};
use ptrack_format::catalog::{BackupInfo, Catalog, Status};
use ptrack_format::manifest::{EntryKind, Manifest, Stored};
use ptrack_format::paths::Digest;
use ptrack_format::repo::{Instance, Repository};

/// The result for one backup.
#[derive(Debug, Serialize)]
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
    pub problems: Vec<Problem>,
}

/// One thing wrong with a stored backup. In JSON, its message.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The backup's manifest, its key, or a check of the chain link failed.
    #[error("{0}")]
    Backup(Box<Error>),
    /// The parent has no record.
    #[error("parent backup {0} is missing from the catalog")]
    ParentMissing(String),
    /// The parent is not OK (as found by this run when it validated it).
    #[error("parent backup {id} has status {status}")]
    ParentStatus {
        /// The parent.
        id: String,
        /// Its status.
        status: Status,
    },
    /// The parent's manifest cannot be read.
    #[error("parent backup {id}: {cause}")]
    Parent {
        /// The parent.
        id: String,
        /// Why.
        cause: Box<Error>,
    },
    /// A file recorded as unchanged that no earlier backup of the chain stores.
    #[error("file \"{0}\" is recorded as unchanged, but no earlier backup of the chain stores it")]
    NotInChain(String),
    /// A bundle of another size than the manifest recorded.
    #[error("bundle \"{key}\" has {found} bytes, the manifest recorded {recorded}")]
    BundleSize {
        /// The bundle's key.
        key: String,
        /// Its size.
        found: u64,
        /// The manifest's.
        recorded: u64,
    },
    /// A bundle whose size cannot be read.
    #[error("bundle {number}: {cause}")]
    Bundle {
        /// The bundle's number.
        number: u32,
        /// Why.
        cause: Box<ptrack_format::Error>,
    },
    /// A stored file, the partial last block of a relation segment, or a page index or page
    /// of one, that cannot be read back.
    #[error("{what}: {cause}")]
    Stored {
        /// The file (quoted), and which part.
        what: String,
        /// Why.
        cause: Box<ptrack_format::Error>,
    },
    /// A page stored past its segment's end.
    #[error("\"{path}\" block {block}: stored beyond the file's {blocks} blocks")]
    BeyondEnd {
        /// The segment.
        path: String,
        /// The page's block.
        block: u32,
        /// The segment's blocks.
        blocks: u32,
    },
    /// A stored page that fails `ptrack verify`'s checks.
    #[error("\"{path}\" block {block}: {}", join(.found))]
    Page {
        /// The segment.
        path: String,
        /// The page's block.
        block: u32,
        /// What is wrong with it.
        found: Vec<PageProblem>,
    },
    /// A WAL entry of the manifest that is not stored.
    #[error("WAL \"{0}\" is not stored")]
    WalNotStored(String),
    /// Stored WAL that cannot be read back.
    #[error("stored WAL: {0}")]
    WalRead(Box<ptrack_format::Error>),
    /// Stored WAL that does not decode.
    #[error("stored WAL: {0}")]
    WalDecode(ptrack_wal::decoder::WalError),
    /// Stored WAL that ends before the backup is consistent.
    #[error(
        "stored WAL ends at {end} before the consistency point {consistent} (stop LSN or standby minimum recovery point)"
    )]
    WalShort {
        /// Where it ends.
        end: Lsn,
        /// Where the backup is consistent.
        consistent: Lsn,
    },
    /// Stored WAL that is invalid before the backup is consistent.
    #[error("stored WAL is invalid at {at} ({reason}) before the consistency point {consistent}")]
    WalInvalid {
        /// Where.
        at: Lsn,
        /// The decoder's reason.
        reason: String,
        /// Where the backup is consistent.
        consistent: Lsn,
    },
}

impl Serialize for Problem {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn join(found: &[PageProblem]) -> String {
    let v: Vec<String> = found.iter().map(|x| x.to_string()).collect();
    v.join("; ")
}

fn backup_problem(e: Error) -> Problem {
    Problem::Backup(Box::new(e))
}

fn stored(what: String, cause: ptrack_format::Error) -> Problem {
    Problem::Stored {
        what,
        cause: Box::new(cause),
    }
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
                Error::from(Refusal::NoSuchBackup {
                    id: id.to_string(),
                    sysid: inst.info.system_identifier,
                })
            })?;
            if matches!(b.status, Status::Running | Status::Error) {
                return Err(Refusal::NothingToValidate {
                    id: id.to_string(),
                    status: b.status,
                }
                .into());
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
            Err(e) => problems.push(backup_problem(e)),
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
            return Err(Refusal::ValidateStopped { id, why }.into());
        }
        problems.dedup_by(|a, b| a.to_string() == b.to_string());
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
        let error = c.problems.first().map(|p| format!("validate: {p}"));
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
) -> Result<&'a (Manifest, Digest)> {
    if !manifests.contains_key(id) {
        let b = cat.get(id).ok_or_else(|| {
            ptrack_format::Error::from(ptrack_format::CatalogError::NoSuchBackup(id.into()))
        })?;
        let md = read_manifest(inst, b)?;
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
    problems: &mut Vec<Problem>,
) {
    let Some(pb) = cat.get(p) else {
        problems.push(Problem::ParentMissing(p.to_string()));
        return;
    };
    let status = out
        .iter()
        .find(|c| c.id == p)
        .map_or(pb.status, |c| c.status);
    if status != Status::Ok {
        problems.push(Problem::ParentStatus {
            id: p.to_string(),
            status,
        });
        return;
    }
    match manifest_of(inst, cat, manifests, p) {
        Err(e) => problems.push(Problem::Parent {
            id: p.to_string(),
            cause: Box::new(e),
        }),
        Ok((_, digest)) => {
            if let Err(e) = check_link(m, &b.id, pb, digest) {
                problems.push(backup_problem(e));
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
    problems: &mut Vec<Problem>,
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
            problems.push(Problem::NotInChain(e.path.to_string()));
        }
    }
}

fn check_backup(
    inst: &Instance,
    b: &BackupInfo,
    m: &Manifest,
    jobs: usize,
    chk: &mut BackupCheck,
    problems: &mut Vec<Problem>,
) {
    let dir = match inst.backup_key(&b.id) {
        Ok(d) => d,
        Err(e) => return problems.push(backup_problem(e.into())),
    };
    for bi in &m.bundles {
        let size = bundle_key(&dir, bi.number).and_then(|p| Ok((inst.store().size(&p)?, p)));
        match size {
            Ok((n, _)) if n == bi.size => {}
            Ok((n, p)) => problems.push(Problem::BundleSize {
                key: p.to_string(),
                found: n,
                recorded: bi.size,
            }),
            Err(e) => problems.push(Problem::Bundle {
                number: bi.number,
                cause: Box::new(e),
            }),
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
            let mut probs: Vec<Problem> = Vec::new();
            let (mut pages, mut recorded) = (0u64, 0u64);
            match &e.kind {
                EntryKind::File {
                    size,
                    digest,
                    stored: Some(s),
                } => {
                    if let Err(err) = r.blob(*s, *size, *digest) {
                        probs.push(stored(format!("file \"{}\"", e.path), err));
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
                        probs.push(stored(format!("\"{}\" (partial last block)", e.path), err));
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
                                probs.push(stored(format!("\"{}\"", e.path), err));
                                continue;
                            }
                        };
                        for pe in idx {
                            pages += 1;
                            if pe.block >= *blocks {
                                probs.push(Problem::BeyondEnd {
                                    path: e.path.to_string(),
                                    block: pe.block,
                                    blocks: *blocks,
                                });
                                continue;
                            }
                            if let Err(err) = r.page(p.at.bundle, &pe, blcksz, &mut page) {
                                probs.push(stored(format!("\"{}\"", e.path), err));
                                continue;
                            }
                            if pe.flags & FLAG_CORRUPT != 0 {
                                recorded += 1;
                                continue;
                            }
                            let v = verify_page(&page, segno * relseg + pe.block, check);
                            if !v.is_empty() {
                                probs.push(Problem::Page {
                                    path: e.path.to_string(),
                                    block: pe.block,
                                    found: v,
                                });
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
        Err(e) => problems.push(backup_problem(e)),
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
fn check_wal(
    mut r: BundleReader,
    m: &Manifest,
    chk: &mut BackupCheck,
    problems: &mut Vec<Problem>,
) {
    let mut segs = Vec::new();
    for e in &m.wal {
        if let EntryKind::File {
            size,
            digest,
            stored: Some(s),
        } = &e.kind
        {
            match r.blob_stream_zero_tail(*s, *size, e.zero_tail, *digest, |_, _| {
                Ok::<(), ptrack_format::Error>(())
            }) {
                Ok(()) => {
                    if !e.path.as_bytes().ends_with(b".history") {
                        chk.wal_segments += 1;
                        segs.push((*s, *size, *digest, e.zero_tail));
                    }
                }
                Err(err) => problems.push(stored(format!("WAL \"{}\"", e.path), err)),
            }
        } else {
            problems.push(Problem::WalNotStored(e.path.to_string()));
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
                                problems.push(Problem::WalRead(Box::new(e)));
                                return;
                            }
                        },
                        // Consistent exactly at the end of the last stored segment.
                        None if dec.position() >= m.consistent() => return,
                        None => {
                            problems.push(Problem::WalShort {
                                end: dec.position(),
                                consistent: m.consistent(),
                            });
                            return;
                        }
                    };
                }
                let (s, off, tail) = cur.expect("a segment being fed");
                let piece = ptrack_format::bundle::STREAM_PIECE as u64;
                let n = if off < s.len {
                    let n = (s.len - off).min(piece);
                    match r.record_piece(s, off, n) {
                        Ok(p) => dec.feed_owned(p),
                        Err(e) => {
                            problems.push(Problem::WalRead(Box::new(e)));
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
                problems.push(Problem::WalInvalid {
                    at: e.lsn,
                    reason: format!("{:?}", e.reason),
                    consistent: m.consistent(),
                });
                return;
            }
            Err(e) => {
                problems.push(Problem::WalDecode(e));
                return;
            }
        }
    }
}
