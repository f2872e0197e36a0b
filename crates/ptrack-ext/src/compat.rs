//! The original C ptrack's entry-point names (`ptrack.c`: `PG_FUNCTION_INFO_V1(ptrack_version)`,
//! `ptrack_init_lsn`, `ptrack_get_pagemapset`). The catalog functions of an installation made
//! by the original call `'MODULE_PATHNAME', 'ptrack_version'` and so on: with these names exported
//! too, such an installation keeps working when this library replaces the original's (at 2.4
//! there is nothing to update), and `ALTER EXTENSION ptrack UPDATE` from 2.1–2.3 can run. Each
//! is a version-1 function handing the call to pgrx's wrapper of our function.

use pgrx::pg_sys;
use pgrx::prelude::*;

/// `PG_FUNCTION_INFO_V1`'s record.
static V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };

/// `pg_finfo_ptrack_version`: the original name is a version-1 function.
#[unsafe(no_mangle)]
pub extern "C" fn pg_finfo_ptrack_version() -> &'static pg_sys::Pg_finfo_record {
    &V1
}

/// `pg_finfo_ptrack_init_lsn`.
#[unsafe(no_mangle)]
pub extern "C" fn pg_finfo_ptrack_init_lsn() -> &'static pg_sys::Pg_finfo_record {
    &V1
}

/// `pg_finfo_ptrack_get_pagemapset`.
#[unsafe(no_mangle)]
pub extern "C" fn pg_finfo_ptrack_get_pagemapset() -> &'static pg_sys::Pg_finfo_record {
    &V1
}

/// The original's `ptrack_version`.
///
/// # Safety
/// Called by the server's function manager with a valid `fcinfo`.
#[unsafe(export_name = "ptrack_version")]
pub unsafe extern "C-unwind" fn original_ptrack_version(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: the call the server would make to the wrapper itself.
    unsafe { crate::api::ptrack_version_wrapper(fcinfo) }
}

/// The original's `ptrack_init_lsn`.
///
/// # Safety
/// Called by the server's function manager with a valid `fcinfo`.
#[unsafe(export_name = "ptrack_init_lsn")]
pub unsafe extern "C-unwind" fn original_ptrack_init_lsn(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: as above.
    unsafe { crate::api::ptrack_init_lsn_wrapper(fcinfo) }
}

/// Whether the calling function declares the three result columns of ptrack 2.2+ (ptrack 2.1's
/// `ptrack_get_pagemapset` returned two).
#[pg_guard]
unsafe extern "C-unwind" fn declares_pagecount(fcinfo: pg_sys::FunctionCallInfo) -> bool {
    let mut desc: pg_sys::TupleDesc = std::ptr::null_mut();
    // SAFETY: fcinfo is the server's; get_call_result_type fills desc for composite results.
    let class = unsafe { pg_sys::get_call_result_type(fcinfo, std::ptr::null_mut(), &mut desc) };
    // SAFETY: desc is valid when the class is composite.
    class == pg_sys::TypeFuncClass::TYPEFUNC_COMPOSITE
        && !desc.is_null()
        && unsafe { (*desc).natts } == 3
}

/// The original's `ptrack_get_pagemapset`; refused (not misread) under ptrack 2.1's two-column
/// declaration.
///
/// # Safety
/// Called by the server's function manager with a valid `fcinfo`.
#[unsafe(export_name = "ptrack_get_pagemapset")]
pub unsafe extern "C-unwind" fn original_ptrack_get_pagemapset(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: as above.
    if !unsafe { declares_pagecount(fcinfo) } {
        refuse_2_1();
    }
    // SAFETY: as above.
    unsafe { crate::api::ptrack_get_pagemapset_wrapper(fcinfo) }
}

#[pg_guard]
extern "C-unwind" fn refuse_2_1() {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        "ptrack_get_pagemapset of ptrack 2.1 is not provided by this library: run ALTER EXTENSION ptrack UPDATE",
        "Run ALTER EXTENSION ptrack UPDATE (2.2 added the pagecount column)."
    );
}
