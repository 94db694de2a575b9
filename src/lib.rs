//! rq-retryd: an automatic retry supervisor for RQ's failed job registries.
//!
//! Pure core, thin shell: [`rq`] decodes what RQ stored, [`policy`] decides, [`executor`] is the
//! only writer (atomic Lua scripts), [`supervisor`] runs the scan loop, [`commands`] are the CLI.

pub mod actions;
pub mod audit;
pub mod breaker;
pub mod cli;
pub mod commands;
pub mod config;
pub mod connection;
pub mod daemon;
pub mod executor;
pub mod explain;
pub mod glob;
pub mod hold;
pub mod http;
pub mod index;
pub mod jobkey;
pub mod jobmap;
pub mod limiter;
pub mod memory;
pub mod metrics;
pub mod policy;
pub mod reload;
pub mod report;
pub mod rq;
pub mod shutdown;
pub mod simulate;
pub mod skip;
pub mod state;
pub mod supervisor;
pub mod switchboard;
pub mod systemd;
pub mod telemetry;
