//! `rq-retryd generate man|completions SHELL`: the man page and the shell completion scripts,
//! rendered at run time from the clap definitions in [`crate::cli`], so what the Debian package
//! ships (scripts/package.sh runs the built binary) can never disagree with the flags.
//!
//! Needs no config and no runtime: it runs before either is loaded, so a build machine with a
//! broken `/etc/rq-retryd/config.toml` still builds the package.

use std::io::{self, Write};

use clap::{Arg, Command as ClapCommand, CommandFactory};
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Inline, Roff};
use clap_mangen::Man;

use super::{EXIT_CONFIG, EXIT_REFUSED, EXIT_RUNTIME};
use crate::cli::{Cli, Generated};
use crate::config::SYSTEM_CONFIG;

/// Writes what was asked for to stdout; 1 when stdout cannot take it (e.g. a closed pipe).
pub fn generate(what: &Generated) -> u8 {
    let text = match what {
        Generated::Man => man_page(),
        Generated::Completions { shell } => completions(*shell),
    };
    let mut stdout = io::stdout().lock();
    match stdout.write_all(&text).and_then(|()| stdout.flush()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rq-retryd: cannot write to stdout: {e}");
            EXIT_RUNTIME
        }
    }
}

/// The completion script for `shell`, completing the binary named `rq-retryd`.
pub fn completions(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(
        shell,
        &mut <Cli as CommandFactory>::command(),
        "rq-retryd",
        &mut out,
    );
    out
}

/// The rq-retryd(1) page: clap_mangen's NAME, SYNOPSIS, DESCRIPTION and global OPTIONS, then
/// one COMMANDS section with every command's synopsis and flags (one page for the whole tool,
/// rather than a page per subcommand), then the facts a daemon's page owes its operator: exit
/// status, environment, files, signals.
pub fn man_page() -> Vec<u8> {
    let mut cli = <Cli as CommandFactory>::command().disable_help_subcommand(true);
    cli.build();
    let man = Man::new(cli.clone()).manual("rq-retryd manual");
    let mut out = Vec::new();
    render_page(&man, &cli, &mut out).expect("writing to a Vec cannot fail");
    out
}

/// The sections of [`man_page`], in order.
fn render_page(man: &Man, cli: &ClapCommand, out: &mut Vec<u8>) -> io::Result<()> {
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    let mut roff = Roff::default();
    description_section(&mut roff);
    roff.to_writer(out)?;
    man.render_options_section(out)?;
    let mut roff = Roff::default();
    commands_section(&mut roff, cli);
    reference_sections(&mut roff);
    roff.to_writer(out)?;
    man.render_version_section(out)
}

/// `.SH DESCRIPTION`: what the daemon does, in the words of the README's opening (the CLI's own
/// about text is one line, already in NAME).
fn description_section(roff: &mut Roff) {
    roff.control("SH", ["DESCRIPTION"]);
    roff.text([roman(
        "rq-retryd supervises the failed job registries of Python RQ (Redis Queue). Each failed \
         job is decided by the first policy in the config file that matches its queue, function, \
         exception type or error text: retried with backoff up to max_attempts, purged after a \
         while, or left alone. Every write is one atomic Lua script that checks the job is still \
         failed and unchanged, so several instances never requeue a job twice.",
    )]);
    roff.control("PP", []);
    roff.text([roman(
        "The daemon (run) serves an HTTP API, /metrics for Prometheus and /healthz, /readyz on \
         http.listen (127.0.0.1:9732 by default); under systemd it reports readiness and pings \
         the watchdog. once, check-config and explain are for operators and scripts.",
    )]);
}

