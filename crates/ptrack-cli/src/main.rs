//! The `ptrack` binary: parses arguments and hands over to [`ptrack_cli::run`].

use std::process::ExitCode;

fn main() -> ExitCode {
    ptrack_cli::main_with_args(std::env::args_os())
}
