//! The source side of schema sync, read once from source shard 0: pg_dump's
//! entries, the catalog's objects of the publication, and the plan of what
//! a move takes. Every other source shard must hold the same objects.

use tracing::{info, warn};

use crate::data_sync::catalog::{quote_ident, TableName};
use crate::data_sync::endpoints::Endpoints;
use crate::data_sync::error::{DataSyncError, Problem, Result};
use crate::net::Connection;

use super::catalog::{self, Key, Objects};
use super::plan::{self, SchemaPlan};
use super::settings::Settings;
use super::{dump, pg_dump};

/// The source side, read once: pg_dump's entries and the catalog's list of
/// the publication's objects.
#[derive(Debug, Clone)]
pub struct Source {
    pub pg_dump: pg_dump::PgDump,
    pub objects: Objects,
    pub plan: SchemaPlan,
}

/// Read the schema of source shard 0 (every source shard holds the same
/// schema).
pub async fn read_source(
    endpoints: &Endpoints,
    publication: &str,
    settings: &Settings,
) -> Result<Source> {
    let mut conn = endpoints.connect_source(0, false).await?;
    if crate::data_sync::catalog::publication(&mut conn, publication)
        .await?
        .is_none()
    {
        let o = endpoints.source(0);
        return Err(DataSyncError::preflight(
            format!(
                "publication \"{publication}\" does not exist on source shard 0 ({}:{})",
                o.host, o.port
            ),
            format!("create it on every source shard: CREATE PUBLICATION {} FOR ALL TABLES (or FOR TABLE ...)", quote_ident(publication)),
        ));
    }
    let server_major = conn.server_version_num() / 10000;
    let pg_dump = pg_dump::find(settings.pg_dump.as_deref(), server_major).await?;
    info!(pg_dump = %pg_dump.path.display(), version = %pg_dump.version, "reading the source schema");
    let objects = catalog::objects(&mut conn, Some(publication)).await?;
    let others = catalog::other_relations(&mut conn, &objects).await?;
    let omitted_relations: Vec<plan::Omitted> = others
        .iter()
        .map(|(t, kind)| plan::Omitted {
            what: format!("{kind} {}.{}", t.schema, t.name),
            reason: "not in the publication".into(),
            table: None,
            required: false,
        })
        .collect();
    let others: Vec<TableName> = others.into_iter().map(|(t, _)| t).collect();
    conn.close().await;
    // The schema is read from shard 0 and made once for all: the other
    // source shards must have the same objects.
    let mut problems = Vec::new();
    for s in 1..endpoints.source.shards.len() {
        let mut conn = endpoints.connect_source(s, false).await?;
        let theirs = catalog::objects(&mut conn, Some(publication)).await?;
        conn.close().await;
        let o = endpoints.source(s);
        let what = format!("source shard {s} ({}:{})", o.host, o.port);
        problems.extend(compare_sources(&objects, &theirs, &what));
    }
    if !problems.is_empty() {
        return Err(DataSyncError::Preflight { problems });
    }
    let o = endpoints.source(0);
    let config = &endpoints.config.general;
    let text = pg_dump
        .schema(
            &o,
            &config.tls_verify,
            config.tls_server_ca_certificate.as_deref(),
            &format!("source shard 0 ({}:{})", o.host, o.port),
            &others,
        )
        .await?;
    let mut plan = plan::plan(dump::parse(&text), &objects);
    plan.omitted.splice(0..0, omitted_relations);
    // What belongs to a moved table is never left out without a word; a
    // key the move needs stops it here, before anything is created.
    let required: Vec<Problem> = plan
        .unmatched()
        .filter(|o| o.required)
        .map(|o| Problem {
            problem: format!("schema sync would leave out {}: {}", o.what, o.reason),
            fix: "this is a mismatch between pg_dump's output and pgdog's catalog query (please report it); meanwhile create the schema on every destination shard yourself and run with --skip-schema-sync".into(),
        })
        .collect();
    if !required.is_empty() {
        return Err(DataSyncError::Preflight { problems: required });
    }
    for o in plan.unmatched() {
        warn!("schema sync leaves out {o}");
    }
    Ok(Source {
        pg_dump,
        objects,
        plan,
    })
}

/// How `theirs` (another source shard's objects) differs from `first`
/// (shard 0's), at most 20 problems. Only the objects schema sync makes
/// count; extensions available and the like may differ.
fn compare_sources(first: &Objects, theirs: &Objects, what: &str) -> Vec<Problem> {
    let fix = "make the source shards' schemas the same (schema sync reads shard 0's and creates it on every destination shard)";
    changes(first, theirs)
        .into_iter()
        .map(|(k, change)| Problem {
            problem: match change {
                Change::Gone => format!("{} is on source shard 0 but not on {what}", describe(k)),
                Change::New => format!("{} is on {what} but not on source shard 0", describe(k)),
                Change::Altered => {
                    format!("{} differs between source shard 0 and {what}", describe(k))
                }
            },
            fix: fix.into(),
        })
        .collect()
}

