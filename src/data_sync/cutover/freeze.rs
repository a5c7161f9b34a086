//! Freezing a cluster's published tables for the application's roles.
//!
//! A statement-level `BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE`
//! trigger on every published table, every partition under it and every
//! partitioned table above it raises
//! for the freeze roles (by name, or by membership unless the session is
//! a superuser's). Triggers are looked up per statement, so sessions that
//! are already open cannot write either once the freeze commits. pgdog's
//! own apply runs with `session_replication_role = replica`, where such
//! triggers do not fire, so a stream into a frozen cluster goes on.
//!
//! Creating a trigger takes a SHARE ROW EXCLUSIVE lock: it waits for
//! running writes to the table and blocks new ones until the freeze
//! commits, so every write committed before the freeze is before its LSN.
//! Each shard freezes in one transaction that first locks every relation
//! in one `LOCK TABLE` statement, retried until the caller's deadline.
//!
//! That statement may wait for at most half the server's
//! `deadlock_timeout`. An application transaction that writes two tables
//! can hold one that the freeze needs while it waits for one the freeze
//! already locked. Postgres resolves such a cycle by cancelling the
//! session that checks first, after `deadlock_timeout` of waiting; since
//! the freeze lets go of everything before the application's check can
//! run, the application is never the one cancelled: it commits (before
//! the freeze) and the freeze tries again. Unfreezing drops the triggers
//! (the function stays, unused), which is the exact reverse.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::super::catalog::{quote_literal, TableName};
use super::super::error::{DataSyncError, Result};
use super::super::retry::Wait;
use crate::net::Connection;

/// The trigger's name on every frozen relation.
pub const TRIGGER: &str = "pgdog_cutover_freeze";

/// The longest one attempt waits for its locks before it lets go of
/// every lock it took and tries again; shorter where the server's
/// `deadlock_timeout` is short (see the module's comment).
const MAX_LOCK_WAIT_MS: u64 = 2000;

const FUNCTION_SQL: &str = "CREATE SCHEMA IF NOT EXISTS pgdog;
CREATE OR REPLACE FUNCTION pgdog.cutover_freeze() RETURNS trigger LANGUAGE plpgsql AS $pgdog$
BEGIN
    IF session_user::text = ANY (TG_ARGV) OR current_user::text = ANY (TG_ARGV)
       OR (NOT coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = session_user), false)
           AND EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = ANY (TG_ARGV)
                       AND pg_has_role(session_user, r.oid, 'MEMBER'))) THEN
        RAISE EXCEPTION 'pgdog cutover: % on %.% is frozen for role %', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME, session_user
            USING ERRCODE = 'read_only_sql_transaction',
                  HINT = 'this cluster no longer takes the application''s writes: connect to the cluster the data moved to';
    END IF;
    RETURN NULL;
END
$pgdog$;";

/// Every relation to freeze for `tables`: the tables, every partition
/// under them, and every partitioned table above them, as `regclass` text
/// (quoted where needed). A statement-level trigger fires only on the
/// table a statement names, so with the leaves published (the default) an
/// `INSERT INTO parent` is frozen only by a trigger on the parent.
pub async fn relations(conn: &mut Connection, tables: &[TableName]) -> Result<Vec<String>> {
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = tables
        .iter()
        .map(|t| format!("({})", quote_literal(&t.quoted())))
        .collect();
    let rows = conn
        .query(&format!(
            "SELECT DISTINCT r::text FROM (VALUES {}) t(name),
                 LATERAL (SELECT t.name::regclass AS r
                          UNION SELECT relid FROM pg_partition_tree(t.name::regclass)
                          UNION SELECT relid FROM pg_partition_ancestors(t.name::regclass)) x
             ORDER BY 1",
            list.join(", ")
        ))
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.text(0).map(str::to_string))
        .collect())
}

/// Roles among `roles` that do not exist on this server.
pub async fn missing_roles(conn: &mut Connection, roles: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for r in roles {
        let rows = conn
            .query_text("SELECT 1 FROM pg_roles WHERE rolname = $1", &[r])
            .await?;
        if rows.is_empty() {
            out.push(r.clone());
        }
    }
    Ok(out)
}

