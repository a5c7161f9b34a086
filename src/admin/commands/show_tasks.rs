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
        description: "data-sync tasks: clusters, publication, slot, phase, time, what it waits on, the age of the copy snapshot it holds (it holds back vacuum on the source), error, the tables being copied (cursor, chunks, rows per second, ETA), notes",
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
                "waiting_on",
                "snapshot_held",
                "error",
                "copy",
                "notes",
            ],
        );
        for task in ctx.registry.tasks() {
            let v = task.view();
            reply.push(vec![
                text(v.id),
                text("data-sync"),
                text(&v.source),
                text(&v.dest),
                text(&v.publication),
                (!v.slot.is_empty()).then_some(v.slot),
                text(match v.step {
                    Some(step) => format!("{} ({step})", v.phase.as_str()),
                    None => v.phase.as_str().to_string(),
                }),
                text(timestamp(v.started)),
                text(interval(v.elapsed.as_secs_f64())),
                v.waiting,
                snapshot_held(&task),
                v.error,
                copying(&task),
                (!v.notes.is_empty()).then(|| v.notes.join("; ")),
            ]);
        }
        Ok(reply)
    }
}

/// The tables being copied now: each with its cursor, chunks written,
/// rows per second and ETA.
fn copying(task: &crate::data_sync::Task) -> Option<String> {
    use crate::data_sync::progress::CopyState;
    let parts: Vec<String> = task
        .copies()
        .iter()
        .filter(|c| c.state() == CopyState::Copying)
        .map(|c| {
            let rows = c.rows.load(std::sync::atomic::Ordering::Relaxed);
            let elapsed = c.elapsed();
            let rate = if elapsed > 0.0 {
                rows as f64 / elapsed
            } else {
                0.0
            };
            let mut s = format!(
                "{}.{} from shard {}: {} chunks, {rows} rows, {rate:.0} rows/s",
                c.schema,
                c.table,
                c.source_shard,
                c.chunks.load(std::sync::atomic::Ordering::Relaxed)
            );
            if let Some(cursor) = c.cursor() {
                s.push_str(&format!(", at ({cursor})"));
            }
            if let Some(eta) = c.eta() {
                s.push_str(&format!(", ETA {}", interval(eta)));
            }
            s
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The oldest snapshot the task holds open for its copy: how long, where,
/// and at which LSN.
fn snapshot_held(task: &crate::data_sync::Task) -> Option<String> {
    let held = task.held_snapshots();
    let oldest = held.first()?;
    let more = if held.len() > 1 {
        format!(" (+{} more)", held.len() - 1)
    } else {
        String::new()
    };
    Some(format!(
        "{} on source shard {} ({}) at {}{more}",
        interval(oldest.since.elapsed().as_secs_f64()),
        oldest.source_shard,
        oldest.server,
        oldest.lsn
    ))
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
        a.set_slot("pgdog_pub1_dst".into());
        let ctx = super::super::test_context(registry);
        let r = ShowTasks.execute(&ctx).await.unwrap();
        assert_eq!(r.rows.len(), 2);
        assert_eq!(r.get(0, "id"), Some("1"));
        assert_eq!(r.get(0, "phase"), Some("copying"));
        assert_eq!(r.get(0, "slot"), Some("pgdog_pub1_dst"));
        assert_eq!(r.get(1, "slot"), None);
        assert_eq!(r.get(1, "destination"), Some("dst2"));
        assert_eq!(r.get(1, "kind"), Some("data-sync"));
        assert_eq!(r.get(0, "waiting_on"), None);
        assert_eq!(r.get(0, "snapshot_held"), None);
        let waiting = a.wait_on("source shard 0: waits for pid 7".into());
        a.add_snapshot(Arc::new(crate::data_sync::progress::SnapshotHold {
            source_shard: 0,
            server: "127.0.0.1:5432".into(),
            lsn: pgdog_protocol::Lsn(0x1_0000_0010),
            since: std::time::Instant::now(),
            released: Default::default(),
        }));
        let r = ShowTasks.execute(&ctx).await.unwrap();
        assert_eq!(
            r.get(0, "waiting_on"),
            Some("source shard 0: waits for pid 7")
        );
        // The wait ends: nothing is shown any more.
        drop(waiting);
        let after = ShowTasks.execute(&ctx).await.unwrap();
        assert_eq!(after.get(0, "waiting_on"), None);
        let held = r.get(0, "snapshot_held").unwrap();
        assert!(
            held.contains("source shard 0 (127.0.0.1:5432) at 1/10"),
            "{held}"
        );
        assert!(r.get(0, "started").unwrap().ends_with("+00"));
        assert_eq!(r.get(0, "error"), None);
    }
}
