//! Changed-block sets for an LSN range.
//!
//! A [`ChangeSet`] holds, per relation fork, the set of changed blocks (a roaring bitmap) and a
//! *limit block*: the smallest length the fork had during the range (0 when it was created or
//! dropped, the new length when truncated). Lowering the limit drops recorded blocks at or above
//! it; blocks marked afterwards mean the fork grew again. This is the data model of PostgreSQL's
//! `src/common/blkreftable.c`. On top of it, a set of (tablespace, database) pairs whose every file
//! must be treated as changed (database created or dropped), and the reasons, if any, why the
//! range cannot be trusted for an incremental backup (WAL written at `wal_level = minimal`,
//! records ptrack does not understand). Sets of consecutive ranges merge into one.
//!
//! [`ChangeSetBuilder`] folds a WAL range into a set quickly (caches in front of the forks), with
//! the same result as [`ChangeSet::apply`] per change.
//!
//! [`ChangeSet::to_bytes`] / [`ChangeSet::from_bytes`] are the on-disk format (see the byte
//! diagram in `docs/formats.md` and in [`format`]).

use std::collections::{BTreeMap, BTreeSet};

use ptrack_types::{BlockNumber, ForkNumber, Lsn, Oid, RelFileLocator};
use ptrack_wal::Change;
use roaring::RoaringBitmap;
use serde::Serialize;

mod builder;
pub mod format;
pub mod scan;

pub use builder::ChangeSetBuilder;
pub use format::FormatError;
pub use scan::{Summary, apply_record, summarize};

/// Changes of one fork.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ForkChanges {
    /// Changed blocks.
    pub blocks: RoaringBitmap,
    /// Smallest length during the range, if it shrank (or was created/dropped).
    pub limit: Option<BlockNumber>,
}

/// Why a range cannot be used for an incremental backup.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Unsafe {
    /// WAL was written at `wal_level = minimal`: some changes were not logged.
    #[error(
        "the record at {lsn} shows WAL written with wal_level = minimal, which leaves changes unlogged"
    )]
    WalLevelMinimal {
        /// Record that showed it.
        lsn: Lsn,
    },
    /// A record changes relation files in a way ptrack does not understand.
    #[error(
        "the record at {lsn} (rmgr {rmid}, info 0x{info:02X}) changes relation files in a way ptrack cannot follow"
    )]
    UnknownSpecialUpdate {
        /// Record.
        lsn: Lsn,
        /// Resource manager.
        rmid: u8,
        /// Info byte.
        info: u8,
    },
    /// A record ptrack must understand could not be parsed.
    #[error("the record at {lsn} (rmgr {rmid}, info 0x{info:02X}) could not be parsed")]
    Unparsable {
        /// Record.
        lsn: Lsn,
        /// Resource manager.
        rmid: u8,
        /// Info byte.
        info: u8,
    },
}

/// Changed blocks of an LSN range `[start, end)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeSet {
    /// System identifier of the cluster.
    pub system_identifier: u64,
    /// First LSN covered.
    pub start: Lsn,
    /// First LSN not covered.
    pub end: Lsn,
    /// Per relation fork.
    pub forks: BTreeMap<(RelFileLocator, ForkNumber), ForkChanges>,
    /// (tablespace, database) pairs whose every file changed.
    pub db_resets: BTreeSet<(Oid, Oid)>,
    /// Reasons the range cannot be trusted; empty when it can.
    pub unsafe_reasons: Vec<Unsafe>,
}

impl ChangeSet {
    /// An empty set for a range starting at `start`.
    pub fn new(system_identifier: u64, start: Lsn) -> ChangeSet {
        ChangeSet {
            system_identifier,
            start,
            end: start,
            ..ChangeSet::default()
        }
    }

    /// Records that `block` of a fork changed.
    pub fn mark(&mut self, locator: RelFileLocator, fork: ForkNumber, block: BlockNumber) {
        self.forks
            .entry((locator, fork))
            .or_default()
            .blocks
            .insert(block.0);
    }

    /// Records that a fork's length dropped to `limit` blocks. Like PostgreSQL's
    /// `BlockRefTableEntrySetLimitBlock`, this only acts when it lowers the limit, and then forgets
    /// the blocks at or above it (keeping more blocks otherwise is the safe side).
    pub fn set_limit(&mut self, locator: RelFileLocator, fork: ForkNumber, limit: BlockNumber) {
        let e = self.forks.entry((locator, fork)).or_default();
        if e.limit.is_none_or(|l| limit < l) {
            e.limit = Some(limit);
            e.blocks.remove_range(limit.0..);
        }
    }

    /// Applies one change of the record at `lsn`.
    pub fn apply(&mut self, lsn: Lsn, change: &Change) {
        match change {
            Change::Block {
                locator,
                fork,
                block,
                ..
            } => self.mark(*locator, *fork, *block),
            Change::Limit {
                locator,
                fork,
                limit,
            } => self.set_limit(*locator, *fork, *limit),
            Change::DatabaseCreated { spc, db, .. } => {
                self.db_resets.insert((*spc, *db));
            }
            Change::DatabaseDropped { db, tablespaces } => {
                for spc in tablespaces {
                    self.db_resets.insert((*spc, *db));
                }
            }
            Change::Checkpoint {
                wal_level: Some(0), ..
            }
            | Change::ParameterChange { wal_level: 0 } => {
                self.unsafe_reasons.push(Unsafe::WalLevelMinimal { lsn })
            }
            Change::UnknownSpecialUpdate { rmid, info } => {
                self.unsafe_reasons.push(Unsafe::UnknownSpecialUpdate {
                    lsn,
                    rmid: *rmid,
                    info: *info,
                })
            }
            Change::Unparsable { rmid, info } => self.unsafe_reasons.push(Unsafe::Unparsable {
                lsn,
                rmid: *rmid,
                info: *info,
            }),
            Change::Checkpoint { .. }
            | Change::EndOfRecovery { .. }
            | Change::ParameterChange { .. } => {}
        }
    }

