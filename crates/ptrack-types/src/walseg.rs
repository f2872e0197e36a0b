//! `WalSegSize`: the size of a WAL segment file (`wal_segment_size`, `IsValidWalSegSize` in
//! `src/include/access/xlog_internal.h`), and the LSN ↔ segment arithmetic that depends on it
//! (`XLByteToSeg`, `XLogSegmentOffset`, `XLogSegNoOffsetToRecPtr`).
//!
//! A value of this type is always a power of two from 1 MiB to 1 GiB, so no caller divides by
//! zero or by a size PostgreSQL cannot produce; it (de)serialises as the plain byte count and is
//! validated when read.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Lsn;

/// A WAL segment size in bytes: a power of two in `1 MiB ..= 1 GiB`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct WalSegSize(u64);

/// A number that is not a WAL segment size PostgreSQL allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a WAL segment size (a power of two from 1 MiB to 1 GiB)")]
pub struct BadWalSegSize(pub u64);

impl WalSegSize {
    /// The default, 16 MiB.
    pub const DEFAULT: WalSegSize = WalSegSize(16 << 20);
    /// Smallest allowed (`WalSegMinSize`).
    pub const MIN: u64 = 1 << 20;
    /// Largest allowed (`WalSegMaxSize`).
    pub const MAX: u64 = 1 << 30;

    /// `bytes` when it is a valid segment size.
    pub fn new(bytes: u64) -> Result<WalSegSize, BadWalSegSize> {
        if bytes.is_power_of_two() && (Self::MIN..=Self::MAX).contains(&bytes) {
            Ok(WalSegSize(bytes))
        } else {
            Err(BadWalSegSize(bytes))
        }
    }

    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Segments per 4 GiB "xlogid" (`XLogSegmentsPerXLogId`), the split of a file name.
    pub fn per_xlogid(self) -> u64 {
        0x1_0000_0000 / self.0
    }

    /// The segment holding `lsn` (`XLByteToSeg`).
    pub fn segno(self, lsn: Lsn) -> u64 {
        lsn.0 / self.0
    }

    /// The segment holding the byte just before `end` (`XLByteToPrevSeg`): the last segment a
    /// range ending at `end` (exclusive) touches. Segment 0 for `end` 0.
    pub fn prev_segno(self, end: Lsn) -> u64 {
        end.0.saturating_sub(1) / self.0
    }

    /// The offset of `lsn` inside its segment (`XLogSegmentOffset`).
    pub fn offset(self, lsn: Lsn) -> u64 {
        lsn.0 % self.0
    }

    /// The first position of segment `segno` (`XLogSegNoOffsetToRecPtr` with offset 0),
    /// saturating at [`Lsn::MAX`].
    pub fn start(self, segno: u64) -> Lsn {
        Lsn(segno.saturating_mul(self.0))
    }

    /// The start of the segment holding `lsn`.
    pub fn segment_start(self, lsn: Lsn) -> Lsn {
        Lsn(lsn.0 - self.offset(lsn))
    }
}

impl TryFrom<u64> for WalSegSize {
    type Error = BadWalSegSize;
    fn try_from(v: u64) -> Result<Self, Self::Error> {
        WalSegSize::new(v)
    }
}

impl From<WalSegSize> for u64 {
    fn from(s: WalSegSize) -> u64 {
        s.0
    }
}

impl fmt::Display for WalSegSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for WalSegSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WalSegSize({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_powers_of_two_in_range_are_sizes() {
        for ok in [1u64 << 20, 16 << 20, 1 << 30] {
            assert_eq!(WalSegSize::new(ok).map(u64::from), Ok(ok));
        }
        for bad in [0u64, 1, 1 << 19, 3 << 20, 1 << 31, u64::MAX] {
            assert_eq!(WalSegSize::new(bad), Err(BadWalSegSize(bad)));
        }
        assert!(serde_json::from_str::<WalSegSize>("16777216").is_ok());
        let e = serde_json::from_str::<WalSegSize>("0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a WAL segment size"), "{e}");
    }

    #[test]
    fn segment_arithmetic_matches_xlog_internal() {
        let s = WalSegSize::DEFAULT;
        let l = Lsn(0x1_0300_0028);
        assert_eq!(s.segno(l), 0x103);
        assert_eq!(s.offset(l), 0x28);
        assert_eq!(s.segment_start(l), Lsn(0x1_0300_0000));
        assert_eq!(s.start(0x103), Lsn(0x1_0300_0000));
        assert_eq!(s.prev_segno(Lsn(0x1_0300_0000)), 0x102);
        assert_eq!(s.prev_segno(Lsn(0x1_0300_0001)), 0x103);
        assert_eq!(s.prev_segno(Lsn(0)), 0);
        assert_eq!(s.per_xlogid(), 256);
        assert_eq!(s.start(u64::MAX), Lsn::MAX);
    }
}
