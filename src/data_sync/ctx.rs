//! What every task of one run shares: the endpoints, the plan, the
//! task's progress and stop token, and the copy's settings. A leaf of the
//! engine: the copy, the stream, verify and the cutover all take it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::chunks::book::TableBook;
use super::endpoints::Endpoints;
use super::plan::Plan;
use super::progress::Task;
use super::replicas;

/// Shared by every task of one run.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub endpoints: Endpoints,
    pub plan: Plan,
    pub task: Arc<Task>,
    pub shutdown: CancellationToken,
    /// Parallel copy streams per source shard.
    pub parallel: usize,
    /// Split tables into ranges of about this many bytes (0: never split).
    pub chunk_bytes: u64,
    /// Seconds a chunk of a chunked copy aims to take.
    pub chunk_seconds: f64,
    /// An earlier run left state: partial copies must be removed first.
    pub resume: bool,
    /// Where table copies read, per source shard.
    pub copy_sources: Vec<replicas::CopySources>,
    /// Where each source shard's permanent slot starts: a replica must have
    /// replayed this far before it serves a copy.
    pub stream_start: Vec<pgdog_protocol::Lsn>,
    /// Stream even a move that `pgdog cutover` marked as ended: the
    /// cutover's own drain of what is left in the slot.
    pub drain_ended: bool,
    /// Tables copied in key-range chunks, whose changes the stream decides
    /// by what each destination shard holds of them.
    pub chunks: Arc<Vec<Arc<TableBook>>>,
}

/// Default parallel copies per server read: twice the cores here (a copy
/// stream waits on the network and the servers about half the time), at
/// least 2, at most 16.
pub fn default_parallel() -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    (cores * 2).clamp(2, 16)
}
