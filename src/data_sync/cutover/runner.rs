//! One runner for a cutover command, whoever starts it (the CLI's
//! `pgdog cutover` or the admin console's `CUTOVER`): it owns the
//! command's task, its stop token and its reporter, and once switched the
//! task that streams the destination back.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;

use super::super::endpoints::Endpoints;
use super::super::error::Result;
use super::super::on_move::{self, OnMove};
use super::super::options::{Options, Outcome};
use super::super::progress::{Registry, Task};
use super::command::run;
use super::request::{Done, Request};
use super::reverse;

/// Shows one task's progress until its token is cancelled.
pub type Reporter = fn(Arc<Task>, CancellationToken) -> JoinHandle<()>;

/// Where a runner's summaries go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Voice {
    /// Standard error: a command run by hand.
    Terminal,
    /// The log: a console command runs in the background.
    Log,
}

#[derive(Debug)]
pub struct Runner {
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    /// The CLI's progress display; none on the console (SHOW TASKS).
    pub reporter: Option<Reporter>,
    pub voice: Voice,
}

/// How a command ended, when it did not fail.
#[derive(Debug)]
pub enum Ended {
    /// Switched; the task `back` streamed the destination back until
    /// stopped or ended by a rollback or `--complete`, with this result.
    CutOver {
        back: Arc<Task>,
        streamed: Result<Outcome>,
    },
    RolledBack,
    Completed,
}

impl Runner {
    /// The task of a command on the move `opts` names, shown in SHOW TASKS.
    pub fn new_task(&self, opts: &Options) -> Arc<Task> {
        self.registry
            .new_task(&opts.from_database, &opts.to_database, &opts.publication)
    }

    fn say(&self, task: &Task, what: &str) {
        match self.voice {
            Voice::Terminal => eprintln!("{what}"),
            Voice::Log => info!(task = task.id, "{what}"),
        }
    }

    fn report(&self, task: &Arc<Task>, until: &CancellationToken) -> Option<JoinHandle<()>> {
        self.reporter
            .map(|spawn| spawn(task.clone(), until.clone()))
    }

    /// Run `request` on the move `opts` names as `task`, until it ends or
    /// `stop`; after a switch, stream back as a task of its own (which
    /// `stop` and its own STOP_TASK end).
    pub async fn run(
        &self,
        opts: &Options,
        request: &Request,
        task: Arc<Task>,
        stop: CancellationToken,
    ) -> Result<Ended> {
        let reporting = stop.child_token();
        let reporter = self.report(&task, &reporting);
        let result = on_move::whole(&task, async {
            run(&OnMove::open(&self.config, opts, &task, &stop)?, request).await
        })
        .await;
        reporting.cancel();
        if let Some(r) = reporter {
            let _ = r.await;
        }
        let (reverse, summary) = match result? {
            Done::CutOver { reverse, summary } => (reverse, summary),
            Done::RolledBack { summary } => {
                self.say(&task, &summary);
                return Ok(Ended::RolledBack);
            }
            Done::Completed { summary } => {
                self.say(&task, &summary);
                return Ok(Ended::Completed);
            }
        };
        self.say(&task, &summary);
        let back = self.new_task(&reverse);
        task.set_step(format!("cut over; task {} streams back", back.id));
        // The command's stop ends the stream back too; the link ends with
        // the stream either way.
        let streamed_back = CancellationToken::new();
        {
            let (stop, back_stop, ended) = (stop.clone(), back.stop.clone(), streamed_back.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => back_stop.cancel(),
                    _ = ended.cancelled() => {}
                }
            });
        }
        let reporting = back.stop.child_token();
        let reporter = self.report(&back, &reporting);
        self.say(
            &back,
            &format!(
                "streaming {} back to {} until stopped (Ctrl-C, or STOP_TASK {})...",
                reverse.from_database, reverse.to_database, back.id
            ),
        );
        let streamed = stream_back(
            self.config.clone(),
            opts,
            reverse,
            back.clone(),
            back.stop.clone(),
        )
        .await;
        streamed_back.cancel();
        reporting.cancel();
        if let Some(r) = reporter {
            let _ = r.await;
        }
        Ok(Ended::CutOver { back, streamed })
    }
}

/// Stream the destination's changes back after a cutover (`reverse`,
/// from [`Done::CutOver`]) until `shutdown` or until a rollback or
/// `--complete` ends the stream; meanwhile keep the forward slot from
/// holding WAL on the source for changes no stream will read.
pub async fn stream_back(
    config: Arc<Config>,
    forward: &Options,
    reverse: Options,
    task: Arc<Task>,
    shutdown: CancellationToken,
) -> Result<Outcome> {
    let endpoints = Endpoints::of_move(config.clone(), forward)?;
    let slot = forward.slot_name();
    let stop = shutdown.child_token();
    let advancer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
                if let Err(e) = reverse::advance_forward(&endpoints, &slot).await {
                    warn!("moving the forward slot on: {e}");
                }
            }
        })
    };
    let result = crate::data_sync::engine::run(config, reverse, task, shutdown).await;
    stop.cancel();
    let _ = advancer.await;
    result
}
