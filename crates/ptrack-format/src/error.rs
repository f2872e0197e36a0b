//! The errors of the repository's formats and layout, one enum per kind of fault so that a
//! caller can tell them apart without reading a message: a document that fails its checks
//! ([`DocError`]), a bundle ([`BundleError`]), the catalog's links ([`CatalogError`]), the
//! repository's own objects ([`RepoDamage`]), and a request the repository cannot carry out
//! ([`Refusal`]). Every message names the object, backup or key at fault, and never quotes a
//! repository file's bytes (a repository file may be a link to a secret).

use ptrack_repo::StorageError;
use ptrack_repo::keyring::KeyError;

/// Errors of the repository's formats and layout.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O failure on a named local file (a data directory's file being stored).
    #[error("{0}")]
    Io(IoFailure),
    /// The repository's storage failed (the message names the object's key).
    #[error("repository object {0}")]
    Storage(StorageError),
    /// An encrypted repository's key: missing, wrong (the ids are named), or its keyring damaged.
    #[error("{0}")]
    Key(KeyError),
    /// A versioned document (marker, instance, record, index, manifest) that fails its checks.
    #[error("{object}: {why}")]
    Document {
        /// The document (its key, quoted).
        object: String,
        /// What is wrong.
        why: DocError,
    },
    /// A bundle or a record in one that fails its checks.
    #[error("{0}")]
    Bundle(BundleError),
    /// The catalog's records do not link up.
    #[error("{0}")]
    Catalog(CatalogError),
    /// The repository's own objects contradict each other.
    #[error("{0}")]
    Damaged(RepoDamage),
    /// A request the repository cannot carry out as it stands.
    #[error("{0}")]
    Refused(Refusal),
}

/// An I/O failure on a named local file. The cause is part of the message, not a separate
/// source, so that it is printed once.
#[derive(Debug, thiserror::Error)]
#[error("could not {op} \"{path}\": {cause}")]
pub struct IoFailure {
    /// What was being done.
    pub op: &'static str,
    /// The file.
    pub path: String,
    /// The cause.
    pub cause: std::io::Error,
}

impl IoFailure {
    /// `op` on `path` failed with `cause`.
    pub fn new(path: &std::path::Path, op: &'static str, cause: std::io::Error) -> IoFailure {
        IoFailure {
            op,
            path: path.display().to_string(),
            cause,
        }
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, Error>;

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Error {
        Error::Storage(e)
    }
}

impl From<KeyError> for Error {
    fn from(e: KeyError) -> Error {
        match e {
            KeyError::Storage(s) => Error::Storage(s),
            e => Error::Key(e),
        }
    }
}

impl From<BundleError> for Error {
    fn from(e: BundleError) -> Error {
        Error::Bundle(e)
    }
}

impl From<CatalogError> for Error {
    fn from(e: CatalogError) -> Error {
        Error::Catalog(e)
    }
}

impl From<RepoDamage> for Error {
    fn from(e: RepoDamage) -> Error {
        Error::Damaged(e)
    }
}

impl From<Refusal> for Error {
    fn from(e: Refusal) -> Error {
        Error::Refused(e)
    }
}

impl Error {
    /// An I/O error on local file `path`.
    pub fn io(path: &std::path::Path, op: &'static str, cause: std::io::Error) -> Error {
        Error::Io(IoFailure::new(path, op, cause))
    }

    /// Whether the object asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Storage(StorageError::NotFound { .. }))
    }

    /// Whether this is damage to what the repository holds (a failed check or a failed
    /// authentication tag), as opposed to a failing store or a refused request.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Error::Document { .. }
                | Error::Bundle(_)
                | Error::Catalog(_)
                | Error::Damaged(_)
                | Error::Storage(StorageError::Damaged { .. })
        )
    }
}

/// What is wrong with a versioned document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocError {
    /// Not a ptrack document at all.
    #[error("not a ptrack document ({0})")]
    NotADocument(&'static str),
    /// A document of another kind.
    #[error("is a {found} document, expected {expected}")]
    WrongKind {
        /// The kind its header names.
        found: String,
        /// The kind asked for.
        expected: String,
    },
    /// A header field that does not parse.
    #[error("malformed header ({0})")]
    MalformedHeader(&'static str),
    /// A format older than this ptrack reads.
    #[error(
        "format version {found} was written by an older ptrack; this ptrack reads {}. {}",
        reads(*oldest, *newest),
        crate::envelope::OLD_FORMAT
    )]
    OlderFormat {
        /// The header's version.
        found: u32,
        /// The oldest version read.
        oldest: u32,
        /// The version written.
        newest: u32,
    },
    /// A format newer than this ptrack reads.
    #[error(
        "format version {found} was written by a newer ptrack (this one reads version {newest}); use that ptrack"
    )]
    NewerFormat {
        /// The header's version.
        found: u32,
        /// The version written.
        newest: u32,
    },
    /// The body is shorter than the header says.
    #[error("truncated: body shorter than {0} bytes")]
    Truncated(usize),
    /// The body's CRC-32C differs from the header's.
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum {
        /// The header's.
        stored: u32,
        /// The body's.
        computed: u32,
    },
    /// The body is not the JSON the kind needs.
    #[error("invalid content at line {line} column {column} ({class} error)")]
    Content {
        /// Line of the first fault.
        line: usize,
        /// Its column.
        column: usize,
        /// serde_json's class of error (syntax, data, eof, io).
        class: String,
    },
    /// Larger than any ptrack document.
    #[error("has {0} bytes, more than any ptrack document")]
    TooLarge(u64),
    /// The body parses but breaks the format's rules (the reason is the format's own).
    #[error("{0}")]
    Invalid(String),
}

