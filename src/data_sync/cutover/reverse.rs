//! The way back after a cutover: a publication and a permanent slot on
//! every destination shard, and pgdog's state on every source shard saying
//! each table is "copied" as of that slot's start, so the ordinary engine
//! streams the destination's changes to the source (`--replicate-only`,
//! resharded the other way). Also: the forward slot kept from holding WAL,
//! the reverse stream's removal, and the configuration with the clusters
//! exchanged.

use std::path::PathBuf;

use pgdog_protocol::Lsn;
use tracing::info;

use super::super::catalog::{self, quote_ident};
use super::super::endpoints::Endpoints;
use super::super::error::{DataSyncError, Result};
use super::super::plan::Plan;
use super::super::progress::Task;
use super::super::retry::Wait;
use super::super::{preflight, snapshot, state};
use super::freeze;
use crate::config::Config;
use crate::net::replication::SnapshotAction;

/// Create what the reverse stream needs (idempotent). `forward` and `plan`
/// are the move's; `reverse` has the destination as its source.
pub async fn prepare(
    forward: &Endpoints,
    reverse: &Endpoints,
    plan: &Plan,
    publication: &str,
    slot: &str,
    task: &Task,
) -> Result<()> {
    let mut conn = forward.connect_source(0, false).await?;
    let via_root = catalog::publication(&mut conn, &plan.publication)
        .await?
        .is_some_and(|p| p.via_root);
    conn.close().await;
    let tables: Vec<String> = plan.tables.iter().map(|t| t.table.name.quoted()).collect();
    let m = reverse.source.shards.len();
    let mut starts = Vec::with_capacity(m);
    for d in 0..m {
        let mut conn = reverse.connect_source(d, false).await?;
        if catalog::publication(&mut conn, publication)
            .await?
            .is_none()
        {
            conn.execute(&format!(
                "CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = {via_root})",
                quote_ident(publication),
                tables.join(", ")
            ))
            .await?;
            info!(
                dest_shard = d,
                publication, "created the reverse publication"
            );
        }
        if preflight::slot_info(&mut conn, slot).await?.is_none() {
            let mut repl = reverse.connect_source(d, true).await?;
            let server = reverse.source(d);
            let what = format!("destination shard {d} ({})", server.addr());
            let created = snapshot::create_slot(
                &mut repl,
                &server,
                slot,
                false,
                SnapshotAction::NoExport,
                task,
                &what,
            )
            .await?;
            repl.close().await;
            info!(dest_shard = d, slot, lsn = %created.consistent_point, "created the reverse replication slot");
        }
        let start = preflight::slot_info(&mut conn, slot)
            .await?
            .and_then(|i| i.confirmed_flush)
            .ok_or_else(|| {
                DataSyncError::State(format!(
                    "the reverse slot \"{slot}\" on destination shard {d} has no confirmed position"
                ))
            })?;
        conn.close().await;
        starts.push(start);
    }
    // Every change before a slot's start is on the source already.
    for s in 0..reverse.dest.shards.len() {
        let mut conn = reverse.connect_dest(s).await?;
        state::ensure_schema(&mut conn).await?;
        let done = state::finished_copies(&mut conn, slot).await?;
        for (d, start) in starts.iter().enumerate() {
            for t in &plan.tables {
                if !done.contains_key(&(d, t.table.name.clone())) {
                    // Nothing is copied back: no routing to hold a rerun to.
                    state::record_copy(&mut conn, slot, d, &t.table.name, *start, 0, "").await?;
                }
            }
        }
        if s == 0 {
            state::set_stream_stopped(&mut conn, slot, None).await?;
        }
        conn.close().await;
    }
    // The destination takes the writes now (a rollback froze it).
    let mut dest0 = forward.connect_dest(0).await?;
    for d in 0..m {
        let mut conn = forward.connect_dest(d).await?;
        let thawed = freeze::unfreeze(&mut conn).await?;
        conn.close().await;
        if !thawed.is_empty() {
            info!(
                dest_shard = d,
                relations = thawed.len(),
                "destination shard unfrozen"
            );
        }
    }
    dest0
        .query_text(
            "DELETE FROM pgdog.cutover_freezes WHERE slot_name = $1 AND cluster = 'destination'",
            &[&plan.slot],
        )
        .await?;
    dest0.close().await;
    Ok(())
}

