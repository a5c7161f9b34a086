//! While a move streams: the publication's tables on every source shard,
//! looked at every few seconds and compared with the plan. A table that
//! joins the publication (a partition created or attached under a
//! published parent, `ALTER PUBLICATION ... ADD TABLE`, a new table under
//! `FOR ALL TABLES`), a partition moved to another parent, or a leaf added
//! under a table published through its root ends the stream, so the move
//! plans again: schema sync creates what is new, the copy copies it, and
//! the stream goes on from the slot. A table that leaves the publication
//! is reported: its changes no longer arrive.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::catalog::TableName;
use super::endpoints::Endpoints;
use super::error::Result;
use super::plan::Plan;
use super::progress::Task;

/// How often the publication is looked at.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// What decides a published table's routing and copy: the partitioned
/// tables above it, and (published through its root) its leaves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shape {
    pub ancestors: Vec<TableName>,
    pub leaves: Vec<TableName>,
}

/// The publication's tables and their shapes on one source shard.
pub type Published = BTreeMap<TableName, Shape>;

const PUBLISHED_SQL: &str = "
SELECT pt.schemaname, pt.tablename,
       coalesce((SELECT array_agg(ARRAY[an.nspname, ac.relname]::text ORDER BY a.i)
                   FROM pg_partition_ancestors(k.oid) WITH ORDINALITY a(relid, i)
                   JOIN pg_class ac ON ac.oid = a.relid JOIN pg_namespace an ON an.oid = ac.relnamespace
                  WHERE a.relid <> k.oid), '{}')::text,
       coalesce((SELECT array_agg(ARRAY[ln.nspname, lc.relname]::text ORDER BY ln.nspname, lc.relname)
                   FROM pg_partition_tree(k.oid) t
                   JOIN pg_class lc ON lc.oid = t.relid JOIN pg_namespace ln ON ln.oid = lc.relnamespace
                  WHERE t.isleaf AND k.relkind = 'p'), '{}')::text
  FROM pg_publication_tables pt
  JOIN pg_namespace kn ON kn.nspname = pt.schemaname
  JOIN pg_class k ON k.relnamespace = kn.oid AND k.relname = pt.tablename
 WHERE pt.pubname = $1 AND pt.schemaname <> 'pgdog'";

