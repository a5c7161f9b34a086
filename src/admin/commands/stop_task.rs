//! `STOP_TASK <id>`: stop one task cleanly (its replication slot is kept,
//! so the same move can resume), and wait a moment to report how it ended.

use std::time::Duration;

use crate::data_sync::retry::Wait;

use super::{is_running, AdminCommand, Context, Usage};
use crate::admin::error::{sqlstate, CommandError};
use crate::admin::format::text;
use crate::admin::reply::Reply;

/// How long STOP_TASK waits for the task to reach its end before answering
/// `stopping`.
const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopTask {
    pub id: u64,
}

impl AdminCommand for StopTask {
    const USAGE: Usage = Usage {
        syntax: "STOP_TASK <id>",
        description: "stop a task cleanly; its replication slot is kept so the move can resume",
    };

    fn parse(args: &[String]) -> Result<Self, CommandError> {
        let hint = || {
            format!(
                "the syntax is: {}; SHOW TASKS lists the ids",
                Self::USAGE.syntax
            )
        };
        match args {
            [id] => id.parse().map(|id| StopTask { id }).map_err(|_| {
                CommandError::syntax(format!("\"{id}\" is not a task id")).hint(hint())
            }),
            [] => Err(CommandError::syntax("STOP_TASK needs a task id").hint(hint())),
            [_, extra, ..] => Err(CommandError::syntax(format!(
                "unexpected \"{extra}\" after the task id"
            ))
            .hint(hint())),
        }
    }

    async fn execute(&self, ctx: &Context) -> Result<Reply, CommandError> {
        let Some(task) = ctx.registry.get(self.id) else {
            let ids: Vec<String> = ctx
                .registry
                .tasks()
                .iter()
                .map(|t| t.id.to_string())
                .collect();
            return Err(
                CommandError::unknown(format!("no task with id {}", self.id)).hint(
                    if ids.is_empty() {
                        "there are no tasks; DATA_SYNC starts one".to_string()
                    } else {
                        format!("task ids: {}; SHOW TASKS lists them", ids.join(", "))
                    },
                ),
            );
        };
        let phase = task.phase();
        if !is_running(phase) {
            return Err(CommandError::new(
                sqlstate::NOT_IN_PREREQUISITE_STATE,
                format!("task {} is not running: it is {}", self.id, phase.as_str()),
            )
            .hint("SHOW TASKS shows how it ended"));
        }
        task.stop.cancel();
        let mut wait = Wait::new(
            format!("task {} to stop", self.id),
            Some(WAIT),
            Duration::from_millis(20),
        );
        while is_running(task.phase()) {
            // Past the deadline the reply says "stopping".
            if !matches!(wait.tick(task.phase().as_str(), None).await, Ok(true)) {
                break;
            }
        }
        let phase = task.phase();
        let mut reply = Reply::new("STOP_TASK", &["task_id", "phase", "slot"]);
        reply.push(vec![
            text(self.id),
            text(if is_running(phase) {
                "stopping"
            } else {
                phase.as_str()
            }),
            text(task.slot()),
        ]);
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::data_sync::{Phase, Registry};

    #[tokio::test]
    async fn stops_by_token_and_reports() {
        let registry = Arc::new(Registry::default());
        let task = registry.new_task("a", "b", "p");
        // A stand-in for data_sync::run: ends when its token is cancelled.
        let t = task.clone();
        tokio::spawn(async move {
            t.stop.cancelled().await;
            t.set_phase(Phase::Stopped);
        });
        let ctx = super::super::test_context(registry);
        let r = StopTask { id: 1 }.execute(&ctx).await.unwrap();
        assert_eq!(r.get(0, "phase"), Some("stopped"));

        let err = StopTask { id: 1 }.execute(&ctx).await.unwrap_err();
        assert_eq!(err.code, "55000");
        let err = StopTask { id: 9 }.execute(&ctx).await.unwrap_err();
        assert_eq!(err.code, "42704");
        assert!(err.message.contains('9'));
    }
}
