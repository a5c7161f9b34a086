//! The event triggers that capture DDL on a source shard, and their
//! removal.
//!
//! Three triggers share transaction-local settings: `sql_drop` notes what
//! a command dropped, `table_rewrite` notes which tables it rewrote and
//! why, and `ddl_command_end` emits one transactional logical message per
//! command (see the parent module for its contents). The functions are
//! `SECURITY DEFINER`, owned by the user pgdog connects with, so a
//! migration run by the application's own role is captured too.
//! Creating an event trigger needs a superuser; without one nothing is
//! installed and the stream falls back to noticing new columns in
//! pgoutput's Relation messages.
//!
//! Event triggers do not fire in sessions with `session_replication_role
//! = replica`, which is how pgdog applies changes: DDL that pgdog itself
//! replays is never captured again (after a cutover the way back does not
//! echo it).
//!
//! Several moves from one source share the triggers: the slot of each
//! move that installed them is listed, with when, in the comment on
//! `pgdog_ddl_capture`, and a move's cleanup drops them only when no other
//! listed move still uses them: its slot exists, or it listed itself
//! within the last hour (a move lists its slot just before it creates it).
//! Installing and removing take one advisory lock, so two moves never
//! rewrite the list at once.

use tracing::info;

use super::super::catalog::quote_literal;
use super::super::error::Result;
use crate::net::Connection;

/// The triggers' names, for the catalog lookups and the removal.
pub const TRIGGERS: [&str; 3] = [
    "pgdog_ddl_capture",
    "pgdog_ddl_dropped",
    "pgdog_ddl_rewrite",
];

const INSTALL_SQL: &str = r#"
CREATE SCHEMA IF NOT EXISTS pgdog;
CREATE OR REPLACE FUNCTION pgdog.ddl_field(v text) RETURNS text
LANGUAGE sql IMMUTABLE AS $pgdog$ SELECT octet_length(coalesce(v, ''))::text || ':' || coalesce(v, '') $pgdog$;
CREATE OR REPLACE FUNCTION pgdog.ddl_list(v text[]) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pgdog AS $pgdog$
    SELECT pgdog.ddl_field(coalesce(array_length(v, 1), 0)::text)
        || coalesce((SELECT string_agg(pgdog.ddl_field(x), '' ORDER BY i) FROM unnest(v) WITH ORDINALITY u(x, i)), '')
$pgdog$;
CREATE OR REPLACE FUNCTION pgdog.ddl_dropped() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $pgdog$
DECLARE
    d text[] := coalesce(nullif(current_setting('pgdog.ddl_dropped', true), '')::text[], '{}');
    r record;
BEGIN
    FOR r IN SELECT * FROM pg_event_trigger_dropped_objects() LOOP
        IF r.is_temporary OR r.schema_name = 'pgdog' THEN
            CONTINUE;
        END IF;
        d := d || (r.object_type || E'\t' || coalesce(r.object_identity, '') || E'\t'
                   || coalesce(r.schema_name, '') || E'\t' || coalesce(r.object_name, ''));
    END LOOP;
    PERFORM set_config('pgdog.ddl_dropped', d::text, true);
END
$pgdog$;
CREATE OR REPLACE FUNCTION pgdog.ddl_rewrite() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $pgdog$
BEGIN
    PERFORM set_config('pgdog.ddl_rewrites',
        (coalesce(nullif(current_setting('pgdog.ddl_rewrites', true), '')::text[], '{}')
            || (pg_event_trigger_table_rewrite_oid()::text || E'\t' || pg_event_trigger_table_rewrite_reason()::text))::text,
        true);
END
$pgdog$;
-- The trigger's function reads the client's search_path (a function with
-- its own SET would see that instead) and hands it on; it names nothing
-- a search_path could shadow.
CREATE OR REPLACE FUNCTION pgdog.ddl_capture() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER AS $pgdog$
BEGIN
    PERFORM pgdog.ddl_emit(tg_tag, pg_catalog.current_setting('search_path'));
