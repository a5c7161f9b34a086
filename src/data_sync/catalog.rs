//! What the catalogs say: the tables of a publication with their columns,
//! replica identity and size on a source; the matching tables on a
//! destination.

use std::collections::HashMap;

use pgdog_protocol::backend::DataRow;

use crate::net::Connection;

use super::error::{DataSyncError, Result};

pub use crate::names::{quote_ident, quote_literal, TableName};

/// One column of a published table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    /// `format_type()`: what the destination's column must also say.
    pub type_name: String,
    /// Part of the replica identity (the key of `K` old tuples).
    pub identity: bool,
    pub not_null: bool,
    /// The binary form carries no server-specific OIDs (arrays of
    /// user-defined types and composite types do, so they go as text).
    pub binary_safe: bool,
    /// Compared byte by byte (the `C` or `POSIX` collation), or not
    /// collatable: pgdog orders such keys the way the server does.
    pub c_collation: bool,
}

/// A table in a publication, as one source shard sees it.
#[derive(Debug, Clone)]
pub struct PublishedTable {
    pub oid: u32,
    pub name: TableName,
    /// `r` table, `p` partitioned table.
    pub relkind: char,
    /// `d` default (primary key), `i` index, `f` full, `n` nothing.
    pub replica_identity: char,
    /// Published, non-generated columns in attribute order.
    pub columns: Vec<Column>,
    /// The publication's row filter (PostgreSQL 15+), as SQL.
    pub row_filter: Option<String>,
    /// `pg_class.reltuples` summed over partitions; -1 when never analyzed.
    pub estimated_rows: i64,
    /// Heap size in bytes, summed over partitions.
    pub bytes: u64,
    /// For partitioned tables: leaves whose replica identity is unusable.
    pub leaves_without_identity: Vec<String>,
    /// Stored generated columns (name, expression): never copied or
    /// streamed; the destination must compute them the same way.
    pub generated: Vec<(String, String)>,
    /// The partitioned tables above a partition, nearest first: a
    /// sharding rule naming one of them routes this table too.
    pub ancestors: Vec<TableName>,
    /// For a partitioned table (published through its root): its leaf
    /// partitions, sorted, to notice one attached while the move runs.
    pub leaves: Vec<TableName>,
}

impl PublishedTable {
    /// Whether updates and deletes can be matched on a destination.
    pub fn has_usable_identity(&self) -> bool {
        match self.replica_identity {
            'f' => true,
            'd' | 'i' => {
                self.columns.iter().any(|c| c.identity) && self.leaves_without_identity.is_empty()
            }
            _ => false,
        }
    }

    /// Whether rows can travel in binary (COPY and pgoutput) between two
    /// servers whose user-defined types have different OIDs.
    pub fn binary_safe(&self) -> bool {
        self.columns.iter().all(|c| c.binary_safe)
    }

