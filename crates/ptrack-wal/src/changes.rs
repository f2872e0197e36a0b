//! What a record changes in relation files: its block references plus the changes that have no
//! block reference (spec §3). Mirrors `src/backend/postmaster/walsummarizer.c`
//! (`SummarizeDbaseRecord`, `SummarizeSmgrRecord`, `SummarizeXactRecord`, `SummarizeXlogRecord`) and
//! `src/backend/access/rmgrdesc/xactdesc.c: ParseCommitRecord, ParseAbortRecord`, plus two things
//! the PostgreSQL summarizer misses:
//!
//! * visibility-map pages whose bits heap records clear without registering the VM buffer
//!   (PG13–16, 17 before 17.11, 18 before 18.6): derived from the heap record's flags (spec §3.5);
//! * the VM page whose tail bits a truncation clears.
//!
//! Unlike the summarizer, FSM block references are kept (over-reporting is safe).

use ptrack_types::{BlockNumber, ForkNumber, Lsn, Oid, PgMajorVersion, RelFileLocator, TimeLineId};
use serde::Serialize;

use crate::consts::*;
use crate::record::{Record, read_locator};

/// How a database was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CreateStrategy {
    /// Directory copied at the file level (PG13/14 `CREATE`, PG15+ `CREATE_FILE_COPY`): no
    /// per-block WAL at all.
    FileCopy,
    /// PG15+ `CREATE_WAL_LOG`: files created with WAL.
    WalLog,
}

/// Kind of checkpoint-related record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    /// `XLOG_CHECKPOINT_SHUTDOWN`.
    Shutdown,
    /// `XLOG_CHECKPOINT_ONLINE`.
    Online,
    /// `XLOG_CHECKPOINT_REDO` (PG17+): its LSN is the redo point.
    Redo,
}

/// One change to relation files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// A block changed (a block reference, or a VM page implied by a heap record).
    Block {
        /// Relation.
        locator: RelFileLocator,
        /// Fork.
        fork: ForkNumber,
        /// Block.
        block: BlockNumber,
        /// True when derived from heap flags rather than a block reference.
        implied: bool,
    },
    /// The fork's length dropped to `limit` blocks (0 for create and drop).
    Limit {
        /// Relation.
        locator: RelFileLocator,
        /// Fork.
        fork: ForkNumber,
        /// New length in blocks.
        limit: BlockNumber,
    },
    /// A database directory was created.
    DatabaseCreated {
        /// Tablespace.
        spc: Oid,
        /// Database.
        db: Oid,
        /// How.
        strategy: CreateStrategy,
    },
    /// A database's directories were removed.
    DatabaseDropped {
        /// Database.
        db: Oid,
        /// Tablespaces it had directories in.
        tablespaces: Vec<Oid>,
    },
    /// A checkpoint record.
    Checkpoint {
        /// Which.
        kind: CheckpointKind,
        /// Redo LSN (the record's own LSN for `Redo`).
        redo: Lsn,
        /// Timeline, when the record carries it.
        timeline: Option<TimeLineId>,
        /// `wal_level`, when the record carries it (PG17+ checkpoints, REDO records).
        wal_level: Option<i32>,
    },
    /// `XLOG_END_OF_RECOVERY`: a new timeline begins.
    EndOfRecovery {
        /// New timeline.
        timeline: TimeLineId,
        /// Previous timeline.
        prev_timeline: TimeLineId,
    },
    /// `XLOG_PARAMETER_CHANGE`: `wal_level` (0 = minimal makes the range unusable for backups).
    ParameterChange {
        /// New wal_level.
        wal_level: i32,
    },
    /// A record that changes relation files in a way ptrack does not understand
    /// (`XLR_SPECIAL_REL_UPDATE` on an unknown rmgr/info): ranges containing it are unsafe.
    UnknownSpecialUpdate {
        /// Resource manager.
        rmid: u8,
        /// Info byte.
        info: u8,
    },
    /// A payload ptrack must understand could not be parsed: unsafe, like the above.
    Unparsable {
        /// Resource manager.
        rmid: u8,
        /// Info byte.
        info: u8,
    },
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

fn i32_at(b: &[u8], o: usize) -> Option<i32> {
    u32_at(b, o).map(|v| v as i32)
}