END
$pgdog$;
CREATE OR REPLACE FUNCTION pgdog.ddl_emit(tag text, path text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $pgdog$
DECLARE
    q text := coalesce(current_query(), '');
    n int := 1;
    r record;
    rel oid;
    tables text[] := '{}';
    objects text[] := '{}';
    dropped text[] := coalesce(nullif(current_setting('pgdog.ddl_dropped', true), '')::text[], '{}');
    rewrites text[] := coalesce(nullif(current_setting('pgdog.ddl_rewrites', true), '')::text[], '{}');
    ours boolean := false;
    attached boolean;
BEGIN
    PERFORM set_config('pgdog.ddl_dropped', '', true);
    PERFORM set_config('pgdog.ddl_rewrites', '', true);
    -- pgdog's own DDL on the source (the cutover's freeze triggers) is
    -- never replayed on the destination.
    IF current_setting('application_name') LIKE 'pgdog data-sync%' THEN
        RETURN;
    END IF;
    -- Which DDL command of the client's query string this is.
    IF current_setting('pgdog.ddl_query', true) = md5(q) THEN
        n := coalesce(nullif(current_setting('pgdog.ddl_n', true), '')::int, 0) + 1;
    END IF;
    PERFORM set_config('pgdog.ddl_query', md5(q), true);
    PERFORM set_config('pgdog.ddl_n', n::text, true);
    FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        IF r.in_extension THEN
            RETURN;
        END IF;
        IF r.schema_name = 'pgdog' OR r.schema_name LIKE 'pg\_temp%' THEN
            ours := true;
        END IF;
        objects := objects || (r.object_type || E'\t' || coalesce(r.object_identity, ''));
        rel := NULL;
        IF r.classid = 'pg_class'::regclass THEN
            SELECT CASE WHEN c.relkind IN ('i', 'I') THEN (SELECT i.indrelid FROM pg_index i WHERE i.indexrelid = c.oid)
                        WHEN c.relkind IN ('r', 'p', 'f') THEN c.oid END
              INTO rel FROM pg_class c WHERE c.oid = r.objid;
        ELSIF r.classid = 'pg_constraint'::regclass THEN
            SELECT nullif(c.conrelid, 0) INTO rel FROM pg_constraint c WHERE c.oid = r.objid;
        ELSIF r.classid = 'pg_trigger'::regclass THEN
            SELECT t.tgrelid INTO rel FROM pg_trigger t WHERE t.oid = r.objid;
        ELSIF r.classid = 'pg_attrdef'::regclass THEN
            SELECT d.adrelid INTO rel FROM pg_attrdef d WHERE d.oid = r.objid;
        ELSIF r.classid = 'pg_policy'::regclass THEN
            SELECT p.polrelid INTO rel FROM pg_policy p WHERE p.oid = r.objid;
        END IF;
        IF rel IS NOT NULL THEN
            -- A partitioned table's command reaches its partitions, which
            -- are what a publication of leaves lists.
            tables := tables || ARRAY(
                SELECT k.oid::text || E'\t' || s.nspname || E'\t' || k.relname
                FROM (SELECT rel AS relid UNION SELECT t.relid FROM pg_partition_tree(rel) t) m
                JOIN pg_class k ON k.oid = m.relid
                JOIN pg_namespace s ON s.oid = k.relnamespace);
        END IF;
    END LOOP;
    IF ours THEN
        RETURN;
    END IF;
    -- A table attached with rows as a partition: a publication through
    -- the root never streams those rows. Each partitioned table above it
    -- is listed as rewritten (reason 256, pgdog's own), so a move that
    -- publishes one of them copies it again. The attached table's row in
    -- pg_class was written by this transaction (age 0, or below for a
    -- subtransaction).
    IF tag = 'ALTER TABLE' AND q ~* 'attach\s+partition' THEN
        FOR r IN SELECT DISTINCT k.oid AS relid
                   FROM unnest(tables) x
                   JOIN pg_class k ON k.oid = split_part(x, E'\t', 1)::oid
                  WHERE k.relispartition AND age(k.xmin) <= 0 LOOP
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', r.relid::regclass) INTO attached;
            IF attached THEN
                rewrites := rewrites || ARRAY(SELECT a.relid::oid::text || E'\t256' FROM pg_partition_ancestors(r.relid) a WHERE a.relid <> r.relid);
                tables := tables || ARRAY(
                    SELECT k.oid::text || E'\t' || s.nspname || E'\t' || k.relname
                    FROM pg_partition_ancestors(r.relid) a
                    JOIN pg_class k ON k.oid = a.relid
                    JOIN pg_namespace s ON s.oid = k.relnamespace);
            END IF;
        END LOOP;
    END IF;
    PERFORM pg_logical_emit_message(true, 'pgdog.ddl',
        pgdog.ddl_field('1') || pgdog.ddl_field(tag) || pgdog.ddl_field(n::text)
        || pgdog.ddl_field(path) || pgdog.ddl_field(session_user::text)
        || pgdog.ddl_field(q)
        || pgdog.ddl_list(ARRAY(SELECT DISTINCT x FROM unnest(tables) x))
        || pgdog.ddl_list(rewrites) || pgdog.ddl_list(dropped) || pgdog.ddl_list(objects));
END
$pgdog$;
DO $pgdog$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'pgdog_ddl_dropped') THEN
        CREATE EVENT TRIGGER pgdog_ddl_dropped ON sql_drop EXECUTE FUNCTION pgdog.ddl_dropped();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'pgdog_ddl_rewrite') THEN
        CREATE EVENT TRIGGER pgdog_ddl_rewrite ON table_rewrite EXECUTE FUNCTION pgdog.ddl_rewrite();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'pgdog_ddl_capture') THEN
        CREATE EVENT TRIGGER pgdog_ddl_capture ON ddl_command_end EXECUTE FUNCTION pgdog.ddl_capture();
    END IF;
