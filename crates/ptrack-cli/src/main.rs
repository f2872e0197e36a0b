//! The `ptrack` binary: parses arguments and hands over to [`ptrack_cli::main_with_args`].

use std::process::ExitCode;

fn main() -> ExitCode {
    // Like C tools, end quietly when the reader of our output goes away (`ptrack show | head`)
    // instead of failing a print.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    ptrack_cli::main_with_args(std::env::args_os())
}
