//! [`ChangeSetBuilder`]: folds a long stream of changes (one WAL range's records) into a
//! [`ChangeSet`], with exactly the result of calling [`ChangeSet::apply`] for each change in
//! order, at a fraction of the cost per block reference.
//!
//! Plays the part of `src/common/blkreftable.c: BlockRefTableMarkBlockModified`, which finds the
//! fork's entry in a hash table for every block reference. Here the forks live in a vector found
//! through a small direct-mapped cache in front of an ordered index, and a second direct-mapped
//! cache remembers blocks already set: most block references of a busy range repeat a recent one
//! (the FSM root and level-1 pages and the VM page implied by every heap record, hot heap pages),
//! and those cost one compare instead of a map lookup and a bitmap insert. A cached block is
//! always set in its fork's bitmap: lowering a fork's limit, the only operation that clears bits,
//! empties the block cache.

use std::collections::BTreeMap;

use ptrack_types::{BlockNumber, ForkNumber, Lsn, RelFileLocator};
use ptrack_wal::Change;

use crate::{ChangeSet, ForkChanges};

/// A relation fork.
type Key = (RelFileLocator, ForkNumber);

/// Slots of the fork cache (a power of two): a busy range touches hundreds of forks (361 in
/// the small-record benchmark, where 64 slots missed one lookup in four).
const FORK_SLOTS: usize = 1024;
/// Slots of the block cache (a power of two).
const BLOCK_SLOTS: usize = 4096;

/// Builds a [`ChangeSet`] from changes applied in WAL order. See the module documentation.
#[derive(Debug)]
pub struct ChangeSetBuilder {
    /// Everything but the forks, which are kept in `forks` until [`ChangeSetBuilder::finish`].
    set: ChangeSet,
    index: BTreeMap<Key, usize>,
    forks: Vec<(Key, ForkChanges)>,
    fork_cache: Vec<Option<(Key, usize)>>,
    block_cache: Vec<Option<(Key, u32)>>,
}

/// A multiplicative hash of a fork and block, its top `bits` bits as a slot number.
fn slot(key: &Key, block: u32, bits: u32) -> usize {
    let l = &key.0;
    let a = u64::from(l.rel_number.0) | (u64::from(l.db_oid.0) << 32);
    let b = u64::from(block) | (u64::from(l.spc_oid.0) << 32);
    let h = (a ^ b.rotate_left(23) ^ u64::from(key.1.as_u8()))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(29)
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (h >> (64 - bits)) as usize
}

impl ChangeSetBuilder {
    /// An empty builder for a range starting at `start`.
    pub fn new(system_identifier: u64, start: Lsn) -> ChangeSetBuilder {
        ChangeSetBuilder {
            set: ChangeSet::new(system_identifier, start),
            index: BTreeMap::new(),
            forks: Vec::new(),
            fork_cache: vec![None; FORK_SLOTS],
            block_cache: vec![None; BLOCK_SLOTS],
        }
    }

    /// The position of `key` in `forks`, added (empty) if new.
    fn fork(&mut self, key: Key) -> usize {
        let s = slot(&key, 0, FORK_SLOTS.trailing_zeros());
        if let Some(Some((k, i))) = self.fork_cache.get(s)
            && *k == key
        {
            return *i;
        }
        let next = self.forks.len();
        let i = *self.index.entry(key).or_insert(next);
        if i == next {
            self.forks.push((key, ForkChanges::default()));
        }
        if let Some(c) = self.fork_cache.get_mut(s) {
            *c = Some((key, i));
        }
        i
    }

    /// [`ChangeSet::mark`]. Inlined into the caller: most calls end at the block cache.
    #[inline]
    pub fn mark(&mut self, locator: RelFileLocator, fork: ForkNumber, block: BlockNumber) {
        let key = (locator, fork);
        let s = slot(&key, block.0, BLOCK_SLOTS.trailing_zeros());
        if self.block_cache.get(s) == Some(&Some((key, block.0))) {
            return;
        }
        self.mark_uncached(key, block, s);
    }

