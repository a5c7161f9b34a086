//! After schema sync ran on the destination shards: is every object it
//! meant to create there, as pg_dump described it? Run before the copy
//! (pre-data) and again after post-data. A difference stops the move with
//! the list, so nothing of a moved table goes missing without a word.

use std::collections::HashSet;

use crate::data_sync::catalog::TableName;
use crate::data_sync::endpoints::Endpoints;
use crate::data_sync::error::{DataSyncError, Problem, Result};
use crate::data_sync::state;

use super::catalog::{Object, Objects};
use super::plan::{Planned, Step};
use super::source::Source;

/// Kinds whose existence on a shard the catalog query reports one to one
/// with pg_dump's entries: those that belong to a table, and types and
/// functions.
fn checked(kind: &str) -> bool {
    super::plan::TABLE_KINDS.contains(&kind) || super::plan::LISTED_KINDS.contains(&kind)
}

/// Kinds whose catalog signature must also match the source's.
const COMPARED: &[&str] = &[
    "TABLE",
    "SEQUENCE",
    "TYPE",
    "DOMAIN",
    "FUNCTION",
    "PROCEDURE",
];

/// How far schema sync has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Through {
    /// Pre-data ran; `deferred_identity`: primary keys of the tables it
    /// created wait for post-data (a move).
    PreData { deferred_identity: bool },
    /// Post-data ran too.
    PostData,
}

/// What one shard lacks or has otherwise than the source, among the
/// objects schema sync created there (on `created` tables, or belonging
/// to no table).
pub fn differences(
    source: &Source,
    dest: &Objects,
    created: &HashSet<TableName>,
    through: Through,
    what: &str,
) -> Vec<Problem> {
    let mut out = Vec::new();
    for p in &source.plan.entries {
        let Some(src) = expected(p, source, created, through) else {
            continue;
        };
        let e = &p.entry;
        let fix = "rerun the same command (schema sync creates what is missing); if it is still missing, create it on that shard from the SQL of pgdog schema-sync --dry-run";
        match dest.get(&e.kind, e.schema.as_deref(), &e.tag) {
            None => out.push(Problem {
                problem: format!("{} is missing on {what} after schema sync", e.describe()),
                fix: fix.into(),
            }),
            Some(d) if COMPARED.contains(&e.kind.as_str()) && differs(src, d) => {
                out.push(Problem {
                    problem: format!(
                        "{} on {what} differs from the source's after schema sync ({} there, {} on the source)",
                        e.describe(),
                        d.signature.as_deref().unwrap_or("?"),
                        src.signature.as_deref().unwrap_or("?")
                    ),
                    fix: fix.into(),
                })
            }
            Some(_) => {}
        }
    }
    out
}

/// The source object a planned entry must have produced on a shard by
/// now, if it must.
fn expected<'a>(
    p: &Planned,
    source: &'a Source,
    created: &HashSet<TableName>,
    through: Through,
) -> Option<&'a Object> {
    let e = &p.entry;
    if !checked(&e.kind) {
        return None;
    }
    let src = source.objects.get(&e.kind, e.schema.as_deref(), &e.tag)?;
    // A table that was there before is left alone, with all of it.
    if src.table.as_ref().is_some_and(|t| !created.contains(t)) {
        return None;
    }
    match through {
        Through::PreData { deferred_identity } => {
            let deferred = deferred_identity && e.is_identity(Some(src));
            (p.step == Step::Pre && !deferred).then_some(src)
        }
        Through::PostData => Some(src),
    }
}

fn differs(src: &Object, dest: &Object) -> bool {
    matches!((&src.signature, &dest.signature), (Some(a), Some(b)) if a != b)
}

