//! Which entries of the source's schema dump a move takes, and when each
//! runs. Pre-data (before the copy): schemas, extensions, types, domains,
//! functions, sequences, the tables with their defaults, partitions and
//! replica identity (primary key). Post-data (after the copy): the other
//! indexes and unique or exclusion constraints, partition index attaches,
//! foreign keys, then triggers, rules, policies, statistics and check
//! constraints pg_dump keeps apart.
//!
//! Left out: tables outside the publication (and their partitions,
//! indexes, triggers...), views, materialized views, foreign tables,
//! publications, subscriptions, event triggers, and sequences, types and
//! functions that only left-out objects use. Functions are kept unless the
//! catalog ties them to a left-out table or view: a trigger function's
//! body may call another function the catalog knows nothing of.

use super::catalog::Objects;
use super::dump::Entry;

/// When an entry runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// Before the copy.
    Pre,
    /// Secondary indexes and unique / exclusion constraints, in parallel.
    Index,
    /// `ALTER INDEX ... ATTACH PARTITION`, once both indexes exist.
    Attach,
    /// Foreign keys: added `NOT VALID`, then validated in parallel.
    ForeignKey,
    /// Triggers, rules, policies, statistics, separate check constraints,
    /// comments on post-data objects.
    Other,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Pre => "pre-data",
            Step::Index => "index",
            Step::Attach => "attach",
            Step::ForeignKey => "foreign key",
            Step::Other => "post-data",
        }
    }

    pub fn is_post(self) -> bool {
        self != Step::Pre
    }
}

/// One entry the move takes.
#[derive(Debug, Clone)]
pub struct Planned {
    pub entry: Entry,
    pub step: Step,
}

/// The source's schema, split for the move.
#[derive(Debug, Clone, Default)]
pub struct SchemaPlan {
    pub entries: Vec<Planned>,
    /// What was left out, as `KIND schema.tag`, for `--dry-run`.
    pub omitted: Vec<String>,
}

/// Kinds never taken.
const OMITTED_KINDS: &[&str] = &[
    "VIEW",
    "MATERIALIZED VIEW",
    "MATERIALIZED VIEW DATA",
    "FOREIGN TABLE",
    "PUBLICATION",
    "PUBLICATION TABLE",
    "PUBLICATION TABLES IN SCHEMA",
    "SUBSCRIPTION",
    "SUBSCRIPTION TABLE",
    "EVENT TRIGGER",
    "SERVER",
    "USER MAPPING",
    "FOREIGN DATA WRAPPER",
    "DATABASE",
    "DATABASE PROPERTIES",
    "DEFAULT ACL",
    "SEQUENCE SET",
    "TABLE DATA",
    "LARGE OBJECT",
    "BLOB",
    "BLOB METADATA",
];

/// Kinds that belong to one table; taken when the catalog lists them among
/// the publication's objects.
const TABLE_KINDS: &[&str] = &[
    "TABLE",
    "TABLE ATTACH",
    "DEFAULT",
    "CONSTRAINT",
    "CHECK CONSTRAINT",
    "FK CONSTRAINT",
    "INDEX",
    "INDEX ATTACH",
    "TRIGGER",
    "RULE",
    "POLICY",
    "ROW SECURITY",
    "STATISTICS",
    "SEQUENCE",
    "SEQUENCE OWNED BY",
];

/// Kinds taken when the catalog lists them (used by the tables, or not
/// tied to anything left out).
const LISTED_KINDS: &[&str] = &["TYPE", "DOMAIN", "FUNCTION", "PROCEDURE", "AGGREGATE"];

