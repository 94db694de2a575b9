//! The command line, defined in one place with the docs next to each flag.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use clap_complete::Shell;

/// `--version`: the crate version and the git commit it was built from (build.rs; "unknown"
/// when built outside a git checkout, e.g. from a source tarball), so a bug report names the
/// exact build.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RQ_RETRYD_GIT_COMMIT"),
    ")"
);

/// Automatic retry supervisor for RQ (Redis Queue) failed job registries.
#[derive(Debug, Parser)]
#[command(name = "rq-retryd", version = VERSION, about, long_about = None)]
pub struct Cli {
    /// Config file (default: $RQ_RETRYD_CONFIG, else /etc/rq-retryd/config.toml when it exists,
    /// else the embedded defaults).
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the supervisor daemon (the default).
    Run,
    /// One full scan pass: act on what is due, print a summary, exit.
    Once {
        /// Decide and report, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the summary as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Validate the config and print the effective configuration and policy table.
    CheckConfig {
        /// Instead, what the policies of FILE (a policy file, or a whole config of which only
        /// the policies count) would do with every failed job in Redis (the config's
        /// `[redis]`), by group, against the config's own policies. Reads; writes nothing.
        #[arg(long, value_name = "FILE")]
        simulate: Option<PathBuf>,
        /// With --simulate: print the answer as one JSON object (the API's shape).
        #[arg(long, requires = "simulate")]
        json: bool,
    },
    /// Which policy matches this failed job, why, its attempts and next retry time.
    Explain {
        /// The RQ job id.
        job_id: String,
        /// Print the explanation as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the man page or a shell completion script, generated from these definitions.
    Generate {
        #[command(subcommand)]
        what: Generated,
    },
}

/// What `rq-retryd generate` writes to stdout. Generated from [`Cli`] at run time so the man
/// page and the completions the package ships can never disagree with the flags.
#[derive(Debug, Subcommand)]
pub enum Generated {
    /// The rq-retryd(1) man page (roff), e.g. for /usr/share/man/man1/rq-retryd.1.
    Man,
    /// The completion script for SHELL (bash, zsh, fish, elvish or powershell).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: Shell,
    },
}

impl Cli {
    /// The command to run; `run` when none is given.
    pub fn command(&self) -> &Command {
        self.command.as_ref().unwrap_or(&Command::Run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// See issue 14: `--version` names the commit, the one `git` reports for this checkout.
    #[test]
    fn the_version_names_the_crate_version_and_the_git_commit_it_was_built_from() {
        let head = std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8(out.stdout).unwrap().trim().to_string());
        let expected = std::env::var("RQ_RETRYD_GIT_COMMIT")
            .ok()
            .filter(|given| !given.trim().is_empty())
            .or(head)
            .unwrap_or_else(|| "unknown".into());
        assert_eq!(
            VERSION,
            format!("{} (commit {expected})", env!("CARGO_PKG_VERSION"))
        );
        let help = Cli::try_parse_from(["rq-retryd", "--version"]).unwrap_err();
        assert!(help.to_string().contains(VERSION), "{help}");
    }
}