/// [`differences`] on every destination shard; an error listing them all
/// when there are any.
pub async fn created(
    endpoints: &Endpoints,
    source: &Source,
    slot: &str,
    through: Through,
) -> Result<()> {
    let mut problems = Vec::new();
    for d in 0..endpoints.dest.shards.len() {
        let mut conn = endpoints.connect_dest(d).await?;
        let dest = super::catalog::objects(&mut conn, None).await?;
        let created: HashSet<TableName> = state::schema_tables(&mut conn, slot)
            .await?
            .into_iter()
            .collect();
        conn.close().await;
        problems.extend(differences(
            source,
            &dest,
            &created,
            through,
            &endpoints.describe_dest(d),
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(DataSyncError::Preflight { problems })
    }
}

#[cfg(test)]
mod tests {
    use super::super::catalog::Key;
    use super::super::dump::Entry;
    use super::super::plan::SchemaPlan;
    use super::*;

    fn object(table: Option<&str>, flags: &str, signature: Option<&str>) -> Object {
        Object {
            table: table.map(|t| TableName {
                schema: "public".into(),
                name: t.into(),
            }),
            flags: flags.into(),
            signature: signature.map(str::to_string),
            bytes: 0,
        }
    }

    fn entry(kind: &str, tag: &str, step: Step) -> Planned {
        Planned {
            entry: Entry {
                kind: kind.into(),
                schema: Some("public".into()),
                tag: tag.into(),
                sql: String::new(),
            },
            step,
        }
    }

    #[test]
    fn names_what_is_missing_or_differs() {
        let long = "t".repeat(60);
        let pk_tag = format!("{long} {long}_pkey");
        let mut objects = Objects::default();
        for (kind, tag, o) in [
            (
                "TABLE",
                long.as_str(),
                object(Some(&long), "", Some("a bigint")),
            ),
            (
                "CONSTRAINT",
                pk_tag.as_str(),
                object(Some(&long), "prv", None),
            ),
            ("INDEX", "t_a", object(Some(&long), "", None)),
            ("TABLE", "old", object(Some("old"), "", Some("a bigint"))),
            ("INDEX", "old_a", object(Some("old"), "", None)),
        ] {
            objects
                .by_key
                .insert(Key::new(kind, Some("public"), tag), o);
        }
        let source = Source {
            pg_dump: super::super::pg_dump::PgDump {
                path: Default::default(),
                major: 18,
                version: "18".into(),
            },
            objects,
            plan: SchemaPlan {
                entries: vec![
                    entry("TABLE", &long, Step::Pre),
                    entry("CONSTRAINT", &pk_tag, Step::Pre),
                    entry("INDEX", "t_a", Step::Index),
                    entry("TABLE", "old", Step::Pre),
                    entry("INDEX", "old_a", Step::Index),
                ],
                omitted: vec![],
            },
        };
        let created = HashSet::from([TableName {
            schema: "public".into(),
            name: long.clone(),
        }]);
        let mut dest = Objects::default();
        dest.by_key.insert(
            Key::new("TABLE", Some("public"), &long),
            object(Some(&long), "", Some("a integer")),
        );
        let problems = |through| -> Vec<String> {
            differences(&source, &dest, &created, through, "shard 0")
                .into_iter()
                .map(|p| p.problem)
                .collect()
        };
        // Deferred: the primary key is not due yet; the table differs.
        let pre = problems(Through::PreData {
            deferred_identity: true,
        });
        assert_eq!(pre.len(), 1, "{pre:?}");
        assert!(pre[0].starts_with(&format!("TABLE public.{long} on shard 0 differs")));
        let pre = problems(Through::PreData {
            deferred_identity: false,
        });
        assert!(pre[1].contains(&format!("CONSTRAINT public.{pk_tag} is missing")));
        // After post-data the index is due too; the table that was there
        // before is never looked at.
        let post = problems(Through::PostData);
        assert_eq!(post.len(), 3, "{post:?}");
        assert!(post[2].contains("INDEX public.t_a is missing"));
        assert!(!post.iter().any(|p| p.contains("old")));
    }
}
