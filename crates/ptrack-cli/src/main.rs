//! The `ptrack` binary: parses arguments and hands over to [`ptrack_cli::main_with_args`].

use std::process::ExitCode;

fn main() -> ExitCode {
    // Like C tools, end quietly when the reader of our output goes away (`ptrack show | head`)
    // instead of failing a print.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    keep_freed_buffers();
    ptrack_cli::main_with_args(std::env::args_os())
}

/// glibc serves every allocation above 128 KiB with its own mmap and unmaps it when freed, so
/// each WAL segment (16 MiB read, compressed, hashed) or bundle part costs thousands of page
/// faults and zeroed pages again: a quarter of archive-push's CPU. Buffers up to 256 MiB are
/// kept in the heap instead, and the heap is not trimmed below 1 GiB of free space.
fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
