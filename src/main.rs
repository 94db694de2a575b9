//! The `rq-retryd` binary: parse flags and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc malloc: a scan allocates and frees many small values per job
/// (reply buffers, decoded fields), and glibc's free/consolidate was about a fifth of the
/// client's CPU in the bulk-requeue profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    rq_retryd::commands::main(rq_retryd::cli::Cli::parse())
}