/// Relations dropped by a commit/abort record (`ParseCommitRecord` up to the relation list,
/// which comes before every version-dependent part).
fn xact_dropped_rels(r: &Record) -> Option<Vec<RelFileLocator>> {
    let b = &r.main_data;
    let mut at = 8; // xact_time
    let xinfo = if r.info & XLOG_XACT_HAS_INFO != 0 {
        let x = u32_at(b, at)?;
        at += 4;
        x
    } else {
        0
    };
    if xinfo & XACT_XINFO_HAS_DBINFO != 0 {
        at += 8;
    }
    if xinfo & XACT_XINFO_HAS_SUBXACTS != 0 {
        let n = usize::try_from(i32_at(b, at)?).ok()?;
        at += 4 + n.checked_mul(4)?;
    }
    if xinfo & XACT_XINFO_HAS_RELFILELOCATORS == 0 {
        return Some(Vec::new());
    }
    let n = usize::try_from(i32_at(b, at)?).ok()?;
    at += 4;
    let mut rels = Vec::with_capacity(n.min(b.len() / 12));
    for i in 0..n {
        rels.push(read_locator(b.get(at + i * 12..at + i * 12 + 12)?)?);
    }
    Some(rels)
}

/// VM page holding heap block `heap_block`.
fn vm_block(heap_block: BlockNumber, blcksz: u32) -> BlockNumber {
    BlockNumber(heap_block.0 / heapblocks_per_vm_page(blcksz))
}

/// Every change record `r` makes, for WAL of major `major` with data pages of `blcksz` bytes.
pub fn changes_of(r: &Record, major: PgMajorVersion, blcksz: u32) -> Vec<Change> {
    let mut out: Vec<Change> = r
        .blocks
        .iter()
        .map(|b| Change::Block {
            locator: b.locator,
            fork: b.fork,
            block: b.block,
            implied: false,
        })
        .collect();
    out.extend(special_changes(r, major, blcksz));
    out
}

/// The changes of `r` other than its block references (what [`changes_of`] adds to them).
/// Allocates nothing for the common record that has none.
pub fn special_changes(r: &Record, major: PgMajorVersion, blcksz: u32) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::new();
    special_changes_into(r, major, blcksz, &mut out);
    out
}