/// `{"{a,b}","{c,d}"}`: an array of `text[]` pairs, as `text`.
fn pairs(text: &str) -> Vec<TableName> {
    super::catalog::parse_name_array(text)
        .iter()
        .filter_map(|pair| {
            let parts = super::catalog::parse_name_array(pair);
            match parts.as_slice() {
                [schema, name] => Some(TableName {
                    schema: schema.clone(),
                    name: name.clone(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// The publication as source shard `s` has it now.
pub async fn published(endpoints: &Endpoints, s: usize, publication: &str) -> Result<Published> {
    let mut conn = endpoints.connect_source(s, false).await?;
    let rows = conn.query_text(PUBLISHED_SQL, &[publication]).await;
    conn.close().await;
    Ok(rows?
        .iter()
        .map(|r| {
            (
                TableName {
                    schema: r.text(0).unwrap_or("").into(),
                    name: r.text(1).unwrap_or("").into(),
                },
                Shape {
                    ancestors: pairs(r.text(2).unwrap_or("{}")),
                    leaves: pairs(r.text(3).unwrap_or("{}")),
                },
            )
        })
        .collect())
}

/// The plan's view of the same.
pub fn planned(plan: &Plan) -> Published {
    plan.tables
        .iter()
        .map(|t| {
            (
                t.table.name.clone(),
                Shape {
                    ancestors: t.table.ancestors.clone(),
                    leaves: t.table.leaves.clone(),
                },
            )
        })
        .collect()
}

/// How `now` differs from `planned`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Published now, not in the plan.
    pub joined: Vec<TableName>,
    /// In the plan, published no more.
    pub left: Vec<TableName>,
    /// Another parent, or other leaves.
    pub reshaped: Vec<TableName>,
}

impl Changes {
    /// Whether the move must plan again.
    pub fn replan(&self) -> bool {
        !self.joined.is_empty() || !self.reshaped.is_empty()
    }

    /// `table a joined the publication; partition b moved...`.
    pub fn describe(&self) -> String {
        let list = |v: &[TableName]| {
            v.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        if !self.joined.is_empty() {
            parts.push(format!("joined the publication: {}", list(&self.joined)));
        }
        if !self.reshaped.is_empty() {
            parts.push(format!(
                "attached, detached or given new partitions: {}",
                list(&self.reshaped)
            ));
        }
        if !self.left.is_empty() {
            parts.push(format!("left the publication: {}", list(&self.left)));
        }
        parts.join("; ")
    }
}

pub fn compare(planned: &Published, now: &Published) -> Changes {
    let mut out = Changes::default();
    for (t, shape) in now {
        match planned.get(t) {
            None => out.joined.push(t.clone()),
            Some(p) if p != shape => out.reshaped.push(t.clone()),
            Some(_) => {}
        }
    }
    out.left = planned
        .keys()
        .filter(|t| !now.contains_key(*t))
        .cloned()
        .collect();
    out
}

/// Look every [`INTERVAL`] until a change needs a new plan (returned,
/// described) or `stop`. Tables that leave the publication are reported
/// once each. A look that fails (a source restarting) is tried again at
/// the next interval: the stream has its own retries.
pub async fn publication(
    endpoints: Endpoints,
    plan: Plan,
    task: std::sync::Arc<Task>,
    stop: CancellationToken,
) -> Option<String> {
    let planned = planned(&plan);
    let mut reported: BTreeSet<TableName> = BTreeSet::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = stop.cancelled() => return None,
        }
        for s in 0..endpoints.source.shards.len() {
            let now = match published(&endpoints, s, &plan.publication).await {
                Ok(now) => now,
                Err(e) => {
                    tracing::debug!(source_shard = s, "looking at the publication: {e}");
                    continue;
                }
            };
            let changes = compare(&planned, &now);
            for t in &changes.left {
                if reported.insert(t.clone()) {
                    let note = format!(
                        "table {t} left publication \"{}\" on source shard {s}: its changes no longer reach the destination, where its rows stay as they are",
                        plan.publication
                    );
                    warn!("{note}");
                    task.add_note(note);
                }
            }
            if changes.replan() {
                caught_up(&endpoints, &task, s, &stop).await;
                return Some(format!(
                    "the publication changed on source shard {s}: tables {}",
                    changes.describe()
                ));
            }
        }
    }
}

/// Before the move plans again: let the stream of source shard `s` reach
/// the source's WAL position of now (for at most [`CATCH_UP`]), so that
/// schema changes it has yet to replay (a table renamed just before it
/// joined) are on the shards first.
async fn caught_up(endpoints: &Endpoints, task: &Task, s: usize, stop: &CancellationToken) {
    let target = async {
        let mut conn = endpoints.connect_source(s, false).await.ok()?;
        let rows = conn
            .query("SELECT pg_current_wal_insert_lsn()::text")
            .await
            .ok();
        conn.close().await;
        rows?
            .first()
            .and_then(|r| r.text(0))
            .and_then(pgdog_protocol::Lsn::parse)
    };
    let Some(target) = target.await else { return };
    let mut wait = super::retry::Wait::new(
        format!("the stream of source shard {s} to reach {target}"),
        Some(CATCH_UP),
        Duration::from_millis(100),
    );
    loop {
        let confirmed = task
            .streams()
            .iter()
            .find(|st| st.source_shard == s)
            .map(|st| {
                st.confirmed_flush
                    .load(std::sync::atomic::Ordering::Relaxed)
            });
        if confirmed.is_none_or(|c| c >= target.0) {
            return;
        }
        // A stop or the deadline: plan with what the stream has.
        if !matches!(wait.tick("behind", Some(stop)).await, Ok(true)) {
            return;
        }
    }
}

/// How long a new plan waits for the stream to catch up.
const CATCH_UP: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> TableName {
        TableName {
            schema: "public".into(),
            name: name.into(),
        }
    }

    #[test]
    fn joined_left_and_reshaped() {
        let planned: Published = [
            (t("a"), Shape::default()),
            (
                t("p1"),
                Shape {
                    ancestors: vec![t("p")],
                    leaves: vec![],
                },
            ),
            (t("gone"), Shape::default()),
        ]
        .into_iter()
        .collect();
        let mut now = planned.clone();
        now.remove(&t("gone"));
        now.insert(t("new"), Shape::default());
        now.insert(t("p1"), Shape::default());
        let c = compare(&planned, &now);
        assert_eq!(c.joined, [t("new")]);
        assert_eq!(c.left, [t("gone")]);
        assert_eq!(c.reshaped, [t("p1")]);
        assert!(c.replan());
        assert!(!compare(&planned, &planned).replan());
        let only_left = compare(&planned, &{
            let mut n = planned.clone();
            n.remove(&t("gone"));
            n
        });
        assert!(!only_left.replan() && only_left.left == [t("gone")]);
    }

    #[test]
    fn ancestor_pairs() {
        assert_eq!(
            pairs(r#"{"{public,p}","{\"my schema\",\"q,r\"}"}"#),
            [
                t("p"),
                TableName {
                    schema: "my schema".into(),
                    name: "q,r".into()
                }
            ]
        );
        assert!(pairs("{}").is_empty());
    }
}