/// Freeze `relations` on one server for `roles`, in one transaction,
/// retrying lock timeouts until `deadline`. `what` names the server.
pub async fn freeze(
    conn: &mut Connection,
    relations: &[String],
    roles: &[String],
    deadline: Instant,
    what: &str,
    shutdown: &CancellationToken,
) -> Result<()> {
    let args: Vec<String> = roles.iter().map(|r| quote_literal(r)).collect();
    let wait_ms = lock_wait_ms(conn).await?;
    let mut sql = format!("BEGIN; {FUNCTION_SQL}\n");
    if !relations.is_empty() {
        sql.push_str(&format!(
            "SET LOCAL statement_timeout = '{wait_ms}ms'; SET LOCAL lock_timeout = '{wait_ms}ms';\n\
             LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE;\n\
             SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0;\n",
            relations.join(", ")
        ));
    }
    for r in relations {
        sql.push_str(&format!(
            "CREATE OR REPLACE TRIGGER {TRIGGER} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {r} FOR EACH STATEMENT EXECUTE FUNCTION pgdog.cutover_freeze({});\n",
            args.join(", ")
        ));
    }
    sql.push_str("COMMIT;");
    let mut wait = Wait::new(
        format!("the locks of the published tables on {what}"),
        Some(deadline.saturating_duration_since(Instant::now())),
        Duration::from_millis(200),
    );
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match conn.execute(&sql).await {
            Ok(()) => {
                info!(
                    relations = relations.len(),
                    attempt, "froze the published tables on {what}"
                );
                return Ok(());
            }
            Err(e) => {
                // The transaction stays open after an error in it.
                let _ = conn.execute("ROLLBACK").await;
                // Lock not available, deadlock, or the lock wait's own
                // statement timeout.
                let lock = matches!(e.code(), Some("55P03" | "40P01" | "57014"));
                if !lock {
                    return Err(e.into());
                }
                if attempt == 1 || attempt % 5 == 0 {
                    warn!("freezing on {what}: a table is locked by a running transaction, trying again ({e})");
                }
                if !wait.tick(&e.to_string(), Some(shutdown)).await? {
                    return Err(DataSyncError::State(format!(
                        "freezing the published tables on {what}: their locks were not free within the timeout (last: {e})"
                    )));
                }
            }
        }
    }
}

/// How long one freeze attempt may wait for its locks on this server:
/// half its `deadlock_timeout`, at most [`MAX_LOCK_WAIT_MS`], at least
/// 10 ms.
async fn lock_wait_ms(conn: &mut Connection) -> Result<u64> {
    let rows = conn
        .query(
            "SELECT (extract(epoch FROM current_setting('deadlock_timeout')::interval) * 1000)::bigint",
        )
        .await?;
    let deadlock_ms = rows
        .first()
        .and_then(|r| r.text(0))
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1000);
    Ok(wait_for_deadlock_timeout(deadlock_ms))
}

fn wait_for_deadlock_timeout(deadlock_ms: u64) -> u64 {
    (deadlock_ms / 2).clamp(10, MAX_LOCK_WAIT_MS)
}

/// Drop every freeze trigger on this server (whatever froze them); the
/// relations that were frozen.
pub async fn unfreeze(conn: &mut Connection) -> Result<Vec<String>> {
    let rows = conn
        .query_text(
            "SELECT tgrelid::regclass::text FROM pg_trigger WHERE tgname = $1 ORDER BY 1",
            &[TRIGGER],
        )
        .await?;
    let relations: Vec<String> = rows
        .iter()
        .filter_map(|r| r.text(0).map(str::to_string))
        .collect();
    if relations.is_empty() {
        return Ok(relations);
    }
    let mut sql = String::from("BEGIN;\n");
    for r in &relations {
        sql.push_str(&format!("DROP TRIGGER IF EXISTS {TRIGGER} ON {r};\n"));
    }
    sql.push_str("COMMIT;");
    if let Err(e) = conn.execute(&sql).await {
        let _ = conn.execute("ROLLBACK").await;
        return Err(e.into());
    }
    Ok(relations)
}

#[cfg(test)]
mod tests {
    use super::wait_for_deadlock_timeout;

    #[test]
    fn a_freeze_attempt_gives_up_before_the_application_checks_for_deadlock() {
        assert_eq!(wait_for_deadlock_timeout(1000), 500);
        assert_eq!(wait_for_deadlock_timeout(100_000), 2000);
        assert_eq!(wait_for_deadlock_timeout(0), 10);
    }
}
