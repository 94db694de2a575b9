//! The `rq-retryd` binary: parse flags and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    rq_retryd::commands::main(rq_retryd::cli::Cli::parse())
}