/// Where a kept entry runs, by its kind and what the catalog says.
fn step_of(entry: &Entry, source: &Objects) -> Step {
    let schema = entry.schema.as_deref();
    let identity = source
        .get(&entry.kind, schema, &entry.tag)
        .is_some_and(|o| o.has('r'));
    match entry.kind.as_str() {
        // The replica identity comes before the copy: streaming and
        // preflight need it, and a resumed copy deletes by it.
        "CONSTRAINT" | "INDEX" | "INDEX ATTACH" if identity => Step::Pre,
        "CONSTRAINT" | "INDEX" => Step::Index,
        "INDEX ATTACH" => Step::Attach,
        "FK CONSTRAINT" => Step::ForeignKey,
        "TRIGGER" | "RULE" | "POLICY" | "ROW SECURITY" | "STATISTICS" | "CHECK CONSTRAINT" => {
            Step::Other
        }
        _ => Step::Pre,
    }
}

/// Split one identifier off the front of `s`, as pg_dump writes it in a
/// comment's tag: `"Mixed Case"` (quotes doubled inside) or plain.
fn take_ident(s: &str) -> Option<(String, &str)> {
    if let Some(rest) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if chars.peek().map(|(_, n)| *n) == Some('"') {
                    chars.next();
                    out.push('"');
                } else {
                    return Some((out, &rest[i + 1..]));
                }
            } else {
                out.push(c);
            }
        }
        None
    } else {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(s.len());
        (end > 0).then(|| (s[..end].to_string(), &s[end..]))
    }
}

/// The object a `COMMENT` or `SECURITY LABEL` tag names, as (kind, tag)
/// in the form of dump headers: the tag `COLUMN "Accounts"."Name"` names
/// table `Accounts`, `CONSTRAINT c ON orders` names `orders c`.
pub fn comment_targets(tag: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let two_word = ["MATERIALIZED VIEW", "FOREIGN TABLE", "TEXT SEARCH"];
    if let Some(p) = two_word.iter().find(|p| tag.starts_with(&format!("{p} "))) {
        out.push((p.to_string(), tag[p.len() + 1..].to_string()));
        return out;
    }
    let Some((kind, rest)) = tag.split_once(' ') else {
        return out;
    };
    match kind {
        "COLUMN" => {
            if let Some((table, after)) = take_ident(rest) {
                if after.starts_with('.') {
                    out.push(("TABLE".into(), table));
                }
            }
        }
        "CONSTRAINT" | "TRIGGER" | "POLICY" | "RULE" => {
            let parsed = take_ident(rest).and_then(|(name, after)| {
                let (table, end) = take_ident(after.strip_prefix(" ON ")?)?;
                end.is_empty().then_some((name, table))
            });
            if let Some((name, table)) = parsed {
                let kinds: &[&str] = if kind == "CONSTRAINT" {
                    &["CONSTRAINT", "FK CONSTRAINT", "CHECK CONSTRAINT"]
                } else {
                    std::slice::from_ref(&kind)
                };
                for k in kinds {
                    out.push((k.to_string(), format!("{table} {name}")));
                }
            }
        }
        "FUNCTION" | "PROCEDURE" | "AGGREGATE" => {
            if let Some((name, args)) = take_ident(rest) {
                out.push((kind.to_string(), format!("{name}{args}")));
            }
        }
        _ => match take_ident(rest) {
            Some((name, "")) => out.push((kind.to_string(), name)),
            _ => out.push((kind.to_string(), rest.to_string())),
        },
    }
    out
}

