//! WAL constants with PostgreSQL's names: page header flags (`xlog_internal.h`), record block ids
//! and flags (`xlogrecord.h`), resource manager ids (`rmgrlist.h`) and the info codes ptrack acts on
//! (`pg_control.h`, `xact.h`, `storage_xlog.h`, `dbcommands_xlog.h`, `heapam_xlog.h`).
#![allow(missing_docs)]

// Page headers.
pub const SIZE_OF_XLOG_SHORT_PHD: u64 = 24;
pub const SIZE_OF_XLOG_LONG_PHD: u64 = 40;
pub const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
pub const XLP_LONG_HEADER: u16 = 0x0002;
pub const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
pub const XLP_ALL_FLAGS: u16 = 0x000F;

// Records.
pub const SIZE_OF_XLOG_RECORD: usize = 24;
/// `XLogRecordMaxSize` (PG16+; applied to every version as a sanity bound).
pub const XLOG_RECORD_MAX_SIZE: u32 = 1_069_547_520;
pub const XLR_INFO_MASK: u8 = 0x0F;
pub const XLR_RMGR_INFO_MASK: u8 = 0xF0;
pub const XLR_SPECIAL_REL_UPDATE: u8 = 0x01;
pub const XLR_MAX_BLOCK_ID: u8 = 32;
pub const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
pub const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
pub const XLR_BLOCK_ID_ORIGIN: u8 = 253;
pub const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
pub const BKPBLOCK_FORK_MASK: u8 = 0x0F;
pub const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
pub const BKPBLOCK_HAS_DATA: u8 = 0x20;
pub const BKPBLOCK_WILL_INIT: u8 = 0x40;
pub const BKPBLOCK_SAME_REL: u8 = 0x80;
pub const BKPIMAGE_HAS_HOLE: u8 = 0x01;

// Resource managers.
pub const RM_XLOG_ID: u8 = 0;
pub const RM_XACT_ID: u8 = 1;
pub const RM_SMGR_ID: u8 = 2;
pub const RM_DBASE_ID: u8 = 4;
pub const RM_TBLSPC_ID: u8 = 5;
pub const RM_HEAP2_ID: u8 = 9;
pub const RM_HEAP_ID: u8 = 10;
pub const RM_SPGIST_ID: u8 = 16;
pub const RM_MAX_BUILTIN_ID: u8 = 21;
pub const RM_MIN_CUSTOM_ID: u8 = 128;

/// Names as pg_waldump prints them.
pub const RMGR_NAMES: [&str; 22] = [
    "XLOG",
    "Transaction",
    "Storage",
    "CLOG",
    "Database",
    "Tablespace",
    "MultiXact",
    "RelMap",
    "Standby",
    "Heap2",
    "Heap",
    "Btree",
    "Hash",
    "Gin",
    "Gist",
    "Sequence",
    "SPGist",
    "BRIN",
    "CommitTs",
    "ReplicationOrigin",
    "Generic",
    "LogicalMessage",
];

// XLOG info codes.
pub const XLOG_CHECKPOINT_SHUTDOWN: u8 = 0x00;
pub const XLOG_CHECKPOINT_ONLINE: u8 = 0x10;
pub const XLOG_SWITCH: u8 = 0x40;
pub const XLOG_PARAMETER_CHANGE: u8 = 0x60;
pub const XLOG_END_OF_RECOVERY: u8 = 0x90;
pub const XLOG_OVERWRITE_CONTRECORD: u8 = 0xD0;
pub const XLOG_CHECKPOINT_REDO: u8 = 0xE0;

// Xact.
pub const XLOG_XACT_OPMASK: u8 = 0x70;
pub const XLOG_XACT_COMMIT: u8 = 0x00;
pub const XLOG_XACT_ABORT: u8 = 0x20;
pub const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
pub const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;
pub const XLOG_XACT_HAS_INFO: u8 = 0x80;
pub const XACT_XINFO_HAS_DBINFO: u32 = 1 << 0;
pub const XACT_XINFO_HAS_SUBXACTS: u32 = 1 << 1;
pub const XACT_XINFO_HAS_RELFILELOCATORS: u32 = 1 << 2;

// Storage.
pub const XLOG_SMGR_CREATE: u8 = 0x10;
pub const XLOG_SMGR_TRUNCATE: u8 = 0x20;
pub const SMGR_TRUNCATE_HEAP: u32 = 1;
pub const SMGR_TRUNCATE_VM: u32 = 2;
pub const SMGR_TRUNCATE_FSM: u32 = 0x0004;

// Database (PG15+ codes; PG13/14 use CREATE 0x00 and DROP 0x10).
pub const XLOG_DBASE_CREATE_FILE_COPY: u8 = 0x00;
pub const XLOG_DBASE_CREATE_WAL_LOG: u8 = 0x10;
pub const XLOG_DBASE_DROP: u8 = 0x20;
pub const XLOG_DBASE_DROP_PG13: u8 = 0x10;

// Heap and Heap2 (masked with XLOG_HEAP_OPMASK).
pub const XLOG_HEAP_OPMASK: u8 = 0x70;
pub const XLOG_HEAP_INSERT: u8 = 0x00;
pub const XLOG_HEAP_DELETE: u8 = 0x10;
pub const XLOG_HEAP_UPDATE: u8 = 0x20;
pub const XLOG_HEAP_HOT_UPDATE: u8 = 0x40;
pub const XLOG_HEAP_LOCK: u8 = 0x60;
pub const XLOG_HEAP2_MULTI_INSERT: u8 = 0x50;
pub const XLOG_HEAP2_LOCK_UPDATED: u8 = 0x60;

/// Heap blocks covered by one visibility map page at 8 KiB pages:
/// `(BLCKSZ - MAXALIGN(SizeOfPageHeaderData)) * 4` (`visibilitymap.c`).
pub fn heapblocks_per_vm_page(blcksz: u32) -> u32 {
    (blcksz - 24) * 4
}
