//! Where a repository is, as the user writes it after `-B`: a directory, or
//! `s3://bucket/prefix` for S3-compatible object storage ([`crate::s3`]), and the backend that
//! serves it.

use std::path::PathBuf;
use std::sync::Arc;

use crate::local::LocalFs;
use crate::s3::{S3Address, S3Store};
use crate::storage::{Result, Storage};

/// A repository address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory.
    Dir(PathBuf),
    /// A bucket and prefix.
    S3(S3Address),
}

impl Location {
    /// Parses `-B`'s argument: `s3://…` is object storage, anything else a directory. Other
    /// URL schemes are refused rather than taken for directory names.
    pub fn parse(s: &str) -> std::result::Result<Location, String> {
        if let Some(r) = S3Address::parse(s) {
            return r.map(Location::S3);
        }
        if let Some((scheme, _)) = s.split_once("://")
            && !scheme.is_empty()
            && scheme.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(format!(
                "\"{s}\": unsupported repository address (a directory or s3://bucket/prefix)"
            ));
        }
        if s.is_empty() {
            return Err("an empty repository path".into());
        }
        Ok(Location::Dir(PathBuf::from(s)))
    }

    /// The backend for this location (a directory must exist by then).
    pub fn connect(&self) -> Result<Arc<dyn Storage>> {
        Ok(match self {
            Location::Dir(d) => Arc::new(LocalFs::new(d)),
            Location::S3(a) => Arc::new(S3Store::new(a.clone())?),
        })
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Dir(d) => write!(f, "{}", d.display()),
            Location::S3(a) => write!(f, "{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_buckets_and_refusals() {
        assert_eq!(
            Location::parse("/var/lib/repo"),
            Ok(Location::Dir("/var/lib/repo".into()))
        );
        assert_eq!(
            Location::parse("rel/dir:with:colons"),
            Ok(Location::Dir("rel/dir:with:colons".into()))
        );
        assert!(matches!(Location::parse("s3://b/p"), Ok(Location::S3(_))));
        for bad in ["gs://b/p", "https://host/b", "", "s3://UP"] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }
}