fn reads(oldest: u32, newest: u32) -> String {
    match oldest == newest {
        true => format!("version {newest} only"),
        false => format!("versions {oldest} to {newest}"),
    }
}

/// Where in a bundle: `bundle.<n>` and an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    /// Bundle number.
    pub bundle: u32,
    /// Offset in the bundle.
    pub offset: u64,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bundle.{} offset {}", self.bundle, self.offset)
    }
}

/// What is wrong with a bundle or a record in one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// A bundle number no backup writes (from a damaged manifest).
    #[error("bundle number {0} is implausible")]
    ImplausibleNumber(u32),
    /// The bundle's header is not one of this version and compression.
    #[error("\"{key}\": not a version {version} {compression} bundle (bad header)")]
    BadHeader {
        /// The bundle's key.
        key: String,
        /// The version read.
        version: u32,
        /// The compression the manifest names.
        compression: &'static str,
    },
    /// A record that lies outside its bundle.
    #[error("record at {at} length {len} lies outside the bundle ({bundle_len} bytes)")]
    Outside {
        /// The record.
        at: At,
        /// Its stored length.
        len: u64,
        /// The bundle's length.
        bundle_len: u64,
    },
    /// A page index whose bytes differ from the manifest's digest.
    #[error("page index at {0} does not match its BLAKE3 digest")]
    IndexDigest(At),
    /// A stored page that does not decompress.
    #[error("block {0}: stored page does not decompress")]
    PageDecompress(u32),
    /// A stored page whose CRC-32C fails.
    #[error("block {0}: stored page fails its CRC-32C")]
    PageCrc(u32),
    /// A stored file whose length and zero tail do not add up to its size.
    #[error("record at {at} holds {len} bytes and {zero_tail} zeros, not the file's {size} bytes")]
    WrongSize {
        /// The record.
        at: At,
        /// Stored bytes.
        len: u64,
        /// Zeros after them.
        zero_tail: u64,
        /// The file's size.
        size: u64,
    },
    /// A stored file whose bytes differ from the manifest's digest.
    #[error("stored file at {0} does not match its BLAKE3 digest")]
    FileDigest(At),
    /// A piece asked for outside its record.
    #[error("piece {start}+{len} lies outside the record at {at}")]
    PieceOutside {
        /// Piece start in the record.
        start: u64,
        /// Piece length.
        len: u64,
        /// The record.
        at: At,
    },
    /// A stored file larger than memory allows.
    #[error("stored file of {0} bytes is implausible")]
    ImplausibleSize(u64),
    /// A stored file that does not decompress to its size.
    #[error("stored file at {at} does not decompress to {size} bytes")]
    FileDecompress {
        /// The record.
        at: At,
        /// The file's size.
        size: u64,
    },
}

/// The catalog's records do not link up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// A record whose ID is not a backup ID.
    #[error("record with a malformed backup ID {0:?}")]
    MalformedId(String),
    /// A record whose parent is not a backup ID.
    #[error("backup {0} has a malformed parent ID")]
    MalformedParent(String),
    /// IDs repeated or out of order.
    #[error("backup IDs are not unique and in order at {0}")]
    Order(String),
    /// The backup asked for has no record.
    #[error("backup {0} is not in the catalog")]
    NoSuchBackup(String),
    /// A backup whose parent has no record.
    #[error("backup {child} needs its parent {parent}, which is missing from the catalog")]
    MissingParent {
        /// The backup.
        child: String,
        /// Its parent.
        parent: String,
    },
    /// Parent links that go round.
    #[error("backup chain of {id} loops at {at}")]
    Loop {
        /// Where the chain started.
        id: String,
        /// Where it came back.
        at: String,
    },
    /// A full backup with a parent, or an incremental without one.
    #[error("backup {0} has an inconsistent parent link")]
    InconsistentLink(String),
}

