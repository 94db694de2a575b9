//! The integration tests of rq-retryd, as one test program.
//!
//! Each module was once a test program of its own (tests/NAME.rs); as one program the library
//! and `support` are compiled and linked once instead of once per module. Run a subset by
//! module path, e.g. `cargo test --test it http_bulk::` or
//! `cargo test --test it interop_rq::rq2::`.
//!
//! All modules' tests run as threads of this one process, so nothing here may change
//! process-wide state (environment, current directory, signal dispositions, a global tracing
//! subscriber): children get their environment through `Command::env`, and every test keeps
//! its files in a tempdir of its own.

mod support;

mod acl;
mod api_fuzz;
mod audit;
mod browser;
mod browser_audit;
mod browser_job;
mod browser_presets;
mod browser_replay;
mod browser_search;
mod browser_simulate;
mod browser_trend;
mod circuit_breaker;
mod cli;
mod deploy;
mod dry_run;
mod executor;
mod first_paint;
mod history;
mod http_any_input;
mod http_api;
mod http_auth;
mod http_bulk;
mod http_cross_site;
mod http_hostile;
mod http_inprocess;
mod http_jobs;
mod http_refused_writes;
mod http_session;
mod index_api;
mod interop_rq;
mod metrics_promtool;
mod package;
mod rate_limit;
mod refused_writes;
mod reliability_concurrency;
mod reliability_crash;
mod reliability_redis_faults;
mod replay;
mod search;
mod sentinel;
mod simulate;
mod small_holes;
mod steady_state;
mod storm;
mod switchboard;
mod tls;
mod trend;