/// Like [`special_changes`], appending to `out`: a caller that reuses one vector allocates
/// nothing per record (heap records imply several FSM and VM pages each).
pub fn special_changes_into(r: &Record, major: PgMajorVersion, blcksz: u32, out: &mut Vec<Change>) {
    let info = r.rmgr_info();
    let d = &r.main_data;
    let bad = Change::Unparsable {
        rmid: r.rmid,
        info: r.info,
    };
    let mut understood = true;
    match r.rmid {
        RM_XLOG_ID => match info {
            XLOG_CHECKPOINT_SHUTDOWN | XLOG_CHECKPOINT_ONLINE => {
                let kind = if info == XLOG_CHECKPOINT_SHUTDOWN {
                    CheckpointKind::Shutdown
                } else {
                    CheckpointKind::Online
                };
                match (d.get(0..8), u32_at(d, 8)) {
                    (Some(redo), Some(tli)) => out.push(Change::Checkpoint {
                        kind,
                        redo: Lsn(u64::from_le_bytes(redo.try_into().unwrap_or_default())),
                        timeline: Some(TimeLineId(tli)),
                        wal_level: if major >= PgMajorVersion::V17 {
                            i32_at(d, 20)
                        } else {
                            None
                        },
                    }),
                    _ => out.push(bad),
                }
            }
            XLOG_CHECKPOINT_REDO => out.push(Change::Checkpoint {
                kind: CheckpointKind::Redo,
                redo: r.lsn,
                timeline: None,
                wal_level: i32_at(d, 0),
            }),
            XLOG_END_OF_RECOVERY => match (u32_at(d, 8), u32_at(d, 12)) {
                (Some(t), Some(p)) => out.push(Change::EndOfRecovery {
                    timeline: TimeLineId(t),
                    prev_timeline: TimeLineId(p),
                }),
                _ => out.push(bad),
            },
            XLOG_PARAMETER_CHANGE => match i32_at(d, 20) {
                Some(wal_level) => out.push(Change::ParameterChange { wal_level }),
                None => out.push(bad),
            },
            _ => understood = false,
        },
        RM_DBASE_ID => {
            let pg15 = major >= PgMajorVersion::V15;
            let (create_copy, create_wal, drop) = if pg15 {
                (
                    Some(XLOG_DBASE_CREATE_FILE_COPY),
                    Some(XLOG_DBASE_CREATE_WAL_LOG),
                    XLOG_DBASE_DROP,
                )
            } else {
                (
                    Some(XLOG_DBASE_CREATE_FILE_COPY),
                    None,
                    XLOG_DBASE_DROP_PG13,
                )
            };
            if Some(info) == create_copy || Some(info) == create_wal {
                let strategy = if Some(info) == create_copy {
                    CreateStrategy::FileCopy
                } else {
                    CreateStrategy::WalLog
                };
                match (u32_at(d, 0), u32_at(d, 4)) {
                    (Some(db), Some(spc)) => out.push(Change::DatabaseCreated {
                        spc: Oid(spc),
                        db: Oid(db),
                        strategy,
                    }),
                    _ => out.push(bad),
                }
            } else if info == drop {
                let parsed = (|| {
                    let db = u32_at(d, 0)?;
                    let n = usize::try_from(i32_at(d, 4)?).ok()?;
                    let ts = (0..n)
                        .map(|i| u32_at(d, 8 + i * 4).map(Oid))
                        .collect::<Option<Vec<_>>>()?;
                    Some(Change::DatabaseDropped {
                        db: Oid(db),
                        tablespaces: ts,
                    })
                })();
                out.push(parsed.unwrap_or(bad));
            } else {
                understood = false;
            }
        }
        RM_SMGR_ID => match info {
            XLOG_SMGR_CREATE => match (
                read_locator(d),
                i32_at(d, 12)
                    .and_then(|f| u8::try_from(f).ok())
                    .and_then(ForkNumber::from_u8),
            ) {
                (Some(locator), Some(fork)) => out.push(Change::Limit {
                    locator,
                    fork,
                    limit: BlockNumber(0),
                }),
                _ => out.push(bad),
            },
            XLOG_SMGR_TRUNCATE => match (
                u32_at(d, 0),
                d.get(4..16).and_then(read_locator),
                u32_at(d, 16),
            ) {
                (Some(blkno), Some(locator), Some(flags)) => {
                    if flags & SMGR_TRUNCATE_HEAP != 0 {
                        out.push(Change::Limit {
                            locator,
                            fork: ForkNumber::Main,
                            limit: BlockNumber(blkno),
                        });
                    }
                    if flags & SMGR_TRUNCATE_VM != 0 {
                        let per = heapblocks_per_vm_page(blcksz);
                        out.push(Change::Limit {
                            locator,
                            fork: ForkNumber::VisibilityMap,
                            limit: BlockNumber(blkno.div_ceil(per)),
                        });
                        if blkno % per != 0 {
                            // The tail bits of the last VM page are cleared in place.
                            out.push(Change::Block {
                                locator,
                                fork: ForkNumber::VisibilityMap,
                                block: BlockNumber(blkno / per),
                                implied: true,
                            });
                        }
                    }
                    if flags & SMGR_TRUNCATE_FSM != 0 {
                        out.push(Change::Limit {
                            locator,
                            fork: ForkNumber::Fsm,
                            limit: BlockNumber(0),
                        });
                        // FreeSpaceMapPrepareTruncateRel clears the tail of the leaf page
                        // holding the new end (without WAL during recovery).
                        out.push(Change::Block {
                            locator,
                            fork: ForkNumber::Fsm,
                            block: fsm_leaf_block(BlockNumber(blkno), blcksz),
                            implied: true,
                        });
                    }
                }
                _ => out.push(bad),
            },
            _ => understood = false,
        },
        RM_XACT_ID => match r.info & XLOG_XACT_OPMASK {
            XLOG_XACT_COMMIT
            | XLOG_XACT_ABORT
            | XLOG_XACT_COMMIT_PREPARED
            | XLOG_XACT_ABORT_PREPARED => match xact_dropped_rels(r) {
                Some(rels) => {
                    for locator in rels {
                        for fork in ForkNumber::ALL {
                            out.push(Change::Limit {
                                locator,
                                fork,
                                limit: BlockNumber(0),
                            });
                        }
                    }
                }
                None => out.push(bad),
            },
            _ => understood = false,
        },
        RM_HEAP_ID | RM_HEAP2_ID => {
            understood = false;
            implied_vm_blocks(r, blcksz, out);
            implied_fsm_blocks(r, blcksz, out);
        }
        RM_SPGIST_ID => {
            understood = false;
            // spgutils.c: SpGistUpdateMetaPage rewrites the metapage's last-used-page cache
            // after inserts and vacuum without WAL: mark it with every SP-GiST record.
            let mut seen: Vec<RelFileLocator> = Vec::new();
            for b in &r.blocks {
                if b.fork == ForkNumber::Main && !seen.contains(&b.locator) {
                    seen.push(b.locator);
                    out.push(Change::Block {
                        locator: b.locator,
                        fork: ForkNumber::Main,
                        block: BlockNumber(0),
                        implied: true,
                    });
                }
            }
        }
        _ => understood = false,
    }
    if !understood && r.info & XLR_SPECIAL_REL_UPDATE != 0 {
        out.push(Change::UnknownSpecialUpdate {
            rmid: r.rmid,
            info: r.info,
        });
    }
}

