//! Object keys: `/`-separated components, each non-empty, not `.` or `..`, without NUL or
//! backslash, not starting with `.` and not ending in `.tmp` (the local backend's temporary
//! files are named so, and can then never be mistaken for an object). The same key names a file
//! below the repository directory and an object below the bucket prefix.

use crate::storage::StorageError;

/// A checked object key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(String);

fn check_component(key: &str, c: &str) -> Result<(), StorageError> {
    let bad = |why: &str| {
        Err(StorageError::BadKey {
            key: key.to_string(),
            why: why.to_string(),
        })
    };
    if c.is_empty() {
        return bad("an empty component");
    }
    if c.starts_with('.') {
        return bad("a component starting with '.'");
    }
    if c.ends_with(".tmp") {
        return bad("a component ending in \".tmp\"");
    }
    if c.contains(['\0', '\\']) {
        return bad("a NUL or backslash");
    }
    Ok(())
}

impl Key {
    /// Checks `s` (see the module documentation).
    pub fn new(s: &str) -> Result<Key, StorageError> {
        for c in s.split('/') {
            check_component(s, c)?;
        }
        Ok(Key(s.to_string()))
    }

    /// `self/name`, `name` being one component.
    pub fn join(&self, name: &str) -> Result<Key, StorageError> {
        let s = format!("{}/{name}", self.0);
        if name.contains('/') {
            return Err(StorageError::BadKey {
                key: s,
                why: "a '/' in a component".into(),
            });
        }
        check_component(&s, name)?;
        Ok(Key(s))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// Whether `self` is `prefix` or lies below it (whole components).
    pub fn is_under(&self, prefix: &Key) -> bool {
        self.0 == prefix.0
            || self
                .0
                .strip_prefix(&prefix.0)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        for good in ["catalog", "1234/backups/0TPF7FF/bundle.0", "a-b_c.d/e"] {
            assert_eq!(Key::new(good).ok().map(|k| k.0), Some(good.to_string()));
        }
        for bad in [
            "",
            "/abs",
            "a//b",
            "a/",
            ".",
            "..",
            "a/../b",
            ".hidden",
            "x/bundle.0.tmp",
            "a\\b",
            "a\0b",
        ] {
            assert!(
                matches!(Key::new(bad), Err(StorageError::BadKey { .. })),
                "{bad:?}"
            );
        }
        let k = Key::new("a/b").unwrap_or_else(|e| unreachable!("{e}"));
        assert!(k.join("c/d").is_err());
        assert!(k.join("..").is_err());
        assert_eq!(k.join("c").ok().map(|k| k.0), Some("a/b/c".to_string()));
    }

    #[test]
    fn is_under_takes_whole_components() {
        let k = |s: &str| Key::new(s).unwrap_or_else(|e| unreachable!("{e}"));
        assert!(k("a/b/c").is_under(&k("a/b")));
        assert!(k("a/b").is_under(&k("a/b")));
        assert!(!k("a/bc").is_under(&k("a/b")));
        assert!(!k("a").is_under(&k("a/b")));
    }
}