    /// Whether `block` of a fork may have changed in the range (always true for a fork of a
    /// database that was reset).
    pub fn contains(&self, locator: RelFileLocator, fork: ForkNumber, block: BlockNumber) -> bool {
        self.db_resets.contains(&(locator.spc_oid, locator.db_oid))
            || self
                .forks
                .get(&(locator, fork))
                .is_some_and(|f| f.blocks.contains(block.0))
    }

    /// Total changed blocks over all forks.
    pub fn block_count(&self) -> u64 {
        self.forks.values().map(|f| f.blocks.len()).sum()
    }

    /// Appends the set of the range that follows this one (`later.start` must equal
    /// `self.end`): later limits cut this set's blocks, then later blocks are added.
    pub fn merge(&mut self, later: &ChangeSet) -> Result<(), FormatError> {
        if later.start != self.end || later.system_identifier != self.system_identifier {
            return Err(FormatError::NotConsecutive {
                end: self.end,
                next_start: later.start,
            });
        }
        for (key, f) in &later.forks {
            if let Some(limit) = f.limit {
                self.set_limit(key.0, key.1, limit);
            }
            self.forks.entry(*key).or_default().blocks |= &f.blocks;
        }
        self.db_resets.extend(later.db_resets.iter().copied());
        self.unsafe_reasons
            .extend(later.unsafe_reasons.iter().cloned());
        self.end = later.end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptrack_types::RelFileNumber;

    fn rel(n: u32) -> RelFileLocator {
        RelFileLocator {
            spc_oid: Oid(1663),
            db_oid: Oid(5),
            rel_number: RelFileNumber(n),
        }
    }

    #[test]
    fn limit_drops_blocks_above_and_later_blocks_count_again() {
        let mut s = ChangeSet::new(1, Lsn(100));
        for b in [1, 5, 9] {
            s.mark(rel(1), ForkNumber::Main, BlockNumber(b));
        }
        s.set_limit(rel(1), ForkNumber::Main, BlockNumber(5));
        s.mark(rel(1), ForkNumber::Main, BlockNumber(7));
        s.mark(rel(1), ForkNumber::Main, BlockNumber(9));
        // A limit that does not lower the current one changes nothing (as in PostgreSQL).
        s.set_limit(rel(1), ForkNumber::Main, BlockNumber(8));
        let f = &s.forks[&(rel(1), ForkNumber::Main)];
        assert_eq!(f.blocks.iter().collect::<Vec<_>>(), vec![1, 7, 9]);
        assert_eq!(f.limit, Some(BlockNumber(5)));
    }

    #[test]
    fn merge_of_consecutive_ranges_equals_one_range() {
        let ops: Vec<(u64, Change)> = vec![
            (
                110,
                Change::Block {
                    locator: rel(1),
                    fork: ForkNumber::Main,
                    block: BlockNumber(3),
                    implied: false,
                },
            ),
            (
                120,
                Change::Block {
                    locator: rel(1),
                    fork: ForkNumber::Main,
                    block: BlockNumber(30),
                    implied: false,
                },
            ),
            (
                130,
                Change::Limit {
                    locator: rel(1),
                    fork: ForkNumber::Main,
                    limit: BlockNumber(10),
                },
            ),
            (
                140,
                Change::Block {
                    locator: rel(2),
                    fork: ForkNumber::VisibilityMap,
                    block: BlockNumber(0),
                    implied: true,
                },
            ),
            (
                150,
                Change::Block {
                    locator: rel(1),
                    fork: ForkNumber::Main,
                    block: BlockNumber(12),
                    implied: false,
                },
            ),
            (
                160,
                Change::DatabaseCreated {
                    spc: Oid(1663),
                    db: Oid(77),
                    strategy: ptrack_wal::CreateStrategy::FileCopy,
                },
            ),
        ];
        for split in 0..=ops.len() {
            let mut whole = ChangeSet::new(1, Lsn(100));
            let mut a = ChangeSet::new(1, Lsn(100));
            let mut b = ChangeSet::new(1, Lsn(135));
            for (lsn, c) in &ops {
                whole.apply(Lsn(*lsn), c);
            }
            for (i, (lsn, c)) in ops.iter().enumerate() {
                if i < split {
                    a.apply(Lsn(*lsn), c)
                } else {
                    b.apply(Lsn(*lsn), c)
                }
            }
            whole.end = Lsn(200);
            a.end = Lsn(135);
            b.end = Lsn(200);
            a.merge(&b).unwrap();
            assert_eq!(a, whole, "split at {split}");
        }
        let mut x = ChangeSet::new(1, Lsn(0));
        assert!(x.merge(&ChangeSet::new(1, Lsn(5))).is_err());
    }

    #[test]
    fn db_reset_covers_every_file_of_the_database() {
        let mut s = ChangeSet::new(1, Lsn(0));
        s.apply(
            Lsn(1),
            &Change::DatabaseDropped {
                db: Oid(5),
                tablespaces: vec![Oid(1663)],
            },
        );
        assert!(s.contains(rel(999), ForkNumber::Init, BlockNumber(123)));
        s.apply(Lsn(2), &Change::ParameterChange { wal_level: 0 });
        assert_eq!(
            s.unsafe_reasons,
            vec![Unsafe::WalLevelMinimal { lsn: Lsn(2) }]
        );
    }
}