/// `freespace.c`: slots of one FSM leaf page (`SlotsPerFSMPage`): the page's node array
/// (`BLCKSZ - MAXALIGN(SizeOfPageHeaderData) - offsetof(FSMPageData, fp_nodes)`) minus its
/// non-leaf nodes (`BLCKSZ / 2 - 1`).
fn fsm_slots_per_page(blcksz: u32) -> u32 {
    (blcksz - 24 - 4) - (blcksz / 2 - 1)
}

/// `freespace.c: fsm_get_location` + `fsm_logical_to_physical`: the FSM blocks on the path from
/// the leaf holding heap block `heap`'s slot up to the root, leaf first. PostgreSQL up to 15
/// creates missing pages of that path as initialised pages without WAL (`fsm_extend`), so all of
/// them are implied when the leaf changes.
pub fn fsm_path(heap: BlockNumber, blcksz: u32) -> Vec<BlockNumber> {
    let (path, depth) = fsm_path_array(heap, blcksz);
    path.get(..depth).unwrap_or_default().to_vec()
}

/// [`fsm_path`] without allocating: the path in the first `depth` (3 or 4) elements.
fn fsm_path_array(heap: BlockNumber, blcksz: u32) -> ([BlockNumber; 4], usize) {
    let slots = u64::from(fsm_slots_per_page(blcksz));
    // FSM_TREE_DEPTH: enough levels of `slots` to address 2^32 heap blocks.
    let depth = if slots >= 1626 { 3 } else { 4 };
    // lp[l]: the logical page number at level l (heap / slots^(l+1)). fsm_logical_to_physical
    // counts, for level l, lp[l] * slots^(l-d) pages at each level d <= l and lp[d] at each
    // level d > l, plus one page per level above l: written with these `depth` divisions only
    // (the function runs for every heap block reference).
    let mut lp = [0u64; 4];
    let mut x = u64::from(heap.0);
    for l in lp.iter_mut().take(depth) {
        x /= slots;
        *l = x;
    }
    let mut out = [BlockNumber(0); 4];
    for (level, o) in out.iter_mut().enumerate().take(depth) {
        let mut pages = 0u64;
        let mut term = lp[level];
        for _ in 0..=level {
            pages += term;
            term *= slots;
        }
        pages += lp.iter().take(depth).skip(level + 1).sum::<u64>();
        *o = BlockNumber((pages + (depth - level - 1) as u64) as u32);
    }
    (out, depth)
}

/// The FSM block holding the leaf slot of heap block `heap`.
pub fn fsm_leaf_block(heap: BlockNumber, blcksz: u32) -> BlockNumber {
    fsm_path_array(heap, blcksz).0[0]
}

/// FSM leaf pages of the heap blocks a heap record touches: redo (`heap_xlog_*` →
/// `XLogRecordPageWithFreeSpace`) and the primary's free-space updates rewrite them, in
/// recovery without any WAL.
fn implied_fsm_blocks(r: &Record, blcksz: u32, out: &mut Vec<Change>) {
    for b in &r.blocks {
        if b.fork == ForkNumber::Main {
            let (path, depth) = fsm_path_array(b.block, blcksz);
            for &block in path.get(..depth).unwrap_or_default() {
                out.push(Change::Block {
                    locator: b.locator,
                    fork: ForkNumber::Fsm,
                    block,
                    implied: true,
                });
            }
        }
    }
}

