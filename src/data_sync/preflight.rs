//! Checks before anything is created on any server. Each failure says what
//! is wrong, where, and how to fix it.

use std::collections::HashMap;

use pgdog_protocol::Lsn;
use tracing::info;

use crate::net::{ConnectOptions, Connection};
use crate::sharding::DataType;

use super::catalog::{self, quote_literal, PublishedTable, TableName};
use super::endpoints::Endpoints;
use super::error::{DataSyncError, Result};
use super::plan::{routing, Plan, TablePlan};
use super::state;

/// What preflight found, beyond the plan.
#[derive(Debug, Clone)]
pub struct Findings {
    pub plan: Plan,
    /// Whether the permanent slot already exists, per source shard.
    pub slot_exists: Vec<bool>,
    /// Finished copies recorded on each destination shard.
    pub finished: Vec<HashMap<(usize, TableName), Lsn>>,
    /// Where table copies read, per source shard (replicas or the primary).
    pub copy_sources: Vec<super::replicas::CopySources>,
}

/// What the run is going to do, which decides what must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Copy (what is not copied yet) and maybe stream.
    Copy,
    /// Stream only, from an existing slot.
    ReplicateOnly,
}

async fn connect(opts: &ConnectOptions, what: &str) -> Result<Connection> {
    Connection::connect(opts).await.map_err(|e| {
        let fix = match e.code() {
            Some("28P01") | Some("28000") => format!(
                "check the password of user \"{}\" in users.toml and pg_hba.conf on {}",
                opts.user,
                e.server()
            ),
            Some("3D000") => format!(
                "create database \"{}\" or fix database_name in pgdog.toml",
                opts.database
            ),
            _ => format!("check that {} is up and reachable from here", e.server()),
        };
        DataSyncError::preflight(
            format!("cannot connect to {what} as \"{}\": {e}", opts.user),
            fix,
        )
    })
}

