//! A cutover command from start to end: the task shows each step.

use super::super::error::Result;
use super::super::lifecycle::Action;
use super::cut::Cut;
use super::request::{Done, Request};
use super::{complete, forward, rollback};

/// Run `request.action` on the move `on` names. The caller ends the task
/// ([`on_move::whole`](super::super::on_move::whole)).
pub async fn run(on: &Cut<'_>, request: &Request) -> Result<Done> {
    match request.action {
        Action::Cutover => forward::cutover(on, request).await,
        Action::Rollback => rollback::rollback(on, request).await,
        Action::Complete => complete::complete(on).await,
    }
}