/// The repository's own objects contradict each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoDamage {
    /// An object under `records/` whose name is not a record's.
    #[error(
        "\"{0}\" is not a backup record (expected <ID>.<10 digits>); move it out of the repository"
    )]
    NotARecord(String),
    /// A record stored under another backup's name.
    #[error("\"{key}\" holds the record of backup {found:?}, not {expected}")]
    RecordOfOther {
        /// The record's key.
        key: String,
        /// The ID inside it.
        found: String,
        /// The ID its name says.
        expected: String,
    },
    /// A record at the highest generation a name can hold.
    #[error(
        "backup {id}'s record is at state {generation}, the last a record name can hold; move \"{key}\" aside"
    )]
    LastGeneration {
        /// The backup.
        id: String,
        /// Its record's generation.
        generation: u64,
        /// The record's key.
        key: String,
    },
    /// An instance document of another cluster.
    #[error("\"{key}\" describes system {found}, not {expected}")]
    InstanceOfOther {
        /// The document's key.
        key: String,
        /// The system identifier inside it.
        found: u64,
        /// The one its key says.
        expected: u64,
    },
    /// A marker naming an encryption this ptrack does not know.
    #[error(
        "\"{marker}\": encrypted with an unknown scheme (this ptrack knows {cipher} with keyring {keyring})"
    )]
    UnknownScheme {
        /// The marker's key.
        marker: String,
        /// The scheme this ptrack writes.
        cipher: &'static str,
        /// The keyring format it reads.
        keyring: &'static str,
    },
    /// An encrypted repository without its keyring.
    #[error(
        "\"{marker}\" says the repository is encrypted, but its keyring \"{keyring}\" is missing"
    )]
    KeyringMissing {
        /// The marker's key.
        marker: String,
        /// The keyring's key.
        keyring: &'static str,
    },
    /// A keyring of another repository.
    #[error(
        "keyring \"{keyring}\" is for data key {found}, but the repository's is {expected} (a keyring of another repository)"
    )]
    KeyringOfOther {
        /// The keyring's key.
        keyring: &'static str,
        /// Its data key's id.
        found: String,
        /// The marker's.
        expected: String,
    },
    /// An instance's records that do not link up.
    #[error("the catalog of instance \"{instance}\": {why}")]
    Catalog {
        /// The instance's key prefix.
        instance: String,
        /// What does not link up.
        why: CatalogError,
    },
}

/// A request the repository cannot carry out as it stands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `init` where a repository is.
    #[error("\"{0}\" is already a ptrack repository")]
    AlreadyARepository(String),
    /// `init` on a prefix that holds objects.
    #[error(
        "\"{address}\" is not empty (it holds \"{first}\" and {more} more objects); give an empty prefix"
    )]
    NotEmpty {
        /// The repository's address.
        address: String,
        /// One object there.
        first: String,
        /// How many more.
        more: usize,
    },
    /// A directory that cannot become a repository.
    #[error("{0}")]
    CannotCreate(String),
    /// No repository at the address.
    #[error(
        "\"{0}\" is not a ptrack repository (no ptrack-repo object); create one with `ptrack init -B {0}`"
    )]
    NotARepository(String),
    /// A key given for a plain repository.
    #[error(
        "repository \"{address}\" is not encrypted, but a key was given ({given}); give none for it"
    )]
    KeyForPlain {
        /// The repository's address.
        address: String,
        /// Where the key came from.
        given: String,
    },
    /// An encrypted repository opened without a key.
    #[error(
        "repository \"{0}\" is encrypted; give its key with --encryption-key-file FILE or the environment variable {env}",
        env = ptrack_repo::keyring::PASSPHRASE_ENV
    )]
    KeyNeeded(String),
    /// A key command on a plain repository.
    #[error("repository \"{0}\" is not encrypted: it has no keys")]
    NoKeys(String),
    /// Another key command holds the keyring lock.
    #[error("cannot {what}: another key command is changing the keyring of \"{address}\": {owner}")]
    KeyringBusy {
        /// What was asked.
        what: String,
        /// The repository's address.
        address: String,
        /// Who holds the lock.
        owner: String,
    },
    /// Another ptrack process holds the instance lock.
    #[error("cannot {what}: another ptrack process is working on instance {sysid}: {owner}")]
    InstanceBusy {
        /// What was asked.
        what: String,
        /// The instance.
        sysid: u64,
        /// Who holds the lock.
        owner: String,
    },
    /// A repository without instances.
    #[error("repository \"{0}\" holds no backups yet")]
    Empty(String),
    /// Several instances and none chosen.
    #[error("repository \"{address}\" holds several clusters ({}); choose one with --instance", list(.sysids))]
    SeveralInstances {
        /// The repository's address.
        address: String,
        /// Its instances.
        sysids: Vec<u64>,
    },
    /// The instance chosen is not there.
    #[error(
        "repository \"{address}\" has no backups of the cluster with system identifier {sysid} (it holds: {})",
        list(.held)
    )]
    NoSuchInstance {
        /// The repository's address.
        address: String,
        /// The one asked for.
        sysid: u64,
        /// The ones it holds.
        held: Vec<u64>,
    },
    /// A record that breaks the catalog's rules, not saved.
    #[error("record to save: {0}")]
    BadRecord(CatalogError),
}

fn list(ids: &[u64]) -> String {
    if ids.is_empty() {
        return "none".into();
    }
    ids.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
