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

use std::collections::HashSet;

use super::catalog::{Key, Objects};
use super::dump::Entry;
use crate::data_sync::catalog::TableName;

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

/// An entry of the source's dump that the move does not take, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Omitted {
    /// `INDEX public.orders_x`, as [`Entry::describe`] says it.
    pub what: String,
    pub reason: String,
    /// The moved table it belongs to. Nothing of a moved table is left out
    /// on purpose: such an entry is one the catalog failed to match.
    pub table: Option<TableName>,
    /// Leaving it out breaks the move (a primary key, the replica
    /// identity, an index a partitioned parent's index attaches).
    pub required: bool,
}

impl Omitted {
    fn new(what: String, reason: impl Into<String>) -> Omitted {
        Omitted {
            what,
            reason: reason.into(),
            table: None,
            required: false,
        }
    }
}

impl std::fmt::Display for Omitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.reason)
    }
}

/// The source's schema, split for the move.
#[derive(Debug, Clone, Default)]
pub struct SchemaPlan {
    pub entries: Vec<Planned>,
    /// What was left out, each with its reason.
    pub omitted: Vec<Omitted>,
}

impl SchemaPlan {
    /// Left-out entries that belong to a moved table: each one is a
    /// difference between the dump and the catalog.
    pub fn unmatched(&self) -> impl Iterator<Item = &Omitted> {
        self.omitted.iter().filter(|o| o.table.is_some())
    }
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

/// Why a kind of [`OMITTED_KINDS`] is never taken.
fn kind_reason(kind: &str) -> &'static str {
    match kind {
        "VIEW" | "MATERIALIZED VIEW" | "MATERIALIZED VIEW DATA" => {
            "views are not moved (create them on the destination yourself)"
        }
        "FOREIGN TABLE" | "SERVER" | "USER MAPPING" | "FOREIGN DATA WRAPPER" => {
            "foreign data wrappers and their tables are not moved"
        }
        "PUBLICATION"
        | "PUBLICATION TABLE"
        | "PUBLICATION TABLES IN SCHEMA"
        | "SUBSCRIPTION"
        | "SUBSCRIPTION TABLE" => "publications and subscriptions belong to the source",
        "EVENT TRIGGER" => "event triggers are not moved",
        "DATABASE" | "DATABASE PROPERTIES" => "database settings belong to each server",
        "DEFAULT ACL" => "default privileges are not carried over",
        "SEQUENCE SET" => "sequence values are set by pgdog sequence-sync",
        "TABLE DATA" => "rows are copied, not dumped",
        _ => "large objects are not moved",
    }
}

/// Kinds that belong to one table; taken when the catalog lists them among
/// the publication's objects.
pub(super) const TABLE_KINDS: &[&str] = &[
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
pub(super) const LISTED_KINDS: &[&str] = &["TYPE", "DOMAIN", "FUNCTION", "PROCEDURE", "AGGREGATE"];

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
    // First pass: everything but schemas and comments (and pgdog's own
    // DDL capture, which is not the application's).
    let mut decided: Vec<(Entry, Option<bool>)> = entries
        .into_iter()
        .filter(|e| !e.is_pgdog_capture())
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
    let moved = Moved::of(source);
    let mut left_out = Vec::new();
    for (entry, step) in steps {
        match step {
            Some(step) => out.entries.push(Planned { entry, step }),
            None => left_out.push(entry),
        }
    }
    for entry in &left_out {
        let omitted = why_left_out(entry, &moved, &left_out, &used_schemas);
        out.omitted.push(omitted);
    }
    let kept: HashSet<Key> = out
        .entries
        .iter()
        .map(|p| Key::new(&p.entry.kind, p.entry.schema.as_deref(), &p.entry.tag))
        .collect();
    out.omitted.extend(identity_not_dumped(source, &kept));
    out
}

/// The tables a move takes (the publication's, with their partition
/// trees), by schema.
struct Moved<'a> {
    tables: HashSet<(&'a str, &'a str)>,
    source: &'a Objects,
}

