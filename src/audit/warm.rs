//! The audit mirror read in the background when the daemon starts. Without it the first
//! history or audit request after a start read the whole stream itself (0.3–2 s for a full
//! 10,000-entry stream); with it that request reads only what was appended since.

use std::sync::Arc;
use std::time::Instant;

use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::mirror::AuditMirror;

/// Mirrors stream `key` once, unless `cancel` fires first (then what was read so far stays
/// mirrored: the next request reads on from there). A failure is only logged: the requests
/// read the stream themselves, as without the warm-up.
pub async fn warm(
    mirror: Arc<AuditMirror>,
    mut con: ConnectionManager,
    key: String,
    cancel: CancellationToken,
) {
    let started = Instant::now();
    tokio::select! {
        _ = cancel.cancelled() => {}
        read = mirror.warm(&mut con, &key) => match read {
            Ok(entries) => info!(
                entries,
                ms = started.elapsed().as_millis() as u64,
                "audit mirror warmed"
            ),
            Err(e) => warn!(error = %e, "cannot read the audit stream ahead; the first audit or history request reads it"),
        },
    }
}