/// DDL that committed on source shard `s` after schema sync read its
/// schema and before the move's slot there was created is in neither the
/// shards' schema (made from the earlier dump) nor the slot: compare the
/// catalog now, through `conn`, with `source`'s, and stop before anything
/// is copied if they differ.
pub async fn unchanged_since_read(
    conn: &mut Connection,
    publication: &str,
    source: &Source,
    s: usize,
    slot: &str,
) -> Result<()> {
    let now = catalog::objects(conn, Some(publication)).await?;
    let fix = format!(
        "make the same change on every destination shard, then run the same command again (it resumes from slot \"{slot}\"); or run it with --cleanup, drop the tables schema sync created on the destination shards, and start again"
    );
    let problems: Vec<Problem> = changes(&source.objects, &now)
        .into_iter()
        .map(|(k, change)| Problem {
            problem: format!(
                "{} {} on source shard {s} while pgdog read its schema (after the schema dump, before slot \"{slot}\" existed): the destination shards do not have the change, and the slot does not carry it",
                describe(k),
                match change {
                    Change::Gone => "was dropped",
                    Change::New => "was created",
                    Change::Altered => "was altered",
                }
            ),
            fix: fix.clone(),
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(DataSyncError::Preflight { problems })
    }
}

/// How an object differs between two reads of a catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// In the first only.
    Gone,
    /// In the second only.
    New,
    /// In both, with another signature.
    Altered,
}

/// The objects schema sync makes that differ between `first` and `then`,
/// in key order, at most 20. Roles, extensions and the like belong to
/// each server (and what pgdog's user may do with them to how it was set
/// up there); pgdog's own DDL capture is not the application's.
fn changes<'a>(first: &'a Objects, then: &'a Objects) -> Vec<(&'a Key, Change)> {
    let ignored = [
        "AVAILABLE EXTENSION",
        "EXTENSION",
        "SCHEMA",
        "COLLATION",
        "ROLE",
        "OWNABLE ROLE",
        "PRIVILEGE",
    ];
    let pgdogs = |k: &Key| {
        k.schema.as_deref() == Some("pgdog")
            || (k.kind == "EVENT TRIGGER" && k.tag.starts_with("pgdog_ddl_"))
    };
    let mut keys: Vec<&Key> = first.by_key.keys().chain(then.by_key.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !ignored.contains(&k.kind.as_str()) && !pgdogs(k))
        .filter_map(|k| {
            let change = match (first.by_key.get(k), then.by_key.get(k)) {
                (Some(_), None) => Change::Gone,
                (None, Some(_)) => Change::New,
                (Some(a), Some(b)) if a.signature != b.signature => Change::Altered,
                _ => return None,
            };
            Some((k, change))
        })
        .take(20)
        .collect()
}

/// `INDEX public.orders_pkey`, for messages.
fn describe(k: &Key) -> String {
    match &k.schema {
        Some(s) => format!("{} {s}.{}", k.kind, k.tag),
        None => format!("{} {}", k.kind, k.tag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_shards_must_agree() {
        let objects = |list: &[(&str, &str, Option<&str>)]| {
            let mut o = Objects::default();
            for (kind, tag, sig) in list {
                o.by_key.insert(
                    Key::new(kind, Some("public"), tag),
                    catalog::Object {
                        signature: sig.map(str::to_string),
                        ..Default::default()
                    },
                );
            }
            o
        };
        let first = objects(&[("TABLE", "t", Some("a integer")), ("INDEX", "t_a", None)]);
        let same = objects(&[("TABLE", "t", Some("a integer")), ("INDEX", "t_a", None)]);
        assert!(compare_sources(&first, &same, "source shard 1").is_empty());
        let other = objects(&[("TABLE", "t", Some("a bigint")), ("INDEX", "t_b", None)]);
        let problems: Vec<String> = compare_sources(&first, &other, "source shard 1")
            .into_iter()
            .map(|p| p.problem)
            .collect();
        assert_eq!(
            problems,
            [
                "INDEX public.t_a is on source shard 0 but not on source shard 1",
                "INDEX public.t_b is on source shard 1 but not on source shard 0",
                "TABLE public.t differs between source shard 0 and source shard 1",
            ]
        );
    }
}
