//! Which user ptrack acts as. PostgreSQL refuses to run as root and a data directory belongs to
//! its cluster's owner, so a repository command started as root never works as root: it
//! becomes the owner of the data directory (`backup`) or of the repository (`restore`,
//! `validate`, `show`; for `init`, the owner of the directory the repository is created in),
//! before it opens anything, so that every file it creates belongs to that user and a restored
//! data directory can be started. When that owner is root itself it refuses, naming the user to
//! run as. `HOME` and `USER` follow the new user (its `~/.pgpass`, its default role name).

use std::ffi::CStr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::{Error, Refusal, Result};

/// The user ptrack now runs as, when it switched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switched {
    /// User name.
    pub user: String,
    /// Its uid.
    pub uid: u32,
}

struct Passwd {
    name: String,
    home: String,
    gid: u32,
}

fn passwd(uid: u32) -> Option<Passwd> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid out-parameter for getpwuid_r.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: buffers are ours and sized as passed; the result points into them.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r filled NUL-terminated strings inside `buf`.
    let (name, home) = unsafe {
        (
            CStr::from_ptr(pw.pw_name).to_string_lossy().into_owned(),
            CStr::from_ptr(pw.pw_dir).to_string_lossy().into_owned(),
        )
    };
    Some(Passwd {
        name,
        home,
        gid: pw.pw_gid,
    })
}

/// When running as root, becomes the owner of `path` (`what` names it in messages); otherwise
/// does nothing. Must be called while the process has one thread (it sets `HOME` and `USER`).
pub fn act_as_owner_of(path: &Path, what: &'static str) -> Result<Option<Switched>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let md = std::fs::metadata(path).map_err(|e| Error::io(path, "stat", e))?;
    if !md.is_dir() {
        // Not a directory: the command itself says what is wrong with it.
        return Ok(None);
    }
    if md.uid() == 0 {
        return Err(Refusal::RootOwned {
            what,
            path: path.display().to_string(),
        }
        .into());
    }
    let pw = passwd(md.uid()).ok_or_else(|| {
        Error::from(Refusal::NoUser {
            what,
            path: path.display().to_string(),
            uid: md.uid(),
        })
    })?;
    let c_name =
        std::ffi::CString::new(pw.name.clone()).map_err(|_| Error::from(Refusal::NulInUserName))?;
    // SAFETY: plain system calls on our own process; checked in order, groups before ids.
    let ok = unsafe {
        libc::initgroups(c_name.as_ptr(), pw.gid) == 0
            && libc::setresgid(pw.gid, pw.gid, pw.gid) == 0
            && libc::setresuid(md.uid(), md.uid(), md.uid()) == 0
    };
    if !ok {
        return Err(Refusal::SwitchUser {
            user: pw.name.clone(),
            what,
            path: path.display().to_string(),
            cause: std::io::Error::last_os_error().to_string(),
        }
        .into());
    }
    // SAFETY: called before any thread is started (documented precondition).
    unsafe {
        std::env::set_var("HOME", &pw.home);
        std::env::set_var("USER", &pw.name);
    }
    Ok(Some(Switched {
        user: pw.name,
        uid: md.uid(),
    }))
}