/// `.SH COMMANDS`: each runnable command (`generate man`, not `generate`) with its synopsis,
/// its about text and its own flags; the global `--config` is listed once under OPTIONS.
fn commands_section(roff: &mut Roff, cli: &ClapCommand) {
    roff.control("SH", ["COMMANDS"]);
    roff.text([roman(
        "With no command, rq-retryd runs the daemon (as \"run\" does).",
    )]);
    let mut leaves = Vec::new();
    collect_leaves(cli, &mut vec![cli.get_name().to_string()], &mut leaves);
    for (path, cmd) in leaves {
        let args: Vec<&Arg> = cmd
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_global_set() && a.get_id() != "help")
            .collect();
        roff.control("TP", []);
        let mut synopsis = vec![bold(path.join(" "))];
        for arg in args.iter().filter(|a| a.is_positional()) {
            synopsis.push(roman(" "));
            synopsis.extend(usage(arg));
        }
        for arg in args.iter().filter(|a| !a.is_positional()) {
            synopsis.push(roman(" ["));
            synopsis.extend(usage(arg));
            synopsis.push(roman("]"));
        }
        roff.text(synopsis);
        if let Some(about) = cmd.get_long_about().or_else(|| cmd.get_about()) {
            roff.text([roman(about.to_string())]);
        }
        if args.is_empty() {
            continue;
        }
        roff.control("RS", []);
        for arg in args {
            roff.control("TP", []);
            roff.text(usage(arg));
            let mut help = arg
                .get_long_help()
                .or_else(|| arg.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            let values: Vec<String> = arg
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| v.get_name().to_string())
                .collect();
            if !values.is_empty() {
                help = format!(
                    "{}; one of: {}.",
                    help.trim_end_matches('.'),
                    values.join(", ")
                );
            }
            roff.text([roman(help)]);
        }
        roff.control("RE", []);
    }
}

/// The commands that do something, with the words that invoke them, in definition order.
fn collect_leaves<'a>(
    cmd: &'a ClapCommand,
    path: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, &'a ClapCommand)>,
) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        path.push(sub.get_name().to_string());
        if sub.has_subcommands() {
            collect_leaves(sub, path, out);
        } else {
            out.push((path.clone(), sub));
        }
        path.pop();
    }
}

/// How an argument is written: `--json`, `--config FILE`, `JOB_ID`.
fn usage(arg: &Arg) -> Vec<Inline> {
    let value = arg
        .get_value_names()
        .and_then(|names| names.first())
        .map(|name| name.to_string())
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
    if arg.is_positional() {
        return vec![italic(value)];
    }
    let mut parts = Vec::new();
    if let Some(short) = arg.get_short() {
        parts.push(bold(format!("-{short}")));
        parts.push(roman(", "));
    }
    if let Some(long) = arg.get_long() {
        parts.push(bold(format!("--{long}")));
    }
    if arg.get_action().takes_values() {
        parts.push(roman(" "));
        parts.push(italic(value));
    }
    parts
}

/// EXIT STATUS, ENVIRONMENT, FILES, SIGNALS and SEE ALSO: what docs/interface.md fixes, with
/// the exit codes and the system config path taken from the code that uses them.
fn reference_sections(roff: &mut Roff) {
    exit_status_section(roff);
    environment_section(roff);
    files_section(roff);
    signals_section(roff);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "systemctl(1), systemd.service(5); rq-retryd.service and rq-retryd@.service.",
    )]);
}

/// A section of terms, each in bold with its text below.
fn definitions(roff: &mut Roff, title: &str, items: &[(&str, &str)]) {
    roff.control("SH", [title]);
    for (term, text) in items {
        roff.control("TP", []);
        roff.text([bold(*term)]);
        roff.text([roman(*text)]);
    }
}

fn exit_status_section(roff: &mut Roff) {
    definitions(
        roff,
        "EXIT STATUS",
        &[
            ("0", "Success."),
            (
                &EXIT_RUNTIME.to_string(),
                "Runtime failure, e.g. Redis unreachable (or older than 6.2) for once or explain.",
            ),
            (
                &EXIT_CONFIG.to_string(),
                "Invalid configuration or usage, reported as FILE:LINE:COL before anything \
                 starts.",
            ),
            (
                &EXIT_REFUSED.to_string(),
                "once: the pass completed but Redis refused some writes (a key of the wrong \
                 type, say); those jobs were left exactly as they were, and the summary still \
                 prints.",
            ),
        ],
    );
}

