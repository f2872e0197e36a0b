//! The core of the `ptrack` extension, free of PostgreSQL: everything here is plain Rust that the
//! extension (`ptrack-ext`) calls from its hooks, worker and SQL functions, and that tests and
//! tools can drive on their own.
//!
//! * [`changelog`]: change sets cut at each save, for pagemapset to enumerate changed blocks;
//! * [`clock`]: when WAL positions were reached, for files changed without WAL (FSM forks);
//! * [`hash`]: PostgreSQL's `hash_bytes_extended` and ptrack's 20-byte block key;
//! * [`map`]: the two-slot LSN map over shared atomics, its summary levels and its file image;
//! * [`mapload`]: loading the map file at start, in parallel ranges straight into the words;
//! * [`mapsave`]: incremental saves: the dirty regions, delta files and their chain;
//! * [`files`]: where the map file lives (`pg_ptrack/` or `global/`) and the file work at start;
//! * [`pagemap`]: the `ptrack_get_pagemapset` scan and its datapagemap bitmaps;
//! * [`settings`]: checks of the two postmaster settings, with PostgreSQL's messages;
//! * [`follow`]: the WAL follower that turns records of `pg_wal` into marks.
#![deny(clippy::unwrap_used, clippy::panic)]

pub mod changelog;
pub mod clock;
pub mod files;
pub mod follow;
pub mod hash;
pub mod map;
pub mod mapload;
pub mod mapsave;
pub mod pagemap;
pub mod settings;

pub use files::MapLocation;
pub use map::{ChecksumChange, LoadError, Map, MapHeader, MapIdentity, MapLayout};
pub use mapload::{LoadPlan, Loaded, MapSource};
pub use pagemap::{FsmRule, Row, ScanConfig, ScanStats, Strategy, pagemapset, pagemapset_with};