pub async fn run(
    endpoints: &Endpoints,
    publication: &str,
    slot: &str,
    intent: Intent,
    parallel: usize,
) -> Result<Findings> {
    let n = endpoints.source.shards.len();
    let m = endpoints.dest.shards.len();
    let config = &endpoints.config;

    // Sources: reachable, logical WAL, replication rights, the publication.
    let mut source_tables: Vec<Vec<PublishedTable>> = Vec::with_capacity(n);
    let mut slot_exists = Vec::with_capacity(n);
    for s in 0..n {
        let opts = endpoints.source(s);
        let what = format!("source shard {s} ({}:{})", opts.host, opts.port);
        let mut conn = connect(&opts, &what).await?;
        let version = conn.server_version_num();
        if version < 140000 {
            return Err(DataSyncError::preflight(
                format!("{what} runs PostgreSQL {}, older than 14", conn.param("server_version").unwrap_or("?")),
                "upgrade the source to PostgreSQL 14 or newer (binary pgoutput and TID range scans are needed)",
            ));
        }
        let rows = conn
            .query("SELECT current_setting('wal_level'), (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user),
                           current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots),
                           current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication)")
            .await?;
        let row = &rows[0];
        if row.text(0) != Some("logical") {
            return Err(DataSyncError::preflight(
                format!("{what} has wal_level = {}, logical replication needs logical", row.text(0).unwrap_or("?")),
                "set wal_level = logical in postgresql.conf (or ALTER SYSTEM SET wal_level = logical) and restart the server",
            ));
        }
        if row.text(1) != Some("t") {
            return Err(DataSyncError::preflight(
                format!("user \"{}\" on {what} may not use replication", opts.user),
                format!(
                    "ALTER ROLE \"{}\" REPLICATION; (and allow it in pg_hba.conf)",
                    opts.user
                ),
            ));
        }
        let exists = slot_info(&mut conn, slot).await?;
        if let Some(info) = &exists {
            if info.plugin != "pgoutput" || info.database != opts.database {
                return Err(DataSyncError::preflight(
                    format!(
                        "{what} already has a replication slot \"{slot}\" for plugin {} on database {}, not pgoutput on {}",
                        info.plugin, info.database, opts.database
                    ),
                    "pick another name with --replication-slot, or drop that slot if it is unused",
                ));
            }
        }
        let free_slots: i64 = row.text(2).and_then(|t| t.parse().ok()).unwrap_or(0);
        let free_senders: i64 = row.text(3).and_then(|t| t.parse().ok()).unwrap_or(0);
        // The permanent slot (unless it exists), one temporary slot and one
        // WAL sender per parallel copy, one WAL sender for streaming.
        let copies = if intent == Intent::Copy {
            parallel as i64
        } else {
            0
        };
        let need_slots = copies + if exists.is_some() { 0 } else { 1 };
        let need_senders = copies.max(1);
        if free_slots < need_slots {
            return Err(DataSyncError::preflight(
                format!("{what} has {free_slots} free replication slots, this move needs {need_slots} ({copies} parallel copies plus the permanent slot)"),
                "raise max_replication_slots on the source (restart needed) or lower resharding_parallel_copies",
            ));
        }
        if free_senders < need_senders {
            return Err(DataSyncError::preflight(
                format!("{what} has {free_senders} free WAL senders, this move needs {need_senders}"),
                "raise max_wal_senders on the source (restart needed) or lower resharding_parallel_copies",
            ));
        }
        if intent == Intent::ReplicateOnly && exists.is_none() {
            return Err(DataSyncError::preflight(
                format!("--replicate-only needs the replication slot \"{slot}\", which does not exist on {what}"),
                "run the copy first (without --replicate-only, or with --sync-only), or pass the slot's name with --replication-slot",
            ));
        }
        slot_exists.push(exists.is_some());

        if catalog::publication(&mut conn, publication)
            .await?
            .is_none()
        {
            return Err(DataSyncError::preflight(
                format!("publication \"{publication}\" does not exist on {what}"),
                format!("on every source shard: CREATE PUBLICATION {} FOR TABLE ... (or FOR ALL TABLES)", catalog::quote_ident(publication)),
            ));
        }
        let tables = catalog::publication_tables(&mut conn, publication).await?;
        if tables.is_empty() {
            return Err(DataSyncError::preflight(
                format!("publication \"{publication}\" on {what} has no tables"),
                format!(
                    "ALTER PUBLICATION {} ADD TABLE ...",
                    catalog::quote_ident(publication)
                ),
            ));
        }
        for t in &tables {
            if !t.has_usable_identity() {
                let leaves = if t.leaves_without_identity.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (partitions without one: {})",
                        t.leaves_without_identity.join(", ")
                    )
                };
                return Err(DataSyncError::preflight(
                    format!("table {} on {what} has no usable replica identity{leaves}, so its updates and deletes cannot be replicated", t.name),
                    format!("add a primary key, or ALTER TABLE {} REPLICA IDENTITY FULL (or USING INDEX a unique index on NOT NULL columns)", t.name.quoted()),
                ));
            }
        }
        if let Some(first) = source_tables.first() {
            compare_sources(first, &tables, s)?;
        }
        source_tables.push(tables);
        conn.close().await;
    }
    let tables = source_tables.swap_remove(0);

    // Routing on both sides.
    let mut plans = Vec::with_capacity(tables.len());
    for table in tables {
        let source = routing(config, &endpoints.source.name, n, &table)?;
        let dest = routing(config, &endpoints.dest.name, m, &table)?;
        for (side, r) in [("destination", &dest), ("source", &source)] {
            if let Some(r) = r {
                let col = &table.columns[r.column];
                check_key_type(&table, col, r.sharder.data_type, side)?;
            }
        }
        if let Some(r) = &dest {
            let col = &table.columns[r.column];
            if table.replica_identity != 'f' && !col.identity {
                return Err(DataSyncError::preflight(
                    format!(
                        "table {} is sharded on \"{}\", which is not part of its replica identity: an UPDATE that changes it could not be routed to the row's old shard",
                        table.name, col.name
                    ),
                    format!(
                        "include \"{}\" in the primary key (or the REPLICA IDENTITY index), or ALTER TABLE {} REPLICA IDENTITY FULL",
                        col.name,
                        table.name.quoted()
                    ),
                ));
            }
        }
        plans.push(TablePlan {
            table,
            dest,
            source,
        });
    }

    // Destinations: reachable, tables present and matching, empty unless
    // resumed. A run whose slot already exists is a resume: partial copies
    // it left are removed before they are copied again.
    let fresh = slot_exists.iter().all(|e| !e);
    let mut finished = Vec::with_capacity(m);
    for d in 0..m {
        let opts = endpoints.dest(d);
        let what = format!("destination shard {d} ({}:{})", opts.host, opts.port);
        let mut conn = connect(&opts, &what).await?;
        let done = state::finished_copies(&mut conn, slot).await?;
        for plan in &plans {
            let t = &plan.table;
            let Some(cols) = catalog::dest_columns(&mut conn, &t.name).await? else {
                return Err(DataSyncError::preflight(
                    format!("table {} does not exist on {what}", t.name),
                    "create the schema on every destination shard first, e.g. pg_dump --schema-only from the source, restored into each destination",
                ));
            };
            for c in &t.columns {
                match cols.iter().find(|dc| dc.name == c.name) {
                    None => {
                        return Err(DataSyncError::preflight(
                            format!("column {}.{} ({}) is missing on {what}", t.name, c.name, c.type_name),
                            format!("ALTER TABLE {} ADD COLUMN {} {} on that shard", t.name.quoted(), catalog::quote_ident(&c.name), c.type_name),
                        ))
                    }
                    Some(dc) if dc.type_name != c.type_name => {
                        return Err(DataSyncError::preflight(
                            format!(
                                "column {}.{} is {} on the source but {} on {what}; binary COPY needs the same types",
                                t.name, c.name, c.type_name, dc.type_name
                            ),
                            format!("ALTER TABLE {} ALTER COLUMN {} TYPE {} on that shard", t.name.quoted(), catalog::quote_ident(&c.name), c.type_name),
                        ))
                    }
                    Some(dc) if dc.generated => {
                        return Err(DataSyncError::preflight(
                            format!("column {}.{} is generated on {what} but not on the source", t.name, c.name),
                            "make the destination column a plain column, as on the source",
                        ))
                    }
                    Some(_) => {}
                }
            }
            if let Some(extra) = cols.iter().find(|dc| {
                !dc.optional && !dc.generated && !t.columns.iter().any(|c| c.name == dc.name)
            }) {
                return Err(DataSyncError::preflight(
                    format!(
                        "column {}.{} on {what} is NOT NULL without a default and is not published by the source, so no row could be inserted",
                        t.name, extra.name
                    ),
                    "give it a default, drop NOT NULL, or add it to the publication",
                ));
            }
            if intent == Intent::Copy && fresh && catalog::has_rows(&mut conn, &t.name).await? {
                return Err(DataSyncError::preflight(
                    format!("table {} on {what} already has rows, and no copy of it by slot \"{slot}\" is recorded there", t.name),
                    format!(
                        "pgdog copies into empty tables: TRUNCATE {} on that shard; or, to resume an earlier run, pass its --replication-slot",
                        t.name.quoted()
                    ),
                ));
            }
        }
        // Progress recorded for a slot that no longer exists: the changes
        // between that copy and now are gone from the WAL.
        if !done.is_empty() && slot_exists.iter().any(|e| !e) {
            return Err(DataSyncError::preflight(
                format!("{what} has copy progress recorded for slot \"{slot}\", but that slot no longer exists on every source shard; changes made since that copy cannot be streamed"),
                "start over: pgdog data-sync ... --cleanup, TRUNCATE the destination tables, then run the move again",
            ));
        }
        finished.push(done);
        conn.close().await;
    }
    let copy_sources = if intent == Intent::Copy {
        super::replicas::qualify(endpoints).await?
    } else {
        Vec::new()
    };
    info!(
        tables = plans.len(),
        source_shards = n,
        dest_shards = m,
        "preflight passed"
    );
    Ok(Findings {
        plan: Plan {
            slot: slot.to_string(),
            publication: publication.to_string(),
            source: endpoints.source.clone(),
            dest: endpoints.dest.clone(),
            tables: plans,
        },
        slot_exists,
        finished,
        copy_sources,
    })
}