fn environment_section(roff: &mut Roff) {
    let config = format!(
        "Config file when --config is not given; without either, {SYSTEM_CONFIG} \
         is read when it exists, else the embedded defaults."
    );
    definitions(
        roff,
        "ENVIRONMENT",
        &[
            ("RQ_RETRYD_CONFIG", &config),
            (
                "RQ_RETRYD_REDIS_URL",
                "Overrides redis.url (keeps a password out of the file).",
            ),
            ("RQ_RETRYD_HTTP_LISTEN", "Overrides http.listen."),
            ("RQ_RETRYD_AUTH_TOKEN", "Overrides the HTTP API token."),
            ("RUST_LOG", "A tracing filter that overrides logging.level."),
        ],
    );
}

fn files_section(roff: &mut Roff) {
    definitions(
        roff,
        "FILES",
        &[
            (
                SYSTEM_CONFIG,
                "The configuration (mode 0640; the Debian package installs it as a conffile).",
            ),
            (
                "/etc/rq-retryd/INSTANCE.toml",
                "The configuration of rq-retryd@INSTANCE.service, the template unit for one \
                 rq-retryd per RQ deployment; each needs its own http.listen port.",
            ),
            (
                "/usr/share/doc/rq-retryd/",
                "README.md (configuration reference, HTTP API, metrics) and examples/.",
            ),
        ],
    );
}

fn signals_section(roff: &mut Roff) {
    definitions(
        roff,
        "SIGNALS",
        &[
            (
                "SIGHUP",
                "Reload the config file; an invalid one is logged and the running \
                 configuration stays.",
            ),
            (
                "SIGTERM, SIGINT",
                "Finish the batch in flight, drain HTTP requests, exit 0.",
            ),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> String {
        String::from_utf8(man_page()).unwrap()
    }

    #[test]
    fn the_man_page_names_every_command_and_flag_of_the_cli() {
        let page = page();
        // roff escapes '-' as '\-'.
        let has = |word: &str| page.contains(&word.replace('-', "\\-"));
        for word in [
            "rq-retryd once",
            "rq-retryd check-config",
            "rq-retryd explain",
            "rq-retryd run",
            "rq-retryd generate man",
            "rq-retryd generate completions",
            "--dry-run",
            "--json",
            "--config",
            "JOB_ID",
            "SHELL",
            "bash, elvish, fish, powershell, zsh",
            "RQ_RETRYD_REDIS_URL",
            "/etc/rq-retryd/config.toml",
        ] {
            assert!(has(word), "the man page lacks {word}:\n{page}");
        }
        assert!(page.contains("\n.TH rq-retryd 1 "), "{page}");
        assert!(page.contains(env!("RQ_RETRYD_GIT_COMMIT")), "{page}");
    }

    #[test]
    fn every_subcommand_reaches_the_man_page() {
        // A command added to cli.rs without reaching the page would fail here.
        let page = page();
        let cli = <Cli as CommandFactory>::command();
        let mut leaves = Vec::new();
        collect_leaves(&cli, &mut vec!["rq-retryd".into()], &mut leaves);
        assert_eq!(leaves.len(), 6, "{leaves:?}");
        for (path, _) in leaves {
            let name = path.join(" ").replace('-', "\\-");
            assert!(page.contains(&format!("\\fB{name}\\fR")), "{name}");
        }
    }

    #[test]
    fn completions_complete_the_subcommands_for_each_packaged_shell() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = String::from_utf8(completions(shell)).unwrap();
            for word in ["check-config", "explain", "generate", "dry-run"] {
                assert!(script.contains(word), "{shell}: no {word}");
            }
        }
    }
}