    pub fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    /// `("a", "b")` for COPY and INSERT.
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Publication flags.
#[derive(Debug, Clone)]
pub struct Publication {
    pub via_root: bool,
    pub all_tables: bool,
    pub publishes_truncate: bool,
}

pub async fn publication(conn: &mut Connection, name: &str) -> Result<Option<Publication>> {
    let rows = query1(
        conn,
        "SELECT pubviaroot, puballtables, pubtruncate FROM pg_publication WHERE pubname = $1",
        name,
    )
    .await?;
    Ok(rows.first().map(|r| Publication {
        via_root: r.text(0) == Some("t"),
        all_tables: r.text(1) == Some("t"),
        publishes_truncate: r.text(2) == Some("t"),
    }))
}

/// `{"a","b"}`: a text array literal for a `$n::text[]` parameter.
pub fn text_array(items: impl IntoIterator<Item = String>) -> String {
    let quoted: Vec<String> = items
        .into_iter()
        .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

/// One text parameter, for the catalog queries below.
async fn query1(conn: &mut Connection, sql: &str, param: &str) -> Result<Vec<DataRow>> {
    use pgdog_protocol::frontend::Format;
    Ok(conn
        .query_params(sql, &[Format::Text], [Some(param.as_bytes())], Format::Text)
        .await?)
}

/// Every table of `publication`, with columns, identity and size: a few
/// catalog queries however many tables there are.
pub async fn publication_tables(
    conn: &mut Connection,
    publication: &str,
) -> Result<Vec<PublishedTable>> {
    let (mut tables, published_cols) = published(conn, publication).await?;
    let oids = format!(
        "{{{}}}",
        tables
            .iter()
            .map(|t| t.oid.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let index: HashMap<u32, usize> = tables.iter().enumerate().map(|(i, t)| (t.oid, i)).collect();
    add_columns(conn, &mut tables, &published_cols, &oids, &index).await?;
    add_partitions(conn, &mut tables, &oids, &index).await?;
    Ok(tables)
}

/// The publication's tables without their columns, and the columns each
/// publishes when it lists them (PostgreSQL 15+).
async fn published(
    conn: &mut Connection,
    publication: &str,
) -> Result<(Vec<PublishedTable>, Vec<Option<Vec<String>>>)> {
    let v15 = conn.server_version_num() >= 150000;
    let extra = if v15 {
        "pt.attnames::text, pt.rowfilter"
    } else {
        "NULL::text, NULL::text"
    };
    let sql = format!(
        "SELECT c.oid, pt.schemaname, pt.tablename, c.relkind, c.relreplident, {extra},
                (SELECT CASE WHEN bool_and(k.reltuples < 0) THEN -1 ELSE sum(greatest(k.reltuples, 0)) END::bigint
                   FROM pg_class k WHERE k.oid IN (SELECT relid FROM pg_partition_tree(c.oid) WHERE isleaf UNION SELECT c.oid WHERE c.relkind <> 'p')),
                (SELECT coalesce(sum(pg_relation_size(k.oid)), 0)::bigint
                   FROM pg_class k WHERE k.oid IN (SELECT relid FROM pg_partition_tree(c.oid) WHERE isleaf UNION SELECT c.oid WHERE c.relkind <> 'p'))
         FROM pg_publication_tables pt
         JOIN pg_namespace n ON n.nspname = pt.schemaname
         JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
         WHERE pt.pubname = $1 AND pt.schemaname <> 'pgdog'
         ORDER BY 2, 3"
    );
    let rows = query1(conn, &sql, publication).await?;
    let mut tables = Vec::with_capacity(rows.len());
    let mut published_cols = Vec::with_capacity(rows.len());
    for r in &rows {
        let field = |i: usize| r.text(i).unwrap_or("").to_string();
        let oid: u32 = parse(r.text(0), "pg_class.oid")?;
        published_cols.push(r.text(5).map(parse_name_array));
        tables.push(PublishedTable {
            oid,
            name: TableName {
                schema: field(1),
                name: field(2),
            },
            relkind: field(3).chars().next().unwrap_or('r'),
            replica_identity: field(4).chars().next().unwrap_or('d'),
            columns: Vec::new(),
            row_filter: r.text(6).map(str::to_string),
            estimated_rows: parse(r.text(7), "reltuples")?,
            bytes: parse(r.text(8), "pg_relation_size")?,
            leaves_without_identity: Vec::new(),
            generated: Vec::new(),
            ancestors: Vec::new(),
            leaves: Vec::new(),
        });
    }
    Ok((tables, published_cols))
}

/// Each table's published columns, and its generated ones apart.
async fn add_columns(
    conn: &mut Connection,
    tables: &mut [PublishedTable],
    published_cols: &[Option<Vec<String>>],
    oids: &str,
    index: &HashMap<u32, usize>,
) -> Result<()> {
    // Columns of every table. Identity columns: the primary key for 'd',
    // the chosen index for 'i'; for 'f' every column is part of the (full)
    // identity.
    let rows = query1(
        conn,
        "SELECT a.attrelid, a.attname, a.atttypid, format_type(a.atttypid, a.atttypmod),
                coalesce(CASE c.relreplident
                    WHEN 'f' THEN true
                    WHEN 'd' THEN a.attnum = ANY ((SELECT indkey FROM pg_index WHERE indrelid = a.attrelid AND indisprimary LIMIT 1)::int2[])
                    WHEN 'i' THEN a.attnum = ANY ((SELECT indkey FROM pg_index WHERE indrelid = a.attrelid AND indisreplident LIMIT 1)::int2[])
                    ELSE false END, false),
                a.attnotnull,
                NOT (t.typtype = 'c' OR coalesce(e.oid >= 16384 OR e.typtype = 'c', false)),
                a.attgenerated <> '', pg_get_expr(d.adbin, d.adrelid),
                a.attcollation IN (0, 950, 951) OR (a.attcollation = 100
                    AND (SELECT datcollate FROM pg_database WHERE datname = current_database()) IN ('C', 'POSIX'))
         FROM pg_attribute a
         JOIN pg_class c ON c.oid = a.attrelid
         JOIN pg_type t ON t.oid = a.atttypid
         LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attrelid = ANY ($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attrelid, a.attnum",
        oids,
    )
    .await?;
    for r in &rows {
        let oid: u32 = parse(r.text(0), "attrelid")?;
        let Some(&i) = index.get(&oid) else { continue };
        let name = r.text(1).unwrap_or("").to_string();
        if r.text(7) == Some("t") {
            tables[i]
                .generated
                .push((name, r.text(8).unwrap_or("").to_string()));
            continue;
        }
        if published_cols[i]
            .as_ref()
            .is_some_and(|p| !p.contains(&name))
        {
            continue;
        }
        tables[i].columns.push(Column {
            name,
            type_oid: parse(r.text(2), "atttypid")?,
            type_name: r.text(3).unwrap_or("").to_string(),
            identity: r.text(4) == Some("t"),
            not_null: r.text(5) == Some("t"),
            binary_safe: r.text(6) != Some("f"),
            c_collation: r.text(9) == Some("t"),
        });
    }
    Ok(())
}

/// What partitioning tells of each table: the leaves without a usable
/// identity, the partitioned tables above it, and (published through its
/// root) its leaves.
async fn add_partitions(
    conn: &mut Connection,
    tables: &mut [PublishedTable],
    oids: &str,
    index: &HashMap<u32, usize>,
) -> Result<()> {
    // Partitions of partitioned tables without a usable identity.
    let rows = query1(
        conn,
        "SELECT p.oid, c.oid::regclass::text
         FROM unnest($1::oid[]) p(oid)
         JOIN pg_class r ON r.oid = p.oid AND r.relkind = 'p'
         CROSS JOIN LATERAL pg_partition_tree(p.oid) t
         JOIN pg_class c ON c.oid = t.relid
         WHERE t.isleaf AND NOT (c.relreplident = 'f'
            OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
            OR (c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)))",
        oids,
    )
    .await?;
    for r in &rows {
        let oid: u32 = parse(r.text(0), "partition root oid")?;
        if let (Some(&i), Some(leaf)) = (index.get(&oid), r.text(1)) {
            tables[i].leaves_without_identity.push(leaf.to_string());
        }
    }
    // Partitioned tables above each partition, nearest first.
    let rows = query1(
        conn,
        "SELECT p.oid, n.nspname, c.relname
         FROM unnest($1::oid[]) p(oid)
         CROSS JOIN LATERAL pg_partition_ancestors(p.oid) WITH ORDINALITY a(relid, i)
         JOIN pg_class c ON c.oid = a.relid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE a.relid <> p.oid
         ORDER BY p.oid, a.i",
        oids,
    )
    .await?;
    for r in &rows {
        let oid: u32 = parse(r.text(0), "partition oid")?;
        if let Some(&i) = index.get(&oid) {
            tables[i].ancestors.push(TableName {
                schema: r.text(1).unwrap_or("").to_string(),
                name: r.text(2).unwrap_or("").to_string(),
            });
        }
    }
    // Leaves of partitioned tables published through their root.
    let rows = query1(
        conn,
        "SELECT p.oid, n.nspname, c.relname
         FROM unnest($1::oid[]) p(oid)
         JOIN pg_class r ON r.oid = p.oid AND r.relkind = 'p'
         CROSS JOIN LATERAL pg_partition_tree(p.oid) t
         JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE t.isleaf
         ORDER BY p.oid, n.nspname, c.relname",
        oids,
    )
    .await?;
    for r in &rows {
        let oid: u32 = parse(r.text(0), "partition root oid")?;
        if let Some(&i) = index.get(&oid) {
            tables[i].leaves.push(TableName {
                schema: r.text(1).unwrap_or("").to_string(),
                name: r.text(2).unwrap_or("").to_string(),
            });
        }
    }
    Ok(())
}

/// A destination table's column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestColumn {
    pub name: String,
    /// `format_type()`.
    pub type_name: String,
    /// An insert may leave it out: nullable, with a default, identity or
    /// generated.
    pub optional: bool,
    /// The expression of a stored generated column.
    pub generated: Option<String>,
    /// `GENERATED ALWAYS AS IDENTITY`: inserts need `OVERRIDING SYSTEM
    /// VALUE`, and an UPDATE may not set it.
    pub identity_always: bool,
}

/// A unique index or exclusion constraint of a destination table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueIndex {
    /// Its key columns (expressions left out).
    pub columns: Vec<String>,
    /// Unique, checked row by row, on columns only, without a predicate:
    /// usable as an `ON CONFLICT` arbiter.
    pub plain: bool,
    /// Checked at commit (`DEFERRABLE INITIALLY DEFERRED`), not row by row.
    pub deferred: bool,
}

/// What a destination shard has for one table of the move.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DestTable {
    /// `r` table, `p` partitioned table.
    pub relkind: char,
    pub columns: Vec<DestColumn>,
    pub unique: Vec<UniqueIndex>,
    /// Other tables with a foreign key to this one: a TRUNCATE of it alone
    /// would fail there.
    pub referenced_by: Vec<TableName>,
}

impl DestTable {
    /// What streaming must assume of a table that shards hold alike but
    /// not identically: references, unique checks and identity columns of
    /// any of them.
    pub fn merge(&mut self, other: &DestTable) {
        for r in &other.referenced_by {
            if !self.referenced_by.contains(r) {
                self.referenced_by.push(r.clone());
            }
        }
        for u in &other.unique {
            if !self.unique.contains(u) {
                self.unique.push(u.clone());
            }
        }
        for c in self.columns.iter_mut() {
            c.identity_always |= other
                .columns
                .iter()
                .any(|o| o.name == c.name && o.identity_always);
        }
    }

