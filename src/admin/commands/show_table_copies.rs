//! `SHOW TABLE_COPIES`: every table copy (one table from one source shard)
//! of every task: progress, speed, estimate of what is left.

use std::sync::atomic::Ordering;

use super::{no_args, AdminCommand, Context, Usage};
use crate::admin::error::CommandError;
use crate::admin::format::{decimal, interval, text, Cell};
use crate::admin::reply::Reply;
use crate::data_sync::progress::{CopyState, TableCopy};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShowTableCopies;

impl AdminCommand for ShowTableCopies {
    const USAGE: Usage = Usage {
        syntax: "SHOW TABLE_COPIES",
        description: "table copies of every task: rows, bytes, speed, percent done, ETA, method (chunks or one snapshot), chunks written, cursor",
    };

    fn parse(args: &[String]) -> Result<Self, CommandError> {
        no_args(Self::USAGE, args)?;
        Ok(ShowTableCopies)
    }

    async fn execute(&self, ctx: &Context) -> Result<Reply, CommandError> {
        let mut reply = Reply::new(
            "SHOW",
            &[
                "task_id",
                "schema",
                "table",
                "source_shard",
                "source_hosts",
                "status",
                "rows",
                "bytes",
                "rows_per_second",
                "bytes_per_second",
                "estimated_rows",
                "percent",
                "eta",
                "elapsed",
                "method",
                "chunks",
                "cursor",
            ],
        );
        for task in ctx.registry.tasks() {
            for copy in task.copies() {
                let mut row = vec![text(task.id)];
                row.extend(cells(&copy));
                reply.push(row);
            }
        }
        Ok(reply)
    }
}

/// The cells after `task_id`.
fn cells(c: &TableCopy) -> Vec<Cell> {
    let rows = c.rows.load(Ordering::Relaxed);
    let bytes = c.bytes.load(Ordering::Relaxed);
    let state = c.state();
    let elapsed = c.elapsed();
    // Rates over the copy so far (or all of it, once done); none before it
    // starts or for a copy an earlier run made.
    let rate = |n: u64| match state {
        CopyState::Copying | CopyState::Done | CopyState::Failed if elapsed > 0.0 => {
            decimal(n as f64 / elapsed)
        }
        _ => None,
    };
    let hosts = c.source_hosts.lock().clone();
    vec![
        text(&c.schema),
        text(&c.table),
        text(c.source_shard),
        (!hosts.is_empty()).then_some(hosts),
        text(state.as_str()),
        text(rows),
        text(bytes),
        rate(rows),
        rate(bytes),
        (c.estimated_rows >= 0).then(|| c.estimated_rows.to_string()),
        c.percent().and_then(decimal),
        c.eta().map(interval),
        (state != CopyState::Pending && state != CopyState::Skipped).then(|| interval(elapsed)),
        {
            let m = c.method();
            (!m.is_empty()).then_some(m)
        },
        text(c.chunks.load(Ordering::Relaxed)),
        c.cursor(),
    ]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::data_sync::Registry;

    fn copy(table: &str, state: CopyState, rows: u64, bytes: u64) -> TableCopy {
        let started = Instant::now().checked_sub(Duration::from_secs(10));
        let c = TableCopy::new(
            &crate::data_sync::catalog::TableName {
                schema: "public".into(),
                name: table.into(),
            },
            1,
            "10.0.0.1:5432".into(),
            if table == "unknown" { -1 } else { 1000 },
            4000,
        );
        c.rows.store(rows, std::sync::atomic::Ordering::Relaxed);
        c.bytes.store(bytes, std::sync::atomic::Ordering::Relaxed);
        c.state.set(state);
        c.started.set(if state == CopyState::Pending {
            None
        } else {
            started
        });
        if table == "users" {
            c.set_method("chunks by (\"id\")");
            c.chunks.store(3, std::sync::atomic::Ordering::Relaxed);
            c.set_cursor("499".into());
        }
        c
    }

    #[tokio::test]
    async fn progress_columns() {
        let registry = Arc::new(Registry::default());
        let task = registry.new_task("a", "b", "p");
        for c in [
            copy("users", CopyState::Copying, 500, 2000),
            copy("unknown", CopyState::Pending, 0, 0),
        ] {
            task.add_copy(c);
        }
        let ctx = super::super::test_context(registry);
        let r = ShowTableCopies.execute(&ctx).await.unwrap();
        assert_eq!(r.rows.len(), 2);
        assert_eq!(r.get(0, "task_id"), Some("1"));
        assert_eq!(r.get(0, "table"), Some("users"));
        assert_eq!(r.get(0, "source_shard"), Some("1"));
        assert_eq!(r.get(0, "source_hosts"), Some("10.0.0.1:5432"));
        assert_eq!(r.get(0, "status"), Some("copying"));
        assert_eq!(r.get(0, "rows"), Some("500"));
        assert_eq!(r.get(0, "estimated_rows"), Some("1000"));
        assert_eq!(r.get(0, "percent"), Some("50.0"));
        let rps: f64 = r.get(0, "rows_per_second").unwrap().parse().unwrap();
        assert!((40.0..=50.1).contains(&rps), "{rps}");
        let eta = r.get(0, "eta").unwrap();
        assert!(eta.starts_with("00:00:"), "{eta}");
        assert_eq!(r.get(1, "status"), Some("pending"));
        assert_eq!(r.get(1, "estimated_rows"), None);
        assert_eq!(r.get(1, "rows_per_second"), None);
        assert_eq!(r.get(1, "elapsed"), None);
        assert_eq!(r.get(0, "method"), Some("chunks by (\"id\")"));
        assert_eq!(r.get(0, "chunks"), Some("3"));
        assert_eq!(r.get(0, "cursor"), Some("499"));
        assert_eq!(r.get(1, "cursor"), None);
    }
}
