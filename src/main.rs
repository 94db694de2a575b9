//! The `rq-retryd` binary: parse flags and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    return_large_buffers();
    rq_retryd::commands::main(rq_retryd::cli::Cli::parse())
}

/// Buffers of 128 KiB and more are mapped on their own and given back to the system when
/// freed. glibc raises that threshold to the size of each such buffer freed (up to 32 MiB),
/// after which the buffers come from its arenas and their memory stays with the process: the
/// failure index's answers at five million jobs (a deep page's notes, a search's matches, the
/// per-core parts' tallies) then left about 90 MiB more resident after a round of reads
/// (1,046 against 958 MiB; docs/benchmarks.md, session 24), with no change to the first build's
/// time. An operator's own `MALLOC_MMAP_THRESHOLD_` or `GLIBC_TUNABLES` is left as it is.
fn return_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set_by_operator = std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
            || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("mmap_threshold"));
        if !set_by_operator {
            // SAFETY: mallopt only sets an allocator parameter; called once, before the
            // program has started any thread.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
            }
        }
    }
}
