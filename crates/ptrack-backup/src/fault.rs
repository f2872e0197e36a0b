//! What can be wrong with a stored backup ([`Fault`], reported as "backup ID: …") and with what
//! a database server answered ([`ServerError`]): the typed halves of [`crate::Error`]. Each
//! variant names the object, file or LSN at fault.

use ptrack_types::Lsn;

/// What is wrong with a stored backup (its ID is [`crate::Error::Backup`]'s).
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// Its record is OK but its manifest is gone.
    #[error("its manifest \"{0}\" is missing")]
    ManifestMissing(String),
    /// Its manifest is another than the one its record names.
    #[error("manifest \"{0}\" is not the one recorded in the catalog (BLAKE3 differs)")]
    ManifestDigest(String),
    /// Its record names no manifest.
    #[error("the catalog records no manifest digest for it")]
    NoManifestDigest,
    /// Its manifest and its record disagree on facts both hold.
    #[error("{}", .0.join("; "))]
    Disagrees(Vec<String>),
    /// Its manifest breaks the manifest's rules.
    #[error("manifest \"{key}\": {why}")]
    ManifestShape {
        /// The manifest's key.
        key: String,
        /// The rule broken.
        why: String,
    },
    /// Its manifest names another parent than its record.
    #[error("its manifest does not name backup {0} as its parent")]
    NotParent(String),
    /// Its parent's manifest is not the one it was taken against.
    #[error("the manifest of its parent {0} is not the one it was taken against (BLAKE3 differs)")]
    ParentManifest(String),
    /// Its parent starts after it.
    #[error("its parent {parent} starts at {parent_start}, after it ({start})")]
    ParentLater {
        /// The parent.
        parent: String,
        /// The parent's start LSN.
        parent_start: Lsn,
        /// This backup's start LSN.
        start: Lsn,
    },
    /// A stored file (or its page index) of this backup that cannot be read back.
    #[error("file \"{path}\": {cause}")]
    File {
        /// The file.
        path: String,
        /// Why.
        cause: Box<ptrack_format::Error>,
    },
    /// A file recorded as unchanged that no earlier backup of the chain stores.
    #[error("file \"{0}\" is recorded as unchanged, but no earlier backup of the chain stores it")]
    NotInChain(String),
    /// It stores no `global/pg_control`.
    #[error("it stores no global/pg_control")]
    NoControlFile,
    /// A manifest entry under `pg_tblspc` without a tablespace link.
    #[error("manifest entry \"{0}\" lies in a tablespace the backup has no link for")]
    UnlinkedTablespace(String),
    /// A WAL segment its manifest lists but does not store.
    #[error("WAL \"{0}\" of the backup is not stored")]
    WalNotStored(String),
    /// Its record disappeared while it was being taken.
    #[error("its record vanished while it was taken")]
    RecordVanished,
    /// Damaged pages found while it was taken (without `--allow-corruption`).
    #[error(
        "failed: {count} damaged page(s) found (use --allow-corruption to record them and go on):\n{report}"
    )]
    DamagedPages {
        /// How many.
        count: usize,
        /// One line per page.
        report: String,
    },
    /// A bundle reader for a chain link that was never opened (a bug, reported, not a panic).
    #[error("no reader for link {0}")]
    NoReader(usize),
}

/// What a database server answered that ptrack cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The connection failed.
    #[error(
        "could not connect to server at \"{host}\" port {port} as user \"{user}\" to database \"{dbname}\": {message}"
    )]
    Connect {
        /// Host or socket directory.
        host: String,
        /// Port.
        port: u16,
        /// Role.
        user: String,
        /// Database.
        dbname: String,
        /// The server's (or the client library's) message.
        message: String,
    },
    /// A query or connection failed; `message` is the server's own.
    #[error("{}{message}", context(.query))]
    Failed {
        /// The query, when it was one.
        query: Option<String>,
        /// The server's message (severity, text, detail, hint).
        message: String,
    },
    /// An answer no PostgreSQL gives.
    #[error("{}unexpected {what} {value:?}", context(.query))]
    Unexpected {
        /// The query, when known.
        query: Option<String>,
        /// What was expected.
        what: &'static str,
        /// What came.
        value: String,
    },
    /// WAL up to the stop LSN was not flushed in time.
    #[error("WAL up to the stop LSN {0} was not flushed within 60 s")]
    NotFlushed(Lsn),
}

fn context(query: &Option<String>) -> String {
    query.as_ref().map(|q| format!("{q}: ")).unwrap_or_default()
}