END
$pgdog$;
"#;

const REMOVE_SQL: &str = "
DROP EVENT TRIGGER IF EXISTS pgdog_ddl_capture;
DROP EVENT TRIGGER IF EXISTS pgdog_ddl_dropped;
DROP EVENT TRIGGER IF EXISTS pgdog_ddl_rewrite;
DROP FUNCTION IF EXISTS pgdog.ddl_capture();
DROP FUNCTION IF EXISTS pgdog.ddl_emit(text, text);
DROP FUNCTION IF EXISTS pgdog.ddl_dropped();
DROP FUNCTION IF EXISTS pgdog.ddl_rewrite();
DROP FUNCTION IF EXISTS pgdog.ddl_list(text[]);
DROP FUNCTION IF EXISTS pgdog.ddl_field(text);
";

/// Whether capture was installed on a source shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    Yes,
    /// Not installed, and why (said once in the log and the task).
    No(String),
}

/// Install the capture on the server `conn` is connected to, if its user
/// may create event triggers, for the move of `slot`. `what` names the
/// server.
pub async fn install(conn: &mut Connection, what: &str, slot: &str) -> Result<Installed> {
    let rows = conn
        .query("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        .await?;
    let superuser = rows.first().and_then(|r| r.text(0)) == Some("t");
    if !superuser {
        return Ok(Installed::No(format!(
            "DDL on {what} is not captured: creating an event trigger needs a superuser, and pgdog's user is not one. A column added there makes the move wait until you add it on every destination shard (see \"Schema changes during a move\" in README.md)"
        )));
    }
    conn.execute(LOCK).await?;
    let listed = async {
        conn.execute(INSTALL_SQL).await?;
        let since = server_now(conn).await?;
        let mut users = users(conn).await?;
        users.retain(|u| u.slot != slot);
        users.push(User {
            slot: slot.to_string(),
            since,
        });
        set_users(conn, &users).await
    }
    .await;
    end(conn, listed).await?;
    info!(
        "DDL capture installed on {what} (event triggers {})",
        TRIGGERS.join(", ")
    );
    Ok(Installed::Yes)
}

/// Whether the capture's triggers exist on this server.
pub async fn installed(conn: &mut Connection) -> Result<bool> {
    let rows = conn
        .query("SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'pgdog\\_ddl\\_%'")
        .await?;
    Ok(rows
        .first()
        .and_then(|r| r.text(0))
        .is_some_and(|n| n != "0"))
}

/// What a move's cleanup did with the capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// Nothing was installed.
    NotInstalled,
    /// The triggers and their functions were dropped.
    Removed,
    /// Kept: the moves of these slots still use it.
    KeptFor(Vec<String>),
}

