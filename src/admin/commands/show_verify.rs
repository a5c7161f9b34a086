//! `SHOW VERIFY`: every verify task's reads, one row per table and server
//! (source shard or destination shard), with rows and bytes read, elapsed
//! time, percent, and for destination shards what the comparison found.

use std::sync::atomic::Ordering;

use super::{no_args, AdminCommand, Context, Usage};
use crate::admin::error::CommandError;
use crate::admin::format::{decimal, interval, text};
use crate::admin::reply::Reply;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShowVerify;

impl AdminCommand for ShowVerify {
    const USAGE: Usage = Usage {
        syntax: "SHOW VERIFY",
        description: "verify tasks: per table and shard, rows read, state, percent and the result",
    };

    fn parse(args: &[String]) -> Result<Self, CommandError> {
        no_args(Self::USAGE, args)?;
        Ok(ShowVerify)
    }

    async fn execute(&self, ctx: &Context) -> Result<Reply, CommandError> {
        let mut reply = Reply::new(
            "SHOW",
            &[
                "task_id", "schema", "table", "side", "shard", "state", "rows", "bytes", "elapsed",
                "percent", "result",
            ],
        );
        for task in ctx.registry.tasks() {
            for item in task.verify_items() {
                reply.push(vec![
                    text(task.id),
                    text(&item.schema),
                    text(&item.table),
                    text(item.side),
                    text(item.shard),
                    text(item.state()),
                    text(item.rows.load(Ordering::Relaxed)),
                    text(item.bytes.load(Ordering::Relaxed)),
                    item.elapsed().map(interval),
                    item.percent().and_then(decimal),
                    item.result(),
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
    use crate::data_sync::progress::VerifyItem;
    use crate::data_sync::Registry;

    #[tokio::test]
    async fn lists_every_read() {
        let registry = Arc::new(Registry::default());
        let task = registry.new_task("a", "b", "p");
        let t = TableName {
            schema: "public".into(),
            name: "orders".into(),
        };
        let src = task.add_verify_item(VerifyItem::new(&t, "source", 0, 1000));
        src.set_state("reading");
        src.bytes.store(500, Ordering::Relaxed);
        let dst = task.add_verify_item(VerifyItem::new(&t, "destination", 1, 500));
        dst.set_state("reading");
        dst.set_state("read");
        dst.set_result("DIFFERS: 10 rows on the source, 9 here".into());
        let ctx = super::super::test_context(registry);
        let r = ShowVerify.execute(&ctx).await.unwrap();
        assert_eq!(r.rows.len(), 2);
        assert_eq!(r.get(0, "side"), Some("source"));
        assert_eq!(r.get(0, "percent"), Some("50.0"));
        assert_eq!(r.get(0, "result"), None);
        assert_eq!(r.get(1, "shard"), Some("1"));
        assert_eq!(r.get(1, "state"), Some("read"));
        assert!(r.get(1, "result").unwrap().starts_with("DIFFERS"));
    }
}