    /// [`ChangeSetBuilder::mark`] of a block not in the cache (slot `s`): kept out of line so
    /// the cached case saves and restores few registers.
    #[inline(never)]
    fn mark_uncached(&mut self, key: Key, block: BlockNumber, s: usize) {
        let i = self.fork(key);
        if let Some((_, f)) = self.forks.get_mut(i) {
            f.blocks.insert(block.0);
        }
        if let Some(c) = self.block_cache.get_mut(s) {
            *c = Some((key, block.0));
        }
    }

    /// [`ChangeSet::set_limit`].
    pub fn set_limit(&mut self, locator: RelFileLocator, fork: ForkNumber, limit: BlockNumber) {
        let i = self.fork((locator, fork));
        if let Some((_, e)) = self.forks.get_mut(i)
            && e.limit.is_none_or(|l| limit < l)
        {
            e.limit = Some(limit);
            e.blocks.remove_range(limit.0..);
            // Cached blocks may just have been cleared.
            self.block_cache.fill(None);
        }
    }

    /// [`ChangeSet::apply`].
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
            // Neither touches the forks.
            other => self.set.apply(lsn, other),
        }
    }

    /// The change set, ending where the range began until the caller sets `end`.
    pub fn finish(self) -> ChangeSet {
        let mut set = self.set;
        set.forks = self.forks.into_iter().collect();
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptrack_types::{Oid, RelFileNumber};

    /// xorshift64: a fixed pseudo-random sequence, so a failure reproduces.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn random_change(g: &mut Rng) -> Change {
        let locator = RelFileLocator {
            spc_oid: Oid(1663 + g.next(2) as u32),
            db_oid: Oid(5),
            rel_number: RelFileNumber(16384 + g.next(40) as u32),
        };
        let fork = ForkNumber::ALL[g.next(4) as usize];
        // Few blocks, so blocks repeat; some far ones to cross roaring containers.
        let block = BlockNumber(if g.next(10) == 0 {
            g.next(1 << 20) as u32
        } else {
            g.next(300) as u32
        });
        match g.next(100) {
            0..=2 => Change::Limit {
                locator,
                fork,
                limit: block,
            },
            3 => Change::DatabaseCreated {
                spc: locator.spc_oid,
                db: Oid(g.next(3) as u32),
                strategy: ptrack_wal::CreateStrategy::WalLog,
            },
            4 => Change::ParameterChange { wal_level: 0 },
            _ => Change::Block {
                locator,
                fork,
                block,
                implied: false,
            },
        }
    }

    #[test]
    fn builder_random_changes_equal_change_set_apply() {
        for seed in 1..=20u64 {
            let mut g = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
            let mut plain = ChangeSet::new(7, Lsn(100));
            let mut built = ChangeSetBuilder::new(7, Lsn(100));
            for n in 0..20_000u64 {
                let c = random_change(&mut g);
                plain.apply(Lsn(100 + n), &c);
                built.apply(Lsn(100 + n), &c);
            }
            assert_eq!(built.finish(), plain, "seed {seed}");
        }
    }

    #[test]
    fn builder_block_marked_again_after_limit_is_kept() {
        let l = RelFileLocator {
            spc_oid: Oid(1663),
            db_oid: Oid(5),
            rel_number: RelFileNumber(1),
        };
        let mut b = ChangeSetBuilder::new(1, Lsn(0));
        b.mark(l, ForkNumber::Main, BlockNumber(9));
        b.set_limit(l, ForkNumber::Main, BlockNumber(5));
        // The cache must not still claim block 9 is set.
        b.mark(l, ForkNumber::Main, BlockNumber(9));
        let s = b.finish();
        let f = &s.forks[&(l, ForkNumber::Main)];
        assert_eq!(f.blocks.iter().collect::<Vec<_>>(), vec![9]);
        assert_eq!(f.limit, Some(BlockNumber(5)));
    }
}