/// Whether the reverse slot exists on any destination shard.
pub async fn slots_exist(reverse: &Endpoints, slot: &str) -> Result<bool> {
    for d in 0..reverse.source.shards.len() {
        let mut conn = reverse.connect_source(d, false).await?;
        let found = preflight::slot_info(&mut conn, slot).await?.is_some();
        conn.close().await;
        if found {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Drop the reverse slots and publications on the destination shards and
/// the reverse stream's state on the source shards.
pub async fn drop_reverse(reverse: &Endpoints, publication: &str, slot: &str) -> Result<()> {
    for d in 0..reverse.source.shards.len() {
        let mut conn = reverse.connect_source(d, false).await?;
        let info =
            preflight::slot_when_released(&mut conn, slot, std::time::Duration::from_secs(10))
                .await?;
        if let Some(i) = info {
            if let Some(pid) = i.active_pid {
                return Err(DataSyncError::State(format!(
                    "the reverse slot \"{slot}\" on destination shard {d} is still in use by process {pid}"
                )));
            }
            conn.query_text("SELECT pg_drop_replication_slot($1)", &[slot])
                .await?;
            info!(dest_shard = d, slot, "dropped the reverse replication slot");
        }
        conn.execute(&format!(
            "DROP PUBLICATION IF EXISTS {}",
            quote_ident(publication)
        ))
        .await?;
        conn.close().await;
    }
    for s in 0..reverse.dest.shards.len() {
        let mut conn = reverse.connect_dest(s).await?;
        state::forget(&mut conn, slot).await?;
        conn.close().await;
    }
    Ok(())
}

/// Move the forward slot (when no stream uses it) to the source's current
/// WAL: what was written on the source since the cutover came back from
/// the destination, and must never be streamed there again.
pub async fn advance_forward(forward: &Endpoints, slot: &str) -> Result<()> {
    for s in 0..forward.source.shards.len() {
        let mut conn = forward.connect_source(s, false).await?;
        let rows = conn
            .query("SELECT pg_current_wal_insert_lsn()::text")
            .await?;
        let target = rows
            .first()
            .and_then(|r| r.text(0))
            .and_then(Lsn::parse)
            .unwrap_or_default()
            .to_string();
        // A slot advances only as far as WAL is flushed: wait for it (5 s
        // at most; the advance then goes as far as the flush).
        let mut wait = Wait::new(
            format!("source shard {s} to flush its WAL up to {target}"),
            Some(std::time::Duration::from_secs(5)),
            std::time::Duration::from_millis(50),
        );
        loop {
            let rows = conn
                .query_text(
                    "SELECT pg_current_wal_flush_lsn() >= $1::pg_lsn",
                    &[&target],
                )
                .await?;
            if rows.first().and_then(|r| r.text(0)) == Some("t")
                || !wait.tick("not flushed yet", None).await?
            {
                break;
            }
        }
        conn.query_text(
            "SELECT pg_replication_slot_advance(slot_name, $2::pg_lsn) FROM pg_replication_slots
             WHERE slot_name = $1 AND active_pid IS NULL AND confirmed_flush_lsn < $2::pg_lsn",
            &[slot, &target],
        )
        .await?;
        conn.close().await;
    }
    Ok(())
}

/// `pgdog.toml.cutover` and `users.toml.cutover` beside the two files,
/// with clusters `a` and `b` exchanged (their servers, sharding rules and
/// logins), so the name the application connects to reaches the new
/// cluster. `None` when the configuration is not from files on disk.
pub fn write_swapped_config(
    config: &Config,
    a: &str,
    b: &str,
) -> Result<Option<(PathBuf, PathBuf)>> {
    let (Ok(main), Ok(users)) = (
        std::fs::read_to_string(&config.path),
        std::fs::read_to_string(&config.users_path),
    ) else {
        return Ok(None);
    };
    let out = |p: &std::path::Path| {
        let mut s = p.as_os_str().to_owned();
        s.push(".cutover");
        PathBuf::from(s)
    };
    let main_out = out(&config.path);
    let users_out = out(&config.users_path);
    for (text, from, to, key_sections) in [
        (
            &main,
            &config.path,
            &main_out,
            &[("databases", "name"), ("sharded_tables", "database")][..],
        ),
        (
            &users,
            &config.users_path,
            &users_out,
            &[("users", "database")][..],
        ),
    ] {
        let swapped = swap(text, a, b, key_sections).map_err(|e| {
            DataSyncError::State(format!(
                "writing the swapped configuration: {} does not parse any more: {e}",
                from.display()
            ))
        })?;
        std::fs::write(to, swapped)
            .map_err(|e| DataSyncError::State(format!("writing {}: {e}", to.display())))?;
        info!(file = %to.display(), "wrote the configuration with {a} and {b} exchanged");
    }
    Ok(Some((main_out, users_out)))
}

/// `text` (TOML) with the value of `key` in each entry of the arrays of
/// tables named in `sections` exchanged between `a` and `b`.
fn swap(
    text: &str,
    a: &str,
    b: &str,
    sections: &[(&str, &str)],
) -> std::result::Result<String, String> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    for (section, key) in sections {
        let Some(toml::Value::Array(entries)) = doc.get_mut(*section) else {
            continue;
        };
        for e in entries.iter_mut() {
            let Some(v) = e.get_mut(*key) else { continue };
            let new = match v.as_str() {
                Some(s) if s == a => b,
                Some(s) if s == b => a,
                _ => continue,
            };
            *v = toml::Value::String(new.to_string());
        }
    }
    let mut out = String::from("# Written by pgdog cutover: the clusters of the move exchanged.\n");
    out.push_str(&toml::to_string(&doc).map_err(|e| e.to_string())?);
    Ok(out)
}

/// Changes to published tables that the source shards committed after the
/// forward stream ended, by table (`schema.table`), from what the forward
/// slot still holds (peeked, not consumed). The freeze refuses only the
/// freeze roles. A change here came from another role (a superuser, a
/// job), and the destination does not have it. At most `LATE_PEEK` changes
/// per shard are looked at.
pub async fn late_changes(
    forward: &Endpoints,
    slot: &str,
    publication: &str,
) -> Result<LateChanges> {
    use pgdog_protocol::frontend::Format;
    use pgdog_protocol::pgoutput::{Decoder, Message};
    let mut out = LateChanges::default();
    let publications = quote_ident(publication);
    for s in 0..forward.source.shards.len() {
        let mut conn = forward.connect_source(s, false).await?;
        let rows = conn
            .query_params(
                &format!(
                    "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, {LATE_PEEK}, 'proto_version', '1', 'publication_names', $2)"
                ),
                &[Format::Text],
                [Some(slot.as_bytes()), Some(publications.as_bytes())],
                Format::Binary,
            )
            .await?;
        conn.close().await;
        out.more |= rows.len() >= LATE_PEEK as usize;
        let mut decoder = Decoder::new(1);
        let mut names = std::collections::HashMap::new();
        for row in &rows {
            let Some(data) = row.get_bytes(0) else {
                continue;
            };
            let relations = match decoder.decode(data) {
                Ok(Message::Relation { relation, .. }) => {
                    names.insert(
                        relation.oid,
                        format!("{}.{}", relation.namespace, relation.name),
                    );
                    continue;
                }
                Ok(Message::Insert { relation, .. })
                | Ok(Message::Update { relation, .. })
                | Ok(Message::Delete { relation, .. }) => vec![relation],
                Ok(Message::Truncate { relations, .. }) => relations,
                Ok(_) => continue,
                Err(e) => {
                    return Err(DataSyncError::State(format!(
                        "reading what slot \"{slot}\" holds on source shard {s}: {e}"
                    )))
                }
            };
            for r in relations {
                let name = names
                    .get(&r)
                    .cloned()
                    .unwrap_or_else(|| format!("relation {r}"));
                // pgdog's own state (a FOR ALL TABLES publication has it):
                // the reverse stream's set-up writes it on the source.
                if name.starts_with("pgdog.") {
                    continue;
                }
                *out.tables.entry(name).or_insert(0) += 1;
            }
        }
    }
    Ok(out)
}

/// What [`late_changes`] found.
#[derive(Debug, Default)]
pub struct LateChanges {
    /// Changes by table (`schema.table`).
    pub tables: std::collections::BTreeMap<String, u64>,
    /// A shard held more than was looked at: the counts are a floor.
    pub more: bool,
}

/// How many changes [`late_changes`] looks at per source shard.
const LATE_PEEK: u32 = 100_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_clusters_and_rules() {
        let text = "[general]\nport = 6432\n\n[[databases]]\nname = \"prod\"\nhost = \"a\"\n\n[[databases]]\nname = \"prod_sharded\"\nhost = \"b\"\nshard = 0\n\n[[databases]]\nname = \"other\"\nhost = \"c\"\n\n[[sharded_tables]]\ndatabase = \"prod_sharded\"\nname = \"orders\"\ncolumn = \"customer_id\"\n";
        let out = swap(
            text,
            "prod",
            "prod_sharded",
            &[("databases", "name"), ("sharded_tables", "database")],
        )
        .unwrap();
        let doc: toml::Table = toml::from_str(&out).unwrap();
        let dbs = doc["databases"].as_array().unwrap();
        let names: Vec<(&str, &str)> = dbs
            .iter()
            .map(|d| (d["name"].as_str().unwrap(), d["host"].as_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            [("prod_sharded", "a"), ("prod", "b"), ("other", "c")]
        );
        assert_eq!(doc["sharded_tables"][0]["database"].as_str(), Some("prod"));
        assert_eq!(doc["general"]["port"].as_integer(), Some(6432));
    }
}
