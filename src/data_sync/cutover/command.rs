//! A cutover command from start to end: the task shows each step and
//! ends done or failed.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;

use super::super::endpoints::Endpoints;
use super::super::error::Result;
use super::super::lifecycle::Action;
use super::super::options::Options;
use super::super::progress::{Phase, Task};
use super::cut::Cut;
use super::request::{Done, Request};
use super::{complete, forward, rollback};

/// Run `request.action` on the move `opts` names. `task` shows each step
/// and ends done or failed.
pub async fn run(
    config: Arc<Config>,
    opts: &Options,
    request: &Request,
    task: &Arc<Task>,
    shutdown: &CancellationToken,
) -> Result<Done> {
    task.set_slot(opts.slot_name());
    let result = async {
        task.set_phase(Phase::Preflight);
        let endpoints = Endpoints::of_move(config.clone(), opts)?;
        let cut = Cut {
            config: &config,
            opts,
            endpoints: &endpoints,
            task,
            shutdown,
            slot: opts.slot_name(),
        };
        match request.action {
            Action::Cutover => forward::cutover(&cut, request).await,
            Action::Rollback => rollback::rollback(&cut, request).await,
            Action::Complete => complete::complete(&cut).await,
        }
    }
    .await;
    task.end(result.as_ref().map(|_| false));
    result
}
