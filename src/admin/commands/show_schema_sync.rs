//! `SHOW SCHEMA_SYNC`: schema sync of every task, per destination shard:
//! pre-data as a whole, then each index build and foreign key validation,
//! with its state, elapsed time and (for builds) percent done and ETA.

use super::{no_args, AdminCommand, Context, Usage};
use crate::admin::error::CommandError;
use crate::admin::format::{decimal, interval, text};
use crate::admin::reply::Reply;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShowSchemaSync;

impl AdminCommand for ShowSchemaSync {
    const USAGE: Usage = Usage {
        syntax: "SHOW SCHEMA_SYNC",
        description:
            "schema sync of every task: shard, phase, object, state, elapsed, percent, ETA",
    };

    fn parse(args: &[String]) -> Result<Self, CommandError> {
        no_args(Self::USAGE, args)?;
        Ok(ShowSchemaSync)
    }

    async fn execute(&self, ctx: &Context) -> Result<Reply, CommandError> {
        let mut reply = Reply::new(
            "SHOW",
            &[
                "task_id",
                "dest_shard",
                "phase",
                "object",
                "state",
                "elapsed",
                "percent",
                "eta",
                "message",
            ],
        );
        for task in ctx.registry.tasks() {
            for item in task.schema_items() {
                reply.push(vec![
                    text(task.id),
                    text(
                        item.dest_shard
                            .map_or("every".to_string(), |d| d.to_string()),
                    ),
                    text(item.step),
                    text(&item.object),
                    text(item.state().as_str()),
                    item.elapsed().map(interval),
                    item.percent().and_then(decimal),
                    item.eta().map(interval),
                    item.message(),
                ]);
            }
        }
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::data_sync::progress::{SchemaItem, SchemaState};
    use crate::data_sync::Registry;

    #[tokio::test]
    async fn lists_every_item() {
        let registry = Arc::new(Registry::default());
        let task = registry.new_task("a", "b", "p");
        let pre = task.add_schema_item(SchemaItem::new(
            0,
            "pre-data",
            "12 objects to create, 0 exist".into(),
            0,
        ));
        pre.set_state(SchemaState::Running);
        pre.set_state(SchemaState::Done);
        let build = task.add_schema_item(SchemaItem::new(
            1,
            "index",
            "INDEX public.orders_idx".into(),
            8192,
        ));
        build.set_state(SchemaState::Running);
        build
            .permille
            .store(500, std::sync::atomic::Ordering::Relaxed);
        let fk = task.add_schema_item(SchemaItem::new(
            1,
            "foreign key",
            "FK CONSTRAINT public.a a_fk".into(),
            0,
        ));
        fk.set_message("insert or update violates foreign key constraint");
        fk.set_state(SchemaState::NotValid);
        let ctx = super::super::test_context(registry);
        let r = ShowSchemaSync.execute(&ctx).await.unwrap();
        assert_eq!(r.rows.len(), 3);
        assert_eq!(r.get(0, "phase"), Some("pre-data"));
        assert_eq!(r.get(0, "state"), Some("done"));
        assert_eq!(r.get(0, "percent"), Some("100.0"));
        assert_eq!(r.get(1, "dest_shard"), Some("1"));
        assert_eq!(r.get(1, "state"), Some("running"));
        assert_eq!(r.get(1, "percent"), Some("50.0"));
        assert!(r.get(1, "eta").is_some());
        assert_eq!(r.get(2, "state"), Some("not valid"));
        assert!(r.get(2, "message").unwrap().contains("foreign key"));
    }
}