/// The end of the move of `slot` on this server: drop the triggers and
/// their functions (nothing else pgdog keeps in the `pgdog` schema),
/// unless another move listed with them still uses them.
pub async fn remove(conn: &mut Connection, slot: &str) -> Result<Removal> {
    // Dropping an event trigger needs the rights that created it; a
    // server without it has nothing to drop.
    if !installed(conn).await? {
        return Ok(Removal::NotInstalled);
    }
    conn.execute(LOCK).await?;
    let removal = async {
        let now = server_now(conn).await?;
        let mut alive = Vec::new();
        for user in users(conn).await?.into_iter().filter(|u| u.slot != slot) {
            let starting = now - user.since < STARTING_SECONDS;
            if starting || slot_exists(conn, &user.slot).await? {
                alive.push(user);
            }
        }
        if alive.is_empty() {
            conn.execute(REMOVE_SQL).await?;
            return Ok(Removal::Removed);
        }
        set_users(conn, &alive).await?;
        Ok(Removal::KeptFor(
            alive.into_iter().map(|u| u.slot).collect(),
        ))
    }
    .await;
    end(conn, removal).await
}

/// A move listed as using the capture: its slot, and when it listed
/// itself (the server's clock, Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
struct User {
    slot: String,
    since: i64,
}

/// How long a listed move whose slot does not exist (yet) still counts as
/// using the capture: it lists itself just before it creates its slot,
/// which waits for the transactions running then to end.
const STARTING_SECONDS: i64 = 3600;

/// Taken in the transaction that installs or removes the capture.
const LOCK: &str = "BEGIN; SELECT pg_advisory_xact_lock(hashtext('pgdog.ddl_capture'))";

/// Commit the transaction [`LOCK`] began if `result` is good, else roll it
/// back.
async fn end<T>(conn: &mut Connection, result: Result<T>) -> Result<T> {
    match result {
        Ok(value) => {
            conn.execute("COMMIT").await?;
            Ok(value)
        }
        Err(e) => {
            let _ = conn.execute("ROLLBACK").await;
            Err(e)
        }
    }
}

async fn server_now(conn: &mut Connection) -> Result<i64> {
    let rows = conn
        .query("SELECT extract(epoch FROM now())::bigint")
        .await?;
    Ok(rows
        .first()
        .and_then(|r| r.text(0))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0))
}

async fn slot_exists(conn: &mut Connection, slot: &str) -> Result<bool> {
    let rows = conn
        .query_text(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[slot],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// The moves listed in the comment on the main trigger (none before any
/// listed itself): `slot@since` words.
async fn users(conn: &mut Connection) -> Result<Vec<User>> {
    let rows = conn
        .query(
            "SELECT coalesce(obj_description(oid, 'pg_event_trigger'), '') FROM pg_event_trigger WHERE evtname = 'pgdog_ddl_capture'",
        )
        .await?;
    let comment = rows.first().and_then(|r| r.text(0)).unwrap_or("");
    Ok(comment
        .strip_prefix(USERS_PREFIX)
        .unwrap_or("")
        .split_whitespace()
        .map(|word| match word.split_once('@') {
            Some((slot, since)) => User {
                slot: slot.to_string(),
                since: since.parse().unwrap_or(0),
            },
            None => User {
                slot: word.to_string(),
                since: 0,
            },
        })
        .collect())
}

async fn set_users(conn: &mut Connection, users: &[User]) -> Result<()> {
    let words: Vec<String> = users
        .iter()
        .map(|u| format!("{}@{}", u.slot, u.since))
        .collect();
    let comment = format!("{USERS_PREFIX}{}", words.join(" "));
    conn.execute(&format!(
        "COMMENT ON EVENT TRIGGER pgdog_ddl_capture IS {}",
        quote_literal(&comment)
    ))
    .await?;
    Ok(())
}

/// How the comment on `pgdog_ddl_capture` begins; the moves follow,
/// separated by spaces (slot names have none).
const USERS_PREFIX: &str = "pgdog: DDL capture for the moves of slots: ";
