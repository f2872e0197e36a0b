//! A pure-Rust, sans-I/O decoder of PostgreSQL 13–18 write-ahead log: bytes in, records out.
//!
//! * [`decoder`]: [`WalDecoder`] reassembles records from a stream of WAL pages, validating page
//!   headers and record CRCs and telling the end of valid WAL apart from corruption
//!   (`xlogreader.c`);
//! * [`record`]: the record grammar and block references (`xlogrecord.h`, `DecodeXLogRecord`);
//! * [`consts`]: PostgreSQL's constants for all of the above.
//!
//! No I/O, no threads, no global state: the extension's background worker and the CLI both drive it.
#![deny(clippy::unwrap_used, clippy::panic)]

pub mod archive;
mod buffer;
pub mod builder;
pub mod changes;
pub mod check;
pub mod consts;
pub mod crc;
pub mod decoder;
pub mod mapped;
mod pieces;
pub mod record;
pub mod segment;

pub use changes::{
    Change, CheckpointKind, CreateStrategy, changes_of, special_changes, special_changes_into,
};
pub use decoder::{DecoderConfig, EndOfWal, EndReason, Poll, Polled, Start, WalDecoder, WalError};
pub use record::{BlockRef, ImageInfo, Record, RecordError};
pub use segment::{
    ParallelScan, ReadError, ScanEnd, SegmentName, SegmentSource, SourceFacts, WalDir,
    parallel_ranges, scan_dir, scan_dir_parallel, scan_dir_ranges, scan_source,
};