/// Decide, entry by entry, what a move takes from `entries` (the source's
/// dump) given `source` (the catalog's list of the publication's objects).
pub fn plan(entries: Vec<Entry>, source: &Objects) -> SchemaPlan {
    let kept_kind = |kind: &str, schema: Option<&str>, tag: &str| -> Option<bool> {
        if OMITTED_KINDS.contains(&kind) {
            Some(false)
        } else if TABLE_KINDS.contains(&kind) || LISTED_KINDS.contains(&kind) {
            Some(source.contains(kind, schema, tag))
        } else {
            None
        }
    };
    // First pass: everything but schemas and comments.
    let mut decided: Vec<(Entry, Option<bool>)> = entries
        .into_iter()
        .map(|e| {
            let k = match e.kind.as_str() {
                "SCHEMA" | "COMMENT" | "SECURITY LABEL" | "ACL" => None,
                kind => Some(kept_kind(kind, e.schema.as_deref(), &e.tag).unwrap_or(true)),
            };
            (e, k)
        })
        .collect();
    // Schemas that hold something taken.
    let used_schemas: std::collections::HashSet<String> = decided
        .iter()
        .filter(|(_, k)| *k == Some(true))
        .filter_map(|(e, _)| e.schema.clone())
        .collect();
    let mut out = SchemaPlan::default();
    let mut steps: Vec<(Entry, Option<Step>)> = Vec::with_capacity(decided.len());
    for (e, k) in decided.drain(..) {
        let step = match (e.kind.as_str(), k) {
            ("SCHEMA", _) => used_schemas.contains(&e.tag).then_some(Step::Pre),
            // Grants go with their object, as comments do.
            ("COMMENT" | "SECURITY LABEL" | "ACL", _) => {
                let schema = e.schema.as_deref();
                let targets = comment_targets(&e.tag);
                let target = targets.iter().find_map(|(kind, tag)| {
                    let schema = if kind == "SCHEMA" || kind == "EXTENSION" {
                        None
                    } else {
                        schema
                    };
                    match kept_kind(kind, schema, tag) {
                        Some(true) => Some(Some((kind.clone(), tag.clone()))),
                        Some(false) => None,
                        None if kind == "SCHEMA" => used_schemas
                            .contains(tag)
                            .then(|| Some((kind.clone(), tag.clone()))),
                        None => Some(None),
                    }
                });
                match target {
                    // On a taken object: runs with it (a comment on an index
                    // after the indexes).
                    Some(Some((kind, tag))) => {
                        let probe = Entry {
                            kind,
                            schema: schema.map(str::to_string),
                            tag,
                            sql: String::new(),
                        };
                        let s = step_of(&probe, source);
                        Some(if s.is_post() { Step::Other } else { Step::Pre })
                    }
                    // On an object of a kind always taken (an extension).
                    Some(None) => Some(Step::Pre),
                    None => None,
                }
            }
            (_, Some(true)) => Some(step_of(&e, source)),
            _ => None,
        };
        steps.push((e, step));
    }
    for (entry, step) in steps {
        match step {
            Some(step) => out.entries.push(Planned { entry, step }),
            None => out.omitted.push(entry.describe()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::catalog::{Key, Object};
    use super::super::dump;
    use super::*;

    const FIXTURE: &str = include_str!("../../../fixtures/pg_dump/app_schema.sql");

    fn objects(list: &[(&str, Option<&str>, &str, &str)]) -> Objects {
        let mut o = Objects::default();
        for (kind, schema, tag, flags) in list {
            o.by_key.insert(
                Key::new(kind, *schema, tag),
                Object {
                    flags: flags.to_string(),
                    ..Default::default()
                },
            );
        }
        o
    }

    #[test]
    fn only_the_publications_objects_are_taken_each_at_its_step() {
        let p = Some("public");
        let source = objects(&[
            ("TABLE", p, "orders", ""),
            ("TABLE", p, "events", "P"),
            ("TABLE", p, "events_2025", ""),
            ("TABLE ATTACH", p, "events_2025", ""),
            ("SEQUENCE", p, "orders_id_seq", ""),
            ("CONSTRAINT", p, "orders orders_pkey", "prv"),
            ("CONSTRAINT", p, "events events_pkey", "prvP"),
            ("CONSTRAINT", p, "events_2025 events_2025_pkey", "prv"),
            ("INDEX ATTACH", p, "events_2025_pkey", "r"),
            ("INDEX", p, "orders_customer_id_idx", ""),
            ("INDEX", p, "orders_status_idx", ""),
            ("FK CONSTRAINT", p, "orders orders_customer_id_fkey", "fv"),
            ("TRIGGER", p, "orders orders_stamp", ""),
            ("STATISTICS", p, "st", ""),
            ("TYPE", p, "order_status", "e"),
            ("DOMAIN", p, "money_cents", "d"),
            ("FUNCTION", p, "stamp()", ""),
        ]);
        let plan = plan(dump::parse(FIXTURE), &source);
        let step = |kind: &str, tag: &str| {
            plan.entries
                .iter()
                .find(|e| e.entry.kind == kind && e.entry.tag == tag)
                .map(|e| e.step)
        };
        assert_eq!(step("TABLE", "orders"), Some(Step::Pre));
        assert_eq!(step("CONSTRAINT", "orders orders_pkey"), Some(Step::Pre));
        assert_eq!(step("CONSTRAINT", "events events_pkey"), Some(Step::Pre));
        assert_eq!(step("INDEX ATTACH", "events_2025_pkey"), Some(Step::Pre));
        assert_eq!(step("INDEX", "orders_customer_id_idx"), Some(Step::Index));
        assert_eq!(
            step("FK CONSTRAINT", "orders orders_customer_id_fkey"),
            Some(Step::ForeignKey)
        );
        assert_eq!(step("TRIGGER", "orders orders_stamp"), Some(Step::Other));
        assert_eq!(step("STATISTICS", "st"), Some(Step::Other));
        assert_eq!(step("COMMENT", "TABLE orders"), Some(Step::Pre));
        assert_eq!(step("COMMENT", "COLUMN orders.note"), Some(Step::Pre));
        assert_eq!(step("DOMAIN", "money_cents"), Some(Step::Pre));
        // Not in the publication's objects, or never taken.
        for (kind, tag) in [
            ("TABLE", "customers"),
            ("DOMAIN", "email"),
            ("FUNCTION", "audit()"),
            ("SEQUENCE", "lonely"),
            ("VIEW", "v"),
            ("PUBLICATION", "p"),
            ("TABLE ATTACH", "events_2026"),
        ] {
            assert_eq!(step(kind, tag), None, "{kind} {tag}");
            assert!(
                plan.omitted
                    .iter()
                    .any(|o| o.starts_with(kind) && o.ends_with(tag)),
                "{kind} {tag} not listed as omitted"
            );
        }
        // Dump order is kept within each step.
        let pre: Vec<&str> = plan
            .entries
            .iter()
            .filter(|e| e.step == Step::Pre)
            .map(|e| e.entry.kind.as_str())
            .collect();
        let table = pre.iter().position(|k| *k == "TABLE").unwrap();
        let pk = pre.iter().position(|k| *k == "CONSTRAINT").unwrap();
        let attach = pre.iter().position(|k| *k == "INDEX ATTACH").unwrap();
        assert!(table < pk && pk < attach, "{pre:?}");
    }

    #[test]
    fn comment_tags_name_their_objects() {
        assert_eq!(
            comment_targets("CONSTRAINT c ON orders"),
            vec![
                ("CONSTRAINT".into(), "orders c".into()),
                ("FK CONSTRAINT".into(), "orders c".into()),
                ("CHECK CONSTRAINT".into(), "orders c".into()),
            ]
        );
        assert_eq!(
            comment_targets("COLUMN \"Accounts\".\"Display Name\""),
            vec![("TABLE".into(), "Accounts".into())]
        );
        assert_eq!(
            comment_targets("COLUMN \"a.b\".c"),
            vec![("TABLE".into(), "a.b".into())]
        );
        assert_eq!(
            comment_targets("INDEX \"Odd \"\"name\"\"\""),
            vec![("INDEX".into(), "Odd \"name\"".into())]
        );
        assert_eq!(
            comment_targets("MATERIALIZED VIEW mv"),
            vec![("MATERIALIZED VIEW".into(), "mv".into())]
        );
        assert_eq!(
            comment_targets("FUNCTION f(integer, text)"),
            vec![("FUNCTION".into(), "f(integer, text)".into())]
        );
    }
}
