//! Data-sync errors. Which are worth a retry is decided in [`super::retry`].

use thiserror::Error;

use crate::config::ConfigError;
use crate::net::ConnectionError;
use crate::sharding::ShardingError;

#[derive(Debug, Error)]
pub enum DataSyncError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// Checks before anything is created failed: every problem found, each
    /// with what to do about it.
    #[error("{}", render_problems(problems))]
    Preflight { problems: Vec<Problem> },
    #[error("copying {table} from source shard {source_shard}: {error}")]
    Copy {
        table: String,
        source_shard: usize,
        #[source]
        error: Box<DataSyncError>,
    },
    /// Applying a change failed on a destination.
    #[error("applying a change to {table} at source LSN {lsn} (source shard {source_shard}, destination shard {dest_shard}): {error}")]
    Apply {
        table: String,
        lsn: String,
        source_shard: usize,
        dest_shard: usize,
        #[source]
        error: Box<DataSyncError>,
    },
    #[error(transparent)]
    Sharding(#[from] ShardingError),
    #[error("protocol: {0}")]
    Protocol(#[from] pgdog_protocol::ProtocolError),
    /// pgdog's own state on a destination does not fit what it finds.
    #[error("state: {0}")]
    State(String),
    /// The replication stream broke an invariant (a change without a
    /// Relation message first, a commit without a begin).
    #[error("replication stream from source shard {source_shard}: {message}")]
    Stream {
        source_shard: usize,
        message: String,
    },
    #[error("spool file {path}: {source}")]
    Spool {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Schema sync could not read or create the schema.
    #[error("schema sync: {0}")]
    Schema(String),
    /// The source sent rows of a new shape (a column added while the move
    /// streams): nothing of them is applied until every destination shard
    /// has the columns, and the move plans again.
    #[error("{table} has new columns on source shard {source_shard}: {}", columns.iter().map(|(c, t)| format!("{c} {t}")).collect::<Vec<_>>().join(", "))]
    NewColumns {
        /// `schema.table`, quoted for SQL.
        table: String,
        source_shard: usize,
        /// (name, type) of each, as the source names them.
        columns: Vec<(String, String)>,
    },
    /// A change waited too long for a chunk being written (the chunk may
    /// wait for a row the stream's open transaction holds).
    #[error("a change of {table} from source shard {source_shard} waited {seconds} s for a chunk of its copy being written")]
    HeldByChunk {
        table: String,
        source_shard: usize,
        seconds: u64,
    },
    /// A schema change on the source reached the destination shards (a
    /// captured DDL statement was applied there, or a chunk found its
    /// table's columns changed and the shards now match): the move plans
    /// again and goes on.
    #[error("the schema changed on source shard {source_shard}: {what}")]
    SchemaChanged { source_shard: usize, what: String },
    /// A chunk's snapshot shows its table with other columns than the
    /// plan: the chunk is not copied, and the worker waits for the
    /// change to reach the destination shards.
    #[error(
        "{table} has other columns on source shard {source_shard} than when the move was planned"
    )]
    ShapeChanged {
        table: String,
        source_shard: usize,
        /// The source's columns that are new or of another type.
        columns: Vec<(String, String)>,
    },
    /// Stopped by Ctrl-C, SIGTERM or STOP_TASK: not a failure.
    #[error("stopped")]
    Stopped,
}

impl DataSyncError {
    /// The metric label of this error.
    pub fn kind(&self) -> &'static str {
        match self {
            DataSyncError::Config(_) => "config",
            DataSyncError::Connection(_) => "connection",
            DataSyncError::Preflight { .. } => "preflight",
            DataSyncError::Copy { .. } => "copy",
            DataSyncError::Apply { .. } => "apply",
            DataSyncError::Sharding(_) => "sharding",
            DataSyncError::Protocol(_) => "protocol",
            DataSyncError::State(_) => "state",
            DataSyncError::Stream { .. } => "stream",
            DataSyncError::Spool { .. } => "spool",
            DataSyncError::Schema(_) => "schema",
            DataSyncError::NewColumns { .. } => "new columns",
            DataSyncError::HeldByChunk { .. } => "held by chunk",
            DataSyncError::SchemaChanged { .. } => "schema changed",
            DataSyncError::ShapeChanged { .. } => "shape changed",
            DataSyncError::Stopped => "stopped",
        }
    }

    pub fn preflight(problem: impl Into<String>, fix: impl Into<String>) -> DataSyncError {
        DataSyncError::Preflight {
            problems: vec![Problem {
                problem: problem.into(),
                fix: fix.into(),
            }],
        }
    }
}

/// One thing a preflight check found wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub problem: String,
    pub fix: String,
}

fn render_problems(problems: &[Problem]) -> String {
    match problems {
        [one] => format!("preflight: {}\n  fix: {}", one.problem, one.fix),
        many => {
            let mut out = format!("preflight found {} problems:", many.len());
            for (i, p) in many.iter().enumerate() {
                out.push_str(&format!("\n{}. {}\n   fix: {}", i + 1, p.problem, p.fix));
            }
            out
        }
    }
}

pub type Result<T, E = DataSyncError> = std::result::Result<T, E>;