impl<'a> Moved<'a> {
    fn of(source: &'a Objects) -> Moved<'a> {
        let tables = source
            .by_key
            .keys()
            .filter(|k| k.kind == "TABLE")
            .filter_map(|k| Some((k.schema.as_deref()?, k.tag.as_str())))
            .collect();
        Moved { tables, source }
    }

    fn table(&self, schema: &str, name: &str) -> Option<TableName> {
        self.tables.contains(&(schema, name)).then(|| TableName {
            schema: schema.into(),
            name: name.into(),
        })
    }

    /// The moved table a `table name` tag starts with (the longest, as
    /// table names may hold spaces).
    fn prefix_of(&self, schema: &str, tag: &str) -> Option<TableName> {
        tag.char_indices()
            .rev()
            .filter(|(_, c)| *c == ' ')
            .find_map(|(i, _)| self.table(schema, &tag[..i]))
    }

    /// The moved table a `CREATE INDEX ... ON [ONLY] table` statement
    /// names: an index lives in its table's schema, so only that schema's
    /// tables are tried, spelled each way pg_dump may quote them.
    fn indexed_by(&self, schema: &str, sql: &str) -> Option<TableName> {
        self.tables
            .iter()
            .filter(|(s, _)| *s == schema)
            .find(|(s, t)| {
                spellings(s, t).iter().any(|q| {
                    sql.contains(&format!(" ON {q} ")) || sql.contains(&format!(" ON ONLY {q} "))
                })
            })
            .map(|(s, t)| TableName {
                schema: s.to_string(),
                name: t.to_string(),
            })
    }
}

/// `schema.table` as pg_dump may write it: each part quoted or not.
fn spellings(schema: &str, table: &str) -> [String; 4] {
    let q = crate::data_sync::catalog::quote_ident;
    [
        format!("{schema}.{table}"),
        format!("{}.{table}", q(schema)),
        format!("{schema}.{}", q(table)),
        format!("{}.{}", q(schema), q(table)),
    ]
}

/// Which moved table, if any, a left-out entry of a table's kind belongs
/// to.
fn owner(entry: &Entry, moved: &Moved, left_out: &[Entry]) -> Option<TableName> {
    let schema = entry.schema.as_deref()?;
    match entry.kind.as_str() {
        "TABLE" | "TABLE ATTACH" | "ROW SECURITY" => moved.table(schema, &entry.tag),
        "DEFAULT" | "CONSTRAINT" | "CHECK CONSTRAINT" | "FK CONSTRAINT" | "TRIGGER" | "RULE"
        | "POLICY" => moved.prefix_of(schema, &entry.tag),
        "INDEX" => moved.indexed_by(schema, &entry.sql),
        // The child index's table: the catalog's, or that of the index or
        // constraint entry of the same name.
        "INDEX ATTACH" => moved
            .source
            .get("INDEX", Some(schema), &entry.tag)
            .and_then(|o| o.table.clone())
            .filter(|t| moved.table(&t.schema, &t.name).is_some())
            .or_else(|| {
                left_out
                    .iter()
                    .filter(|e| e.schema.as_deref() == Some(schema))
                    .find_map(|e| match e.kind.as_str() {
                        "INDEX" if e.tag == entry.tag => owner(e, moved, &[]),
                        "CONSTRAINT" if e.tag.ends_with(&format!(" {}", entry.tag)) => {
                            owner(e, moved, &[])
                        }
                        _ => None,
                    })
            }),
        _ => None,
    }
}

/// A left-out entry that a move cannot do without: a primary key, the
/// replica identity, or an index a partitioned parent's index attaches.
fn required(entry: &Entry) -> bool {
    match entry.kind.as_str() {
        "CONSTRAINT" => {
            entry.sql.contains(" PRIMARY KEY ")
                || entry.sql.contains("REPLICA IDENTITY USING INDEX")
        }
        "INDEX" => entry.sql.contains("REPLICA IDENTITY USING INDEX"),
        "INDEX ATTACH" => true,
        _ => false,
    }
}

/// The reason an entry is left out.
fn why_left_out(
    entry: &Entry,
    moved: &Moved,
    left_out: &[Entry],
    used_schemas: &HashSet<String>,
) -> Omitted {
    let what = entry.describe();
    let kind = entry.kind.as_str();
    if OMITTED_KINDS.contains(&kind) {
        return Omitted::new(what, kind_reason(kind));
    }
    if TABLE_KINDS.contains(&kind) {
        if let Some(table) = owner(entry, moved, left_out) {
            return Omitted {
                reason: format!(
                    "pg_dump lists it for {table}, which is moved, but pgdog's catalog query did not match its name; create it on every destination shard from the SQL below"
                ),
                table: Some(table),
                required: required(entry),
                what,
            };
        }
        return Omitted::new(what, "belongs to a table outside the publication");
    }
    match kind {
        "TYPE" | "DOMAIN" => Omitted::new(what, "no moved table or kept function uses it"),
        "FUNCTION" | "PROCEDURE" | "AGGREGATE" => {
            Omitted::new(what, "tied to a table or view that is not moved")
        }
        "SCHEMA" if !used_schemas.contains(&entry.tag) => {
            Omitted::new(what, "holds nothing that is moved")
        }
        _ => Omitted::new(what, "on an object that is left out"),
    }
}

/// Primary keys and replica identities of moved tables (and the
/// attachments of their partitions' ones) that the catalog lists but no
/// kept entry of the dump creates: required, so reported as such.
fn identity_not_dumped(source: &Objects, kept: &HashSet<Key>) -> Vec<Omitted> {
    let mut out: Vec<Omitted> = source
        .by_key
        .iter()
        .filter(|(_, o)| o.has('r') && o.table.is_some())
        .filter(|(k, o)| match k.kind.as_str() {
            "CONSTRAINT" | "INDEX ATTACH" => !kept.contains(*k),
            // An index that backs a constraint is dumped as the constraint.
            "INDEX" => {
                let table = o.table.as_ref().map_or("", |t| t.name.as_str());
                let constraint = format!("{table} {}", k.tag);
                !kept.contains(*k)
                    && !kept.contains(&Key::new("CONSTRAINT", k.schema.as_deref(), &constraint))
            }
            _ => false,
        })
        .map(|(k, o)| {
            let what = match &k.schema {
                Some(s) => format!("{} {s}.{}", k.kind, k.tag),
                None => format!("{} {}", k.kind, k.tag),
            };
            Omitted {
                what,
                reason: "the catalog lists it as a primary key or replica identity of a moved table, but pg_dump's output has no entry of that name".into(),
                table: o.table.clone(),
                required: true,
            }
        })
        .collect();
    out.sort_by(|a, b| a.what.cmp(&b.what));
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
                plan.omitted.iter().any(|o| o.what.starts_with(kind)
                    && o.what.ends_with(tag)
                    && o.table.is_none()),
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

    /// What the catalog query returned before its tags were text: the
    /// tag of a long table's primary key cut to 63 bytes.
    #[test]
    fn entries_of_moved_tables_the_catalog_misses_are_named() {
        let table = "batched_background_migrations";
        let full = format!("{table} {table}_pkey");
        let cut = &full[..63];
        let p = Some("public");
        let mut source = objects(&[
            ("INDEX", p, "bbm_status", ""),
            ("INDEX ATTACH", Some("parts"), "bbm_1_pkey", "r"),
        ]);
        let on_table = |flags: &str| Object {
            table: Some(TableName {
                schema: "public".into(),
                name: table.into(),
            }),
            flags: flags.into(),
            ..Default::default()
        };
        source
            .by_key
            .insert(Key::new("TABLE", p, table), on_table(""));
        source
            .by_key
            .insert(Key::new("CONSTRAINT", p, cut), on_table("prv"));
        let dump = format!(
            "--\n-- Name: {table}; Type: TABLE; Schema: public; Owner: -\n--\n\nCREATE TABLE public.{table} (id bigint, status int);\n\n\
             --\n-- Name: {full}; Type: CONSTRAINT; Schema: public; Owner: -\n--\n\nALTER TABLE ONLY public.{table}\n    ADD CONSTRAINT {table}_pkey PRIMARY KEY (id);\n\n\
             --\n-- Name: bbm_status_2; Type: INDEX; Schema: public; Owner: -\n--\n\nCREATE INDEX bbm_status_2 ON public.{table} USING btree (status);\n\n\
             --\n-- Name: other_idx; Type: INDEX; Schema: public; Owner: -\n--\n\nCREATE INDEX other_idx ON public.other USING btree (status);\n"
        );
        let plan = plan(dump::parse(&dump), &source);
        let find = |what: &str| plan.omitted.iter().find(|o| o.what == what).cloned();
        let pk = find(&format!("CONSTRAINT public.{full}")).expect("the primary key is named");
        assert!(pk.required && pk.table.as_ref().is_some_and(|t| t.name == table));
        let index = find("INDEX public.bbm_status_2").expect("the index is named");
        assert!(!index.required && index.table.is_some(), "{index:?}");
        let other = find("INDEX public.other_idx").expect("left out");
        assert_eq!(other.table, None);
        assert_eq!(other.reason, "belongs to a table outside the publication");
        // The catalog's side: its primary key has no entry of that name.
        let listed = find(&format!("CONSTRAINT public.{cut}")).expect("catalog side");
        assert!(listed.required);
        assert_eq!(plan.unmatched().filter(|o| o.required).count(), 2);
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
