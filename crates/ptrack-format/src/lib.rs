//! The repository's objects and their layout, on any [`ptrack_repo::Storage`]: versioned
//! documents ([`envelope`]), the catalog as one write-once record per backup state
//! ([`catalog`], [`records`]), manifests ([`manifest`], [`entries`], [`table`]), the bundles that
//! hold stored pages and files ([`bundle`], [`stored`]), repository paths and digests
//! ([`paths`]), the WAL archive's objects ([`archived`]), and the repository itself: its marker,
//! keyring, instances and lock ([`repo`]), and an instance's retention policy ([`policy`]).
//!
//! Nothing here talks to a database server or reads a data directory except through the bytes a
//! caller hands over (ptrack-backup plans and runs backups, restores and validation on top);
//! `docs/formats.md` draws every object's bytes. Errors are typed ([`Error`]): each names the
//! object at fault, and says what is wrong with it in a variant a caller can match.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

pub mod archived;
pub mod bundle;
pub mod catalog;
pub mod entries;
pub mod envelope;
mod error;
pub mod paths;
pub mod policy;
pub mod records;
pub mod repo;
pub mod stored;
pub mod table;

pub mod manifest;

pub use error::{
    BundleError, CatalogError, DocError, Error, IoFailure, Refusal, RepoDamage, Result,
};
pub use paths::FileId;
