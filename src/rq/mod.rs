//! RQ's Redis layout: key names, decoding a job into [`JobFacts`] (pure), and the read-only
//! registry queries. Nothing in this module writes to Redis: the executor, one layer up, does.

pub mod exception;
pub mod failure;
pub mod job;
pub mod keys;
pub mod meta;
pub mod payload;
pub mod pickle;
pub mod registry;
pub mod runs;

pub use failure::Failure;
pub use job::{decode, CasToken, CorruptReason, DecodeOutcome, JobFacts, RawJob, Reads};
pub use keys::Keys;
pub use meta::{Meta, MetaValue};
pub use registry::{FoundRegistries, Lookup, Registry, RegistryScan, StoredJob};