    /// A plain unique index on exactly `columns` (any order): what an
    /// `INSERT ... ON CONFLICT (columns)` needs.
    pub fn has_arbiter(&self, columns: &[&str]) -> bool {
        self.unique.iter().any(|u| {
            u.plain
                && !u.deferred
                && u.columns.len() == columns.len()
                && columns.iter().all(|c| u.columns.iter().any(|k| k == c))
        })
    }

    /// Whether a unique check could see the order in which rows of one
    /// multi-row UPDATE are changed: some row-by-row unique index or
    /// exclusion constraint does not contain every identity column (one
    /// that does cannot conflict between two rows keeping their keys).
    pub fn order_visible(&self, identity: &[&str]) -> bool {
        self.unique.iter().any(|u| {
            let covers_identity = identity.iter().all(|c| u.columns.iter().any(|k| k == c));
            // Checked at commit, or unable to conflict: invisible.
            let invisible = u.deferred || (u.plain && covers_identity);
            !invisible
        })
    }
}

/// `tables` on a destination, each `None` where it does not exist: four
/// catalog queries however many tables there are.
pub async fn dest_tables(
    conn: &mut Connection,
    tables: &[&TableName],
) -> Result<Vec<Option<DestTable>>> {
    let names = text_array(tables.iter().map(|t| t.quoted()));
    let mut out: Vec<Option<DestTable>> = vec![None; tables.len()];
    let at = |r: &DataRow| -> Result<usize> {
        let i: usize = parse(r.text(0), "table ordinal")?;
        i.checked_sub(1)
            .filter(|i| *i < tables.len())
            .ok_or_else(|| DataSyncError::State(format!("catalog returned table ordinal {i}")))
    };
    let rows = query1(
        conn,
        "SELECT n.i, c.relkind FROM unnest($1::text[]) WITH ORDINALITY n(name, i)
         JOIN pg_class c ON c.oid = to_regclass(n.name) WHERE c.relkind IN ('r', 'p')",
        &names,
    )
    .await?;
    for r in &rows {
        out[at(r)?] = Some(DestTable {
            relkind: r.text(1).and_then(|t| t.chars().next()).unwrap_or('r'),
            ..Default::default()
        });
    }
    let rows = query1(
        conn,
        "SELECT n.i, a.attname, format_type(a.atttypid, a.atttypmod),
                NOT a.attnotnull OR a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '',
                CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END,
                a.attidentity = 'a'
         FROM unnest($1::text[]) WITH ORDINALITY n(name, i)
         JOIN pg_attribute a ON a.attrelid = to_regclass(n.name)
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attnum > 0 AND NOT a.attisdropped
         ORDER BY n.i, a.attnum",
        &names,
    )
    .await?;
    for r in &rows {
        if let Some(t) = out[at(r)?].as_mut() {
            t.columns.push(DestColumn {
                name: r.text(1).unwrap_or("").to_string(),
                type_name: r.text(2).unwrap_or("").to_string(),
                optional: r.text(3) == Some("t"),
                generated: r.text(4).map(str::to_string),
                identity_always: r.text(5) == Some("t"),
            });
        }
    }
    let rows = query1(
        conn,
        "SELECT n.i,
                (SELECT array_agg(a.attname ORDER BY k.n) FROM unnest(x.indkey::int2[]) WITH ORDINALITY k(attnum, n)
                   JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum)::text,
                x.indisunique AND x.indexprs IS NULL AND x.indpred IS NULL,
                NOT x.indimmediate
         FROM unnest($1::text[]) WITH ORDINALITY n(name, i)
         JOIN pg_index x ON x.indrelid = to_regclass(n.name)
         WHERE x.indisunique OR x.indisexclusion",
        &names,
    )
    .await?;
    for r in &rows {
        if let Some(t) = out[at(r)?].as_mut() {
            t.unique.push(UniqueIndex {
                columns: r.text(1).map(parse_name_array).unwrap_or_default(),
                plain: r.text(2) == Some("t"),
                deferred: r.text(3) == Some("t"),
            });
        }
    }
    let rows = query1(
        conn,
        "SELECT DISTINCT n.i, ns.nspname, c.relname
         FROM unnest($1::text[]) WITH ORDINALITY n(name, i)
         JOIN pg_constraint f ON f.confrelid = to_regclass(n.name)
         JOIN pg_class c ON c.oid = f.conrelid JOIN pg_namespace ns ON ns.oid = c.relnamespace
         WHERE f.contype = 'f' AND f.conrelid <> f.confrelid AND f.conparentid = 0",
        &names,
    )
    .await?;
    for r in &rows {
        if let Some(t) = out[at(r)?].as_mut() {
            t.referenced_by.push(TableName {
                schema: r.text(1).unwrap_or("").to_string(),
                name: r.text(2).unwrap_or("").to_string(),
            });
        }
    }
    Ok(out)
}

/// Which of `tables` hold any row, a few hundred tables per query.
pub async fn tables_with_rows(conn: &mut Connection, tables: &[&TableName]) -> Result<Vec<bool>> {
    let mut out = Vec::with_capacity(tables.len());
    for chunk in tables.chunks(250) {
        let probes: Vec<String> = chunk
            .iter()
            .map(|t| format!("EXISTS (SELECT 1 FROM {})", t.quoted()))
            .collect();
        let rows = conn
            .query(&format!("SELECT ARRAY[{}]::text", probes.join(", ")))
            .await?;
        let text = rows.first().and_then(|r| r.text(0)).ok_or_else(|| {
            DataSyncError::State("the row probe of destination tables returned nothing".into())
        })?;
        let flags: Vec<bool> = text
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .map(|f| f == "t")
            .collect();
        if flags.len() != chunk.len() {
            return Err(DataSyncError::State(format!(
                "the row probe of {} destination tables returned {text}",
                chunk.len()
            )));
        }
        out.extend(flags);
    }
    Ok(out)
}

fn parse<T: std::str::FromStr>(text: Option<&str>, what: &str) -> Result<T> {
    text.and_then(|t| t.parse().ok()).ok_or_else(|| {
        DataSyncError::State(format!("catalog returned an unreadable {what}: {text:?}"))
    })
}

/// `{a,"b c"}` (a `name[]` in text form) to its elements.
pub(crate) fn parse_name_array(text: &str) -> Vec<String> {
    let inner = text.trim().trim_start_matches('{').trim_end_matches('}');
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if !inner.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        let t = TableName {
            schema: "public".into(),
            name: "Users".into(),
        };
        assert_eq!(t.quoted(), "\"public\".\"Users\"");
        assert_eq!(t.to_string(), "public.Users");
    }

    #[test]
    fn name_arrays() {
        assert_eq!(parse_name_array("{id,name}"), ["id", "name"]);
        assert_eq!(
            parse_name_array("{id,\"a b\",\"q\\\"x\"}"),
            ["id", "a b", "q\"x"]
        );
        assert!(parse_name_array("{}").is_empty());
    }
}
