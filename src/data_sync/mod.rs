//! `pgdog data-sync`: move every table of a publication from a source
//! cluster to a destination cluster while the source keeps taking writes.
//!
//! The flow: [`preflight`] checks everything before anything is created;
//! a permanent logical slot is created on every source shard (it marks
//! where streaming starts); [`copy`] copies each table in a snapshot whose
//! LSN is known, resharding rows in flight; [`stream`] then applies the
//! changes from the slot, skipping what each copy already holds, until
//! stopped. Progress lives on the destinations ([`state`]), so rerunning
//! the same command resumes.

pub mod analyze;
pub mod barrier;
pub mod catalog;
pub mod chunks;
pub mod copy;
pub mod ctx;
pub mod cutover;
pub mod ddl;
pub mod endpoints;
pub mod engine;
pub mod error;
pub mod lifecycle;
pub mod on_move;
pub mod options;
pub mod plan;
pub mod preflight;
pub mod progress;
pub mod replicas;
pub mod retry;
pub mod schema;
pub mod sequences;
pub mod snapshot;
pub mod state;
pub mod stream;
pub mod verify;
pub mod watch;

pub use ctx::{default_parallel, Ctx};
pub use endpoints::Endpoints;
pub use engine::{cleanup, run};
pub use error::{DataSyncError, Result};
pub use options::{default_slot_name, Mode, Options, Outcome};
pub use plan::Plan;
pub use progress::{Phase, Registry, Task};