/// A sharding key whose column type cannot be parsed as the configured type
/// would fail on the first row: say so now.
fn check_key_type(
    table: &PublishedTable,
    col: &catalog::Column,
    configured: DataType,
    side: &str,
) -> Result<()> {
    let actual =
        DataType::from_type_oid(col.type_oid).or_else(|| DataType::from_type_name(&col.type_name));
    match actual {
        Some(a) if a.kind() == configured.kind() => Ok(()),
        _ => Err(DataSyncError::preflight(
            format!(
                "table {} is sharded on the {side} by column \"{}\" as {configured}, but the column is {}",
                table.name, col.name, col.type_name
            ),
            "set data_type in [[sharded_tables]] to match the column (bigint, integer, smallint, uuid, varchar or text)",
        )),
    }
}

/// Every source shard must publish the same tables with the same columns.
fn compare_sources(first: &[PublishedTable], other: &[PublishedTable], s: usize) -> Result<()> {
    let names = |ts: &[PublishedTable]| ts.iter().map(|t| t.name.to_string()).collect::<Vec<_>>();
    if names(first) != names(other) {
        return Err(DataSyncError::preflight(
            format!(
                "source shard {s} publishes tables {:?}, source shard 0 publishes {:?}",
                names(other),
                names(first)
            ),
            "make the publication identical on every source shard",
        ));
    }
    for (a, b) in first.iter().zip(other) {
        let cols = |t: &PublishedTable| {
            t.columns
                .iter()
                .map(|c| (c.name.clone(), c.type_name.clone()))
                .collect::<Vec<_>>()
        };
        if cols(a) != cols(b) {
            return Err(DataSyncError::preflight(
                format!(
                    "table {} has different columns on source shard {s} than on source shard 0",
                    a.name
                ),
                "make the schema identical on every source shard",
            ));
        }
    }
    Ok(())
}

/// A replication slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone)]
pub struct SlotInfo {
    pub plugin: String,
    pub database: String,
    pub active_pid: Option<i32>,
    pub confirmed_flush: Option<Lsn>,
}

pub async fn slot_info(conn: &mut Connection, slot: &str) -> Result<Option<SlotInfo>> {
    let rows = conn
        .query(&format!(
            "SELECT coalesce(plugin, ''), coalesce(database, ''), active_pid, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = {}",
            quote_literal(slot)
        ))
        .await?;
    Ok(rows.first().map(|r| SlotInfo {
        plugin: r.text(0).unwrap_or("").into(),
        database: r.text(1).unwrap_or("").into(),
        active_pid: r.text(2).and_then(|t| t.parse().ok()),
        confirmed_flush: r.text(3).and_then(Lsn::parse),
    }))
}
