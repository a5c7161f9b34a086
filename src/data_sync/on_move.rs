//! A command on a move that DATA_SYNC set up (verify, cutover): the move,
//! where it connects, and the task that shows the command.

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;

use super::endpoints::Endpoints;
use super::error::Result;
use super::options::Options;
use super::progress::{Phase, Task};

/// What every step of a command on a move works with.
#[derive(Debug)]
pub struct OnMove<'a> {
    pub config: &'a Arc<Config>,
    pub opts: &'a Options,
    pub endpoints: Endpoints,
    pub task: &'a Arc<Task>,
    pub shutdown: &'a CancellationToken,
    /// The move's slot.
    pub slot: String,
}

impl<'a> OnMove<'a> {
    /// Resolves where the move connects. `task` shows the move's slot, in
    /// its preflight phase.
    pub fn open(
        config: &'a Arc<Config>,
        opts: &'a Options,
        task: &'a Arc<Task>,
        shutdown: &'a CancellationToken,
    ) -> Result<OnMove<'a>> {
        let slot = opts.slot_name();
        task.set_slot(slot.clone());
        task.set_phase(Phase::Preflight);
        let endpoints = Endpoints::of_move(config.clone(), opts)?;
        Ok(OnMove {
            config,
            opts,
            endpoints,
            task,
            shutdown,
            slot,
        })
    }
}

/// Runs `work` as the whole of `task`, which ends done or failed with it.
pub async fn whole<T>(task: &Task, work: impl Future<Output = Result<T>>) -> Result<T> {
    let result = work.await;
    task.end(result.as_ref().map(|_| false));
    result
}
