//! What a cutover command is asked to do, and how it ended. A leaf: the
//! CLI and the console build a [`Request`], every step reads it.

use std::time::Duration;

use super::super::lifecycle::Action;
use super::super::options::Options;
use super::super::sequences;

/// Default `--max-lag`: 1 MB.
pub const DEFAULT_MAX_LAG: u64 = 1 << 20;
/// Default `--timeout` for the freeze and the drain.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `--reverse-publication`.
pub const DEFAULT_REVERSE_PUBLICATION: &str = "pgdog_reverse";

/// The cutover's settings beyond the move.
#[derive(Debug, Clone)]
pub struct Request {
    pub action: Action,
    /// The application's login roles: frozen on the source.
    pub freeze_roles: Vec<String>,
    pub max_lag: u64,
    /// For the freeze and the drain together.
    pub timeout: Duration,
    pub reverse_publication: String,
    pub skip_verify: bool,
    /// Above the highest sequence value handed out.
    pub margin: i64,
}

impl Default for Request {
    fn default() -> Request {
        Request {
            action: Action::Cutover,
            freeze_roles: Vec::new(),
            max_lag: DEFAULT_MAX_LAG,
            timeout: DEFAULT_TIMEOUT,
            reverse_publication: DEFAULT_REVERSE_PUBLICATION.to_string(),
            skip_verify: false,
            margin: sequences::DEFAULT_MARGIN,
        }
    }
}

/// How a cutover command ended.
#[derive(Debug, Clone)]
pub enum Done {
    /// Switched: the reverse move is to be streamed (`reverse`).
    CutOver {
        reverse: Options,
        /// What the application needs to know, for people.
        summary: String,
    },
    RolledBack {
        summary: String,
    },
    Completed {
        summary: String,
    },
}
