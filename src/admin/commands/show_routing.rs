//! `SHOW ROUTING`: how each table of every move is routed, as its plan
//! decided before anything was copied: sharded by which column and from
//! which rule (its own, a partitioned table's above it, a column rule), or
//! copied whole to every destination shard, with a warning for a large
//! table copied whole.

use super::{no_args, AdminCommand, Context, Usage};
use crate::admin::error::CommandError;
use crate::admin::format::text;
use crate::admin::reply::Reply;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShowRouting;

impl AdminCommand for ShowRouting {
    const USAGE: Usage = Usage {
        syntax: "SHOW ROUTING",
        description: "how each table of every move is routed: source, destination, size, warning",
    };

    fn parse(args: &[String]) -> Result<Self, CommandError> {
        no_args(Self::USAGE, args)?;
        Ok(ShowRouting)
    }

    async fn execute(&self, ctx: &Context) -> Result<Reply, CommandError> {
        let mut reply = Reply::new(
            "SHOW",
            &[
                "task_id",
                "table",
                "source",
                "destination",
                "bytes",
                "warning",
            ],
        );
        for task in ctx.registry.tasks() {
            for r in task.routing() {
                reply.push(vec![
                    text(task.id),
                    text(&r.table),
                    text(&r.source),
                    text(&r.dest),
                    text(r.bytes),
                    r.warning.clone(),
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
    use crate::data_sync::catalog::TableName;
    use crate::data_sync::plan::TableRouting;
    use crate::data_sync::Registry;

    #[tokio::test]
    async fn lists_every_table_of_every_task() {
        let registry = Arc::new(Registry::default());
        let task = registry.new_task("a", "b", "p");
        task.set_routing(vec![TableRouting {
            table: TableName {
                schema: "public".into(),
                name: "payment_p2022_01".into(),
            },
            source: "one source shard".into(),
            dest: "sharded by \"customer_id\" (hash, the rule on public.payment, a partitioned table above it)".into(),
            bytes: 8192,
            warning: None,
        }]);
        let ctx = super::super::test_context(registry);
        let r = ShowRouting.execute(&ctx).await.unwrap();
        assert_eq!(r.get(0, "table"), Some("public.payment_p2022_01"));
        assert!(r.get(0, "destination").unwrap().contains("public.payment"));
        assert_eq!(r.get(0, "warning"), None);
    }
}
