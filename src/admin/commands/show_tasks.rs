//! `SHOW TASKS`: every data-sync task of this process and where it stands.

use super::{no_args, AdminCommand, Context, Usage};
use crate::admin::error::CommandError;
use crate::admin::format::{interval, text, timestamp};
use crate::admin::reply::Reply;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShowTasks;

impl AdminCommand for ShowTasks {
    const USAGE: Usage = Usage {
        syntax: "SHOW TASKS",
        description: "data-sync tasks: clusters, publication, slot, phase, time, error",
    };

    fn parse(args: &[String]) -> Result<Self, CommandError> {
        no_args(Self::USAGE, args)?;
        Ok(ShowTasks)
    }

    async fn execute(&self, ctx: &Context) -> Result<Reply, CommandError> {
        let mut reply = Reply::new(
            "SHOW",
            &[
                "id",
                "kind",
                "source",
                "destination",
                "publication",
                "slot",
                "phase",
                "started",
                "elapsed",
                "error",
            ],
        );
        for task in ctx.registry.tasks() {
            let slot = task.slot();
            reply.push(vec![
                text(task.id),
                text("data-sync"),
                text(&task.source),
                text(&task.dest),
                text(&task.publication),
                (!slot.is_empty()).then_some(slot),
                text(task.phase().as_str()),
                text(timestamp(task.started)),
                text(interval(task.elapsed().as_secs_f64())),
                task.error(),
            ]);
        }
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::data_sync::{Phase, Registry};

    #[tokio::test]
    async fn one_row_per_task() {
        let registry = Arc::new(Registry::default());
        let a = registry.new_task("src", "dst", "pub1");
        registry.new_task("src", "dst2", "pub2");
        a.set_phase(Phase::Copying);
        *a.slot.lock().unwrap() = "pgdog_pub1_dst".into();
        let ctx = super::super::test_context(registry);
        let r = ShowTasks.execute(&ctx).await.unwrap();
        assert_eq!(r.rows.len(), 2);
        assert_eq!(r.get(0, "id"), Some("1"));
        assert_eq!(r.get(0, "phase"), Some("copying"));
        assert_eq!(r.get(0, "slot"), Some("pgdog_pub1_dst"));
        assert_eq!(r.get(1, "slot"), None);
        assert_eq!(r.get(1, "destination"), Some("dst2"));
        assert_eq!(r.get(1, "kind"), Some("data-sync"));
        assert!(r.get(0, "started").unwrap().ends_with("+00"));
        assert_eq!(r.get(0, "error"), None);
    }
}
