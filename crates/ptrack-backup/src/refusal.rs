//! Requests ptrack does not carry out, and why ([`Refusal`], [`crate::Error::Refused`]): the
//! wrong server or data directory, a backup that cannot be incremental, a restore target or
//! tablespace mapping that would lose or mix data, a user it must not run as. Each variant's
//! message names what is at fault and what to do instead; the messages PostgreSQL DBAs know
//! from pg_probackup (the ptrack LSN check) keep its wording.

use ptrack_format::catalog::Status;
use ptrack_types::{Lsn, TimeLineId};

/// A request ptrack does not carry out.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The server connected to is another cluster than the data directory's.
    #[error(
        "the server you connected to is cluster {server}, but \"{pgdata}\" holds cluster {cluster}: connect to the server running on that data directory"
    )]
    OtherCluster {
        /// The server's system identifier.
        server: u64,
        /// The data directory.
        pgdata: String,
        /// Its system identifier.
        cluster: u64,
    },
    /// No server runs on the data directory.
    #[error(
        "no server is running on \"{pgdata}\" (\"{pidfile}\": {cause}); ptrack backs up a running server's own data directory"
    )]
    NotRunning {
        /// The data directory.
        pgdata: String,
        /// Its `postmaster.pid`.
        pidfile: String,
        /// Why it cannot be read.
        cause: String,
    },
    /// The server connected to is not the postmaster of the data directory (a standby and its
    /// primary share a system identifier).
    #[error(
        "the server you connected to (port {port}, started at Unix time {started}) is not the one running on \"{pgdata}\" \
         (its postmaster.pid says port {file_port}, started at {file_started}): connect to that server (a standby and its primary share a system identifier)"
    )]
    OtherPostmaster {
        /// The server's port.
        port: u16,
        /// Its start time.
        started: i64,
        /// The data directory.
        pgdata: String,
        /// The port `postmaster.pid` names (`?` when unreadable).
        file_port: String,
        /// The start time it names.
        file_started: String,
    },
    /// Server and data directory of different majors.
    #[error(
        "server is PostgreSQL {server} but \"{pgdata}\" is a PostgreSQL {cluster} data directory"
    )]
    OtherMajor {
        /// The server's major.
        server: u32,
        /// The data directory.
        pgdata: String,
        /// Its major.
        cluster: u32,
    },
    /// Not a data directory.
    #[error("\"{pgdata}\" is not a readable PostgreSQL data directory: {cause}")]
    NotADataDir {
        /// The directory.
        pgdata: String,
        /// Why.
        cause: String,
    },
    /// An incremental backup without a full one.
    #[error(
        "no full backup of cluster {sysid} in repository \"{address}\"{}: take one with --mode full first",
        others_note(.others)
    )]
    NoFullBackup {
        /// The cluster.
        sysid: u64,
        /// The repository.
        address: String,
        /// The clusters it holds.
        others: Vec<u64>,
    },
    /// The cluster changed major or block size since its backups.
    #[error(
        "cluster {sysid} was backed up as PostgreSQL {was_major} with {was_blcksz}-byte blocks; it is now {major} with {blcksz}: take backups into a new repository"
    )]
    ClusterChanged {
        /// The cluster.
        sysid: u64,
        /// Its major then.
        was_major: String,
        /// Its block size then.
        was_blcksz: u32,
        /// Its major now.
        major: String,
        /// Its block size now.
        blcksz: u32,
    },
    /// ptrack's map starts after the parent (pg_probackup's wording).
    #[error(
        "LSN from ptrack_control {init} is greater than Start LSN of previous backup {parent_start} ({parent}). \
         Create new full backup before an incremental one."
    )]
    PtrackTooNew {
        /// `ptrack_init_lsn()`.
        init: Lsn,
        /// The parent's start.
        parent_start: Lsn,
        /// The parent.
        parent: String,
    },
    /// The server switched timelines during the backup.
    #[error("the server moved from timeline {from} to {to} during the backup; take it again")]
    TimelineSwitch {
        /// At the start.
        from: TimeLineId,
        /// At the stop.
        to: TimeLineId,
    },
    /// The server's timeline history cannot be read.
    #[error(
        "cannot check which backups are ancestors of the server's timeline {timeline}: \"{path}\": {cause}; take a full backup"
    )]
    NoHistory {
        /// The server's timeline.
        timeline: TimeLineId,
        /// The history file.
        path: String,
        /// Why.
        cause: String,
    },
    /// Data checksums switched since the parent.
    #[error(
        "data checksums were {} since backup {parent} (data_checksum_version {then} then, {now} now): pg_checksums rewrites every page without WAL, \
         so an incremental backup could miss pages; take a full backup (--mode full)",
        switched(.now)
    )]
    ChecksumsSwitched {
        /// The parent.
        parent: String,
        /// Its checksum version.
        then: u32,
        /// The cluster's.
        now: u32,
    },
    /// No backup can be the parent.
    #[error(
        "no backup of cluster {0} has status OK to be incremental to: take a full backup first (--mode full)"
    )]
    NoParent(u64),
    /// Every OK backup was passed over, each for its reason.
    #[error(
        "no OK backup can be the parent of an incremental backup of this server: {}; take a full backup (--mode full)",
        .0.join("; ")
    )]
    NoParentOf(Vec<String>),
    /// A backup of the chain asked for is not OK.
    #[error("backup {id} needs backup {needed} which has status {status}")]
    ChainNotOk {
        /// The backup asked for.
        id: String,
        /// The link that is not OK.
        needed: String,
        /// Its status.
        status: Status,
    },
    /// The backup asked for has no record.
    #[error(
        "backup {id} is not in the catalog of instance {sysid} (`ptrack show` lists the backups)"
    )]
    NoSuchBackup {
        /// The backup.
        id: String,
        /// The instance.
        sysid: u64,
    },
    /// Nothing to restore.
    #[error("instance {0} has no backup with status OK")]
    NoOkBackup(u64),
    /// No OK backup is consistent before the target.
    #[error("no OK backup of instance {sysid} is consistent before the recovery target: {why}")]
    NoneBeforeTarget {
        /// The instance.
        sysid: u64,
        /// Why the newest is not.
        why: String,
    },
    /// A backup that is not OK, asked for a restore.
    #[error("backup {id} has status {status}{}; only OK backups are restored", note(.error))]
    NotRestorable {
        /// The backup.
        id: String,
        /// Its status.
        status: Status,
        /// Its recorded error.
        error: Option<String>,
    },
    /// The backup becomes consistent after the target.
    #[error("{0}: choose an older backup with -i, or a later target")]
    AfterTarget(String),
    /// A backup that is RUNNING or ERROR, asked for a validate.
    #[error("backup {id} has status {status}; there is nothing to validate")]
    NothingToValidate {
        /// The backup.
        id: String,
        /// Its status.
        status: Status,
    },
    /// Validation stopped because the repository could not be read (not damage).
    #[error(
        "validate of backup {id} stopped: the repository could not be read ({why}); no backup's status was changed"
    )]
    ValidateStopped {
        /// The backup being validated.
        id: String,
        /// The storage failure.
        why: String,
    },
    /// A restore target that holds files.
    #[error("restore target \"{0}\" exists and is not empty; give an empty or new directory")]
    TargetNotEmpty(String),
    /// A relative tablespace location.
    #[error("tablespace location \"{0}\" must be an absolute path")]
    RelativeTablespace(String),
    /// A tablespace directory that holds files.
    #[error(
        "tablespace directory \"{dir}\" (for {link}) exists and is not empty; relocate it with -T {old}=NEWDIR"
    )]
    TablespaceNotEmpty {
        /// The directory.
        dir: String,
        /// The tablespace's link.
        link: String,
        /// Its location in the backup.
        old: String,
    },
    /// A `-T` mapping for a location the backup has no tablespace at.
    #[error("-T {old}={new}: backup {id} has no tablespace at \"{old}\"")]
    NoSuchTablespace {
        /// The location mapped.
        old: String,
        /// Where to.
        new: String,
        /// The backup.
        id: String,
    },
    /// A `-T` mapping given twice.
    #[error("-T {0}=…: given more than once")]
    MappedTwice(String),
    /// A tablespace location inside the target or the other way round.
    #[error(
        "tablespace location \"{location}\" (for {link}) and the restore target \"{target}\" lie inside one another"
    )]
    TablespaceInTarget {
        /// The location.
        location: String,
        /// The tablespace's link.
        link: String,
        /// The restore target.
        target: String,
    },
    /// Two tablespaces mapped into one another.
    #[error(
        "tablespaces {a} and {b} would share \"{a_dir}\" / \"{b_dir}\"; give each its own -T location"
    )]
    TablespacesShare {
        /// One link.
        a: String,
        /// The other.
        b: String,
        /// One location.
        a_dir: String,
        /// The other.
        b_dir: String,
    },
    /// A recovery target the backup's own WAL cannot reach.
    #[error(
        "without --restore-command the restored cluster has only the backup's own WAL, which ends where it becomes consistent: \
         the only recovery target it can reach is `immediate`; archive the cluster's WAL with `ptrack archive-push`, or give --restore-command for another archive"
    )]
    TargetNeedsArchive,
    /// The ptrack extension is not installed.
    #[error(
        "--mode ptrack needs the ptrack extension, which is not installed in database \"{0}\": \
         add ptrack to shared_preload_libraries, set ptrack.map_size, restart, and run CREATE EXTENSION ptrack \
         (or use --mode delta)"
    )]
    NoExtension(String),
    /// The ptrack extension is too old.
    #[error("ptrack extension version {0} is too old: version 2.0 or later is needed")]
    OldExtension(String),
    /// The ptrack extension is installed but not loaded.
    #[error(
        "ptrack is installed but not loaded ({0}); add it to shared_preload_libraries and restart"
    )]
    NotLoaded(String),
    /// Tracking is off (pg_probackup's wording).
    #[error(
        "Ptrack is disabled ({guc} = {size}): set it to a size in MB and restart the server, or use --mode delta"
    )]
    PtrackDisabled {
        /// The setting.
        guc: &'static str,
        /// Its value.
        size: String,
    },
    /// A WAL segment the backup needs is gone.
    #[error(
        "WAL segment \"{path}\" needed by backup {id} (start {start}, stop {stop}) could not be read: {cause}; \
         it may have been recycled: allow ptrack a replication slot or raise wal_keep_size"
    )]
    WalGone {
        /// The segment.
        path: String,
        /// The backup.
        id: String,
        /// Its start.
        start: Lsn,
        /// Its stop.
        stop: Lsn,
        /// Why.
        cause: String,
    },
    /// A WAL segment of the wrong size.
    #[error("WAL segment \"{path}\" has {found} bytes, expected {expected}")]
    WalSize {
        /// The segment.
        path: String,
        /// Its size.
        found: u64,
        /// The cluster's segment size.
        expected: u64,
    },
    /// A tablespace link ptrack cannot record.
    #[error(
        "tablespace link \"{link}\" points to \"{target}\", which is not an absolute UTF-8 path; ptrack cannot record it"
    )]
    TablespaceTarget {
        /// The link.
        link: String,
        /// Its target.
        target: String,
    },
    /// A name in the data directory a repository path cannot hold.
    #[error("unexpected name in the data directory: {0}")]
    BadName(String),
    /// A listing or result log larger than ptrack holds.
    #[error("{0} (tens of millions of files)")]
    TooLarge(&'static str),
    /// Running as root with root's files.
    #[error(
        "ptrack does not work as root: {what} \"{path}\" belongs to root. Run ptrack as the cluster's owner \
         (for example `runuser -u postgres -- ptrack …`), with a repository that user owns"
    )]
    RootOwned {
        /// Data directory or repository.
        what: &'static str,
        /// Its path.
        path: String,
    },
    /// An owner without a user entry.
    #[error(
        "{what} \"{path}\" belongs to uid {uid}, which has no user entry; run ptrack as its owner"
    )]
    NoUser {
        /// Data directory or repository.
        what: &'static str,
        /// Its path.
        path: String,
        /// The owner.
        uid: u32,
    },
    /// An owner whose name has a NUL byte.
    #[error("user name with a NUL byte")]
    NulInUserName,
    /// The switch to the owner failed.
    #[error("could not switch to user {user} (owner of {what} \"{path}\"): {cause}")]
    SwitchUser {
        /// The owner.
        user: String,
        /// Data directory or repository.
        what: &'static str,
        /// Its path.
        path: String,
        /// The system's error.
        cause: String,
    },
    /// A file `archive-push` or `archive-get` is given that is not a WAL file name.
    #[error(
        "\"{0}\" is not the name of a WAL segment, .partial segment, timeline history or backup history file"
    )]
    NotAWalName(String),
    /// A WAL file that is not what its name says (another cluster's, renamed, truncated).
    #[error("\"{path}\" is not the WAL file its name says: {why}")]
    BadWalFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// A spool directory inside the data directory.
    #[error(
        "the spool \"{spool}\" is inside the data directory \"{pgdata}\": give a directory outside it (a backup would copy it; its locks and markers are this host's, not the cluster's)"
    )]
    SpoolInDataDir {
        /// The spool.
        spool: String,
        /// The data directory.
        pgdata: String,
    },
    /// A spool directory another cluster uses.
    #[error(
        "\"{spool}\" is the spool of the cluster in \"{other}\", not of \"{pgdata}\": give each cluster a spool of its own"
    )]
    SpoolOfAnotherCluster {
        /// The spool.
        spool: String,
        /// The data directory it belongs to.
        other: String,
        /// The one asking.
        pgdata: String,
    },
    /// The archive holds other content under the name.
    #[error("{0}")]
    ArchivedOtherwise(ptrack_format::archived::Conflict),
    /// An LSN target past a segment the archive does not hold.
    #[error(
        "recovery target {target} cannot be reached from backup {id}: the archive does not hold {missing}"
    )]
    ArchiveCannotReach {
        /// The target.
        target: Lsn,
        /// The first segment missing after the backup.
        missing: String,
        /// The backup.
        id: String,
    },
    /// A wal-mode backup whose WAL since the parent cannot be read or trusted.
    #[error(
        "a wal backup reads the WAL from its parent {parent}'s start {from} to its own start {to}, and cannot: {why}; take a delta or full backup"
    )]
    WalModeCannot {
        /// The parent.
        parent: String,
        /// The parent's start LSN.
        from: Lsn,
        /// This backup's start LSN.
        to: Lsn,
        /// Why.
        why: String,
    },
    /// The backup asked for cannot reach the target timeline.
    #[error(
        "{0}; give --recovery-target-timeline current (or its timeline) to recover along the backup's own"
    )]
    OffTargetTimeline(String),
    /// The target timeline's history is not in the archive.
    #[error(
        "the archive does not hold the history of timeline {timeline} (\"{key}\"): which backups lie on it cannot be told, and recovery could not follow it"
    )]
    NoArchivedHistory {
        /// The timeline.
        timeline: TimeLineId,
        /// The object looked for.
        key: String,
    },
    /// A `--recovery-target-timeline` PostgreSQL does not take.
    #[error("bad recovery target timeline {0:?}: expected current, latest or a timeline number")]
    BadTimeline(String),
    /// `PGPORT` that is not a port.
    #[error("invalid port {0:?} in environment variable PGPORT")]
    BadPort(String),
    /// A delete of a backup other backups are built on.
    #[error(
        "backup {id} is the parent of {}: delete them first, or add --with-descendants to delete them with it",
        descendants.join(", ")
    )]
    HasDescendants {
        /// The backup.
        id: String,
        /// Every backup whose chain passes through it.
        descendants: Vec<String>,
    },
    /// A delete of a backup being taken.
    #[error(
        "backup {0} is RUNNING: it is being taken, or its process died and the next command that takes the instance lock marks it ERROR"
    )]
    DeleteRunning(String),
    /// A pin of a backup that is not OK.
    #[error("backup {id} is {status}: only OK backups can be pinned")]
    PinNotOk {
        /// The backup.
        id: String,
        /// Its status.
        status: Status,
    },
    /// A backup that failed, and recording or cleaning up the failure failed too.
    #[error("{failure} ({after})")]
    FailedAndMore {
        /// The backup's own failure.
        failure: Box<crate::Error>,
        /// What went wrong after it.
        after: String,
    },
}

fn others_note(others: &[u64]) -> String {
    if others.is_empty() {
        return String::new();
    }
    let v: Vec<String> = others.iter().map(u64::to_string).collect();
    format!(" (it holds backups of other clusters: {})", v.join(", "))
}

fn switched(now: &u32) -> &'static str {
    if *now != 0 { "enabled" } else { "disabled" }
}

fn note(error: &Option<String>) -> String {
    error
        .as_deref()
        .map(|e| format!(" ({e})"))
        .unwrap_or_default()
}