/// Spec §3.5: VM pages whose bits a heap record clears, whether or not it registered them.
fn implied_vm_blocks(r: &Record, blcksz: u32, out: &mut Vec<Change>) {
    let d = &r.main_data;
    let op = r.info & XLOG_HEAP_OPMASK;
    let flag = |o: usize| d.get(o).copied().unwrap_or(0xFF); // unknown: assume cleared
    let blk = |id: u8| r.blocks.iter().find(|b| b.id == id);
    let mut mark = |heap: Option<&crate::record::BlockRef>| {
        if let Some(b) = heap {
            out.push(Change::Block {
                locator: b.locator,
                fork: ForkNumber::VisibilityMap,
                block: vm_block(b.block, blcksz),
                implied: true,
            });
        }
    };
    if r.rmid == RM_HEAP_ID {
        match op {
            XLOG_HEAP_INSERT if flag(2) & 0x01 != 0 => mark(blk(0)),
            XLOG_HEAP_DELETE | XLOG_HEAP_LOCK if flag(7) & 0x01 != 0 => mark(blk(0)),
            XLOG_HEAP_UPDATE | XLOG_HEAP_HOT_UPDATE => {
                let f = flag(7);
                if f & 0x01 != 0 {
                    // Old page: block 1 when the update moved the tuple, else block 0.
                    mark(blk(1).filter(|b| b.fork == ForkNumber::Main).or(blk(0)));
                }
                if f & 0x02 != 0 {
                    mark(blk(0));
                }
            }
            _ => {}
        }
    } else {
        match op {
            XLOG_HEAP2_MULTI_INSERT if flag(0) & 0x21 != 0 => mark(blk(0)),
            XLOG_HEAP2_LOCK_UPDATED if flag(7) & 0x01 != 0 => mark(blk(0)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {

    /// FSM layout of an 8 kB-page cluster: block 0 is the root, 1 the first level-1 page, 2 the
    /// first leaf; leaf k covers heap blocks [4069k, 4069(k+1)) and the next level-1 page comes
    /// after 4069 leaves.
    /// `fsm_logical_to_physical` as PostgreSQL writes it, for comparison.
    fn fsm_path_reference(heap: BlockNumber, blcksz: u32) -> Vec<BlockNumber> {
        let slots = u64::from(fsm_slots_per_page(blcksz));
        let depth = if slots >= 1626 { 3 } else { 4 };
        let physical = |level: u32, logpageno: u64| {
            let mut leafno = logpageno * slots.pow(level);
            let mut pages = 0u64;
            for _ in 0..depth {
                pages += leafno + 1;
                leafno /= slots;
            }
            BlockNumber((pages - u64::from(level) - 1) as u32)
        };
        let mut logpageno = u64::from(heap.0) / slots;
        let mut out = Vec::new();
        for level in 0..depth {
            out.push(physical(level, logpageno));
            logpageno /= slots;
        }
        out
    }

    #[test]
    fn fsm_path_equals_fsm_logical_to_physical() {
        for blcksz in [1024, 2048, 4096, 8192, 16384, 32768] {
            let slots = fsm_slots_per_page(blcksz);
            let mut heaps = vec![0, 1, u32::MAX, u32::MAX - 1];
            for k in 1..6u32 {
                let edge = slots.saturating_pow(k);
                heaps.extend([edge.saturating_sub(1), edge, edge.saturating_add(1)]);
            }
            let mut x = 0x1234_5678u32;
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                heaps.push(x);
            }
            for h in heaps {
                let h = BlockNumber(h);
                assert_eq!(
                    fsm_path(h, blcksz),
                    fsm_path_reference(h, blcksz),
                    "{h} at {blcksz}"
                );
            }
        }
    }

    #[test]
    fn fsm_leaf_addresses() {
        assert_eq!(fsm_leaf_block(BlockNumber(0), 8192), BlockNumber(2));
        assert_eq!(fsm_leaf_block(BlockNumber(4068), 8192), BlockNumber(2));
        assert_eq!(fsm_leaf_block(BlockNumber(4069), 8192), BlockNumber(3));
        assert_eq!(
            fsm_leaf_block(BlockNumber(4069 * 4069), 8192),
            BlockNumber(4069 + 3)
        );
        assert_eq!(
            fsm_path(BlockNumber(0), 8192),
            [BlockNumber(2), BlockNumber(1), BlockNumber(0)]
        );
        // The second level-1 page follows the first subtree's 4069 leaves.
        assert_eq!(
            fsm_path(BlockNumber(4069 * 4069), 8192),
            [BlockNumber(4072), BlockNumber(4071), BlockNumber(0)]
        );
    }
    use super::*;
    use crate::record::decode_record;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// A record with the given rmid/info, no blocks, and `main` as main data (CRC not needed).
    fn rec(rmid: u8, info: u8, main: &[u8]) -> Record {
        let mut b = vec![0u8; 24];
        b[16] = info;
        b[17] = rmid;
        b.push(0xFF);
        b.push(main.len() as u8);
        b.extend_from_slice(main);
        let n = b.len() as u32;
        b[..4].copy_from_slice(&n.to_le_bytes());
        decode_record(
            &b,
            Lsn(0x100),
            Lsn(0x100 + u64::from(n)),
            PgMajorVersion::V15,
            8192,
        )
        .unwrap()
    }

    #[test]
    fn spec_payloads_decode_to_changes() {
        // SMGR TRUNCATE blkno=1 rel 1663/5/16392 flags=7 (spec §2.7).
        let t = rec(
            2,
            0x21,
            &hex("01 00 00 00 7F 06 00 00 05 00 00 00 08 40 00 00 07 00 00 00"),
        );
        let c = changes_of(&t, PgMajorVersion::V15, 8192);
        let loc = read_locator(&hex("7F 06 00 00 05 00 00 00 08 40 00 00")).unwrap();
        assert!(c.contains(&Change::Limit {
            locator: loc,
            fork: ForkNumber::Main,
            limit: BlockNumber(1)
        }));
        assert!(c.contains(&Change::Limit {
            locator: loc,
            fork: ForkNumber::VisibilityMap,
            limit: BlockNumber(1)
        }));
        assert!(c.contains(&Change::Block {
            locator: loc,
            fork: ForkNumber::VisibilityMap,
            block: BlockNumber(0),
            implied: true
        }));

        let copy = rec(
            4,
            0x01,
            &hex("0B 40 00 00 7F 06 00 00 01 00 00 00 7F 06 00 00"),
        );
        assert_eq!(
            changes_of(&copy, PgMajorVersion::V15, 8192),
            vec![Change::DatabaseCreated {
                spc: Oid(1663),
                db: Oid(16395),
                strategy: CreateStrategy::FileCopy
            }]
        );
        let wal_log = rec(4, 0x10, &hex("0C 40 00 00 7F 06 00 00"));
        assert!(matches!(
            changes_of(&wal_log, PgMajorVersion::V15, 8192)[0],
            Change::DatabaseCreated {
                strategy: CreateStrategy::WalLog,
                ..
            }
        ));
        // The same info 0x10 is DROP in PG13/14.
        let drop13 = rec(4, 0x11, &hex("0B 40 00 00 01 00 00 00 7F 06 00 00"));
        assert_eq!(
            changes_of(&drop13, PgMajorVersion::V13, 8192),
            vec![Change::DatabaseDropped {
                db: Oid(16395),
                tablespaces: vec![Oid(1663)]
            }]
        );
        let drop15 = rec(4, 0x21, &hex("0B 40 00 00 01 00 00 00 7F 06 00 00"));
        assert!(matches!(
            changes_of(&drop15, PgMajorVersion::V15, 8192)[0],
            Change::DatabaseDropped { .. }
        ));
    }

    #[test]
    fn commit_with_dropped_relation_limits_every_fork() {
        // xact_time, xinfo=0x14D (DBINFO|RELFILELOCATORS|...), dbinfo, nrels=1 {1663,5,16389}.
        let main = hex(
            "AE B1 98 70 C1 03 03 00 4D 01 00 00 05 00 00 00 7F 06 00 00 01 00 00 00 7F 06 00 00 05 00 00 00 05 40 00 00",
        );
        let c = changes_of(&rec(1, 0x81, &main), PgMajorVersion::V15, 8192);
        assert_eq!(
            c.iter()
                .filter(|c| matches!(
                    c,
                    Change::Limit {
                        limit: BlockNumber(0),
                        ..
                    }
                ))
                .count(),
            4
        );
        // A truncated relation list is unparsable, never silently empty.
        let c = changes_of(&rec(1, 0x81, &main[..30]), PgMajorVersion::V15, 8192);
        assert!(c.iter().any(|c| matches!(c, Change::Unparsable { .. })));
    }

    #[test]
    fn unknown_special_update_is_flagged() {
        let c = changes_of(&rec(7, 0x01, &[]), PgMajorVersion::V15, 8192);
        assert_eq!(
            c,
            vec![Change::UnknownSpecialUpdate {
                rmid: 7,
                info: 0x01
            }]
        );
        assert!(changes_of(&rec(7, 0x00, &[]), PgMajorVersion::V15, 8192).is_empty());
    }
}
