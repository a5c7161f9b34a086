//! The plan of a move: which tables, how each is split on the source and on
//! the destination, and therefore which source shards copy it and which
//! destination shards receive each row.

use crate::config::{Config, RuleOrigin, Topology};
use crate::sharding::{DataType, Function, Rule, Sharder, Value};

use super::catalog::{quote_ident, quote_literal, DestTable, PublishedTable, TableName};
use super::error::Result;

/// How rows of a table are split across one cluster's shards.
#[derive(Debug, Clone)]
pub struct Routing {
    pub sharder: Sharder,
    /// Index of the key column in [`PublishedTable::columns`]: found by
    /// name in the table's own columns (a partition's may sit in another
    /// order than its parent's).
    pub column: usize,
    /// Which rule it comes from (the table's own, an ancestor's, a
    /// column rule).
    pub origin: RuleOrigin,
}

impl Routing {
    /// The shard of one row of a binary `COPY` of the published columns.
    #[inline]
    pub fn binary_row(
        &self,
        row: &pgdog_protocol::copy_binary::RowRef<'_>,
    ) -> std::result::Result<usize, crate::sharding::ShardingError> {
        self.sharder.shard(
            row.field(self.column).flatten(),
            crate::sharding::Format::Binary,
        )
    }

    /// The shard of one row (a line) of a text `COPY`.
    #[inline]
    pub fn text_row(
        &self,
        row: &[u8],
    ) -> std::result::Result<usize, crate::sharding::ShardingError> {
        let key = pgdog_protocol::copy_text::field(row, self.column).flatten();
        self.sharder
            .shard(key.as_deref(), crate::sharding::Format::Text)
    }
}

/// One published table and its routing.
#[derive(Debug, Clone)]
pub struct TablePlan {
    /// As the first source shard sees it (preflight checks the others agree).
    pub table: PublishedTable,
    /// Sharding on the destination; `None` sends every row to every
    /// destination shard (an omnisharded table, or a single shard).
    pub dest: Option<Routing>,
    /// Sharding on the source; `None` when the source has one shard or the
    /// table is omnisharded there (identical on every source shard, so it is
    /// copied and streamed from source shard 0 only).
    pub source: Option<Routing>,
    /// The table as destination shard 0 has it (preflight checks every
    /// shard has the published columns).
    pub dest_table: DestTable,
}

impl TablePlan {
    pub fn name(&self) -> &TableName {
        &self.table.name
    }

    /// The replica identity's columns (every column for FULL).
    pub fn identity_columns(&self) -> Vec<&str> {
        self.table
            .columns
            .iter()
            .filter(|c| c.identity)
            .map(|c| c.name.as_str())
            .collect()
    }

    /// Sharded on the destination by a column the old tuple of an UPDATE
    /// or DELETE does not carry (not in the replica identity): the shard a
    /// row leaves is not known from the change itself.
    pub fn key_outside_identity(&self) -> bool {
        self.dest
            .as_ref()
            .is_some_and(|r| !self.table.columns[r.column].identity)
    }

    /// `ONLY ` for a plain table (its inheritance children are tables of
    /// their own), nothing for a partitioned one (its rows live in the
    /// partitions).
    pub fn only(&self) -> &'static str {
        if self.dest_table.relkind == 'p' {
            ""
        } else {
            "ONLY "
        }
    }

    /// `FROM ... [WHERE ...]` of this table on a source (`source`: its
    /// relkind and the publication's row filter apply) or a destination,
    /// with extra `conds`.
    pub fn from_clause(&self, source: bool, mut conds: Vec<String>) -> String {
        let t = &self.table;
        // ONLY: a plain table's inheritance children are separate tables; a
        // partitioned root must not have it (its rows live in the partitions).
        let only = match (source, t.relkind) {
            (true, 'p') => "",
            (true, _) => "ONLY ",
            (false, _) => self.only(),
        };
        if source {
            if let Some(filter) = &t.row_filter {
                conds.push(format!("({filter})"));
            }
        }
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        format!("FROM {only}{}{filter}", t.name.quoted())
    }

    /// `COPY (SELECT <published columns> ...) TO STDOUT` of this table (see
    /// [`TablePlan::from_clause`]); binary when every column's binary form
    /// is portable.
    pub fn copy_out_sql(&self, source: bool, conds: Vec<String>) -> String {
        let format = if self.table.binary_safe() {
            " (FORMAT binary)"
        } else {
            ""
        };
        format!(
            "COPY (SELECT {} {}) TO STDOUT{format}",
            self.table.column_list(),
            self.from_clause(source, conds)
        )
    }

    /// How its rows are placed on the destination, as recorded with its
    /// copy: `whole`, or the function, key column and type. Compared on a
    /// rerun, so rows copied under one routing are never streamed under
    /// another.
    pub fn routing_key(&self) -> String {
        match &self.dest {
            None => "whole".to_string(),
            Some(r) => {
                let function = match &r.sharder.function {
                    Function::Hash => "hash",
                    Function::Mapping(_) => "mapping",
                };
                format!(
                    "{function} {} {} of {}",
                    quote_ident(&self.table.columns[r.column].name),
                    r.sharder.data_type,
                    r.sharder.shards
                )
            }
        }
    }

    /// Whether source shard `s` contributes rows and changes of this table.
    pub fn from_source(&self, s: usize) -> bool {
        self.source.is_some() || s == 0
    }

    /// SQL condition selecting, on a destination, the rows that came from
    /// source shard `s` of `n`; `None` when every row did. Used to remove a
    /// partial copy and to apply a TRUNCATE of one source shard.
    pub fn source_rows_predicate(&self, s: usize, n: usize) -> Option<String> {
        let routing = self.source.as_ref()?;
        Some(shard_predicate(
            &routing.sharder,
            &self.table.columns[routing.column].name,
            s,
            n,
        ))
    }
}

/// SQL true for the rows whose `column` the sharder sends to shard `s` of
/// `n`, computed by Postgres itself.
pub fn shard_predicate(sharder: &Sharder, column: &str, s: usize, n: usize) -> String {
    let col = quote_ident(column);
    match &sharder.function {
        Function::Hash => {
            // Postgres computes the very same hash for a hash-partitioned
            // table; pgdog's state schema has one such (empty) parent per
            // key type. Integers of any width hash alike as bigint.
            let (parent, cast) = match sharder.data_type {
                DataType::Bigint | DataType::Integer | DataType::Smallint => {
                    ("pgdog.hash_bigint", "bigint")
                }
                DataType::Text | DataType::Varchar => ("pgdog.hash_text", "text"),
                DataType::Uuid => ("pgdog.hash_uuid", "uuid"),
            };
            format!("satisfies_hash_partition('{parent}'::regclass, {n}, {s}, {col}::{cast})")
        }
        Function::Mapping(mapping) => {
            let mut case = String::from("CASE");
            let mut default = None;
            for rule in mapping.rules() {
                match rule {
                    Rule::List { values, shard } => {
                        let list: Vec<String> = values.iter().map(sql_literal).collect();
                        case.push_str(&format!(
                            " WHEN {col} IN ({}) THEN {shard}",
                            list.join(", ")
                        ));
                    }
                    Rule::Range { start, end, shard } => {
                        let mut conds = Vec::new();
                        if let Some(v) = start {
                            conds.push(format!("{col}{} >= {}", collate(v), sql_literal(v)));
                        }
                        if let Some(v) = end {
                            conds.push(format!("{col}{} < {}", collate(v), sql_literal(v)));
                        }
                        case.push_str(&format!(" WHEN {} THEN {shard}", conds.join(" AND ")));
                    }
                    Rule::Default { shard } => default = Some(*shard),
                }
            }
            match default {
                Some(d) => case.push_str(&format!(" ELSE {d} END = {s}")),
                None => case.push_str(&format!(" END = {s}")),
            }
            format!("coalesce({case}, false)")
        }
    }
}

/// Text ranges compare bytewise, as the `C` collation does.
fn collate(v: &Value) -> &'static str {
    match v {
        Value::Text(_) => " COLLATE \"C\"",
        _ => "",
    }
}

fn sql_literal(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::Text(t) => quote_literal(t),
        Value::Uuid(_) => format!("{}::uuid", quote_literal(v.to_string().trim_matches('\''))),
    }
}

impl Routing {
    /// `customer_id by hash, from the rule on public.payment`.
    pub fn describe(&self, table: &PublishedTable) -> String {
        let column = &table.columns[self.column].name;
        let function = match &self.sharder.function {
            Function::Hash => "hash",
            Function::Mapping(_) => "list/range mapping",
        };
        let origin = match &self.origin {
            RuleOrigin::Table => "its own rule".to_string(),
            RuleOrigin::Ancestor(t) => format!("the rule on {t}, a partitioned table above it"),
            RuleOrigin::Column => format!("the rule for every table with a column \"{column}\""),
        };
        format!("sharded by \"{column}\" ({function}, {origin})")
    }
}

/// How one table's rows travel, for the operator to check before anything
/// is copied: the data-sync output and `SHOW ROUTING`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRouting {
    pub table: TableName,
    /// How the source shards hold it.
    pub source: String,
    /// Where its rows go on the destination.
    pub dest: String,
    /// Heap size on source shard 0, bytes.
    pub bytes: u64,
    /// Copied whole to every one of several destination shards and larger
    /// than `[general] omnisharded_warning_size`.
    pub warning: Option<String>,
}

impl TablePlan {
    /// Its routing, in words (see [`TableRouting`]).
    pub fn routing(
        &self,
        source_shards: usize,
        dest_shards: usize,
        warn_bytes: u64,
    ) -> TableRouting {
        let t = &self.table;
        let source = match (&self.source, source_shards) {
            (Some(r), _) => r.describe(t),
            (None, 1) => "one source shard".to_string(),
            (None, n) => format!("the same on each of the {n} source shards: read from shard 0"),
        };
        let dest = match (&self.dest, dest_shards) {
            (Some(r), _) => r.describe(t),
            (None, 1) => "one destination shard: every row".to_string(),
            (None, m) => format!(
                "copied whole to every one of the {m} destination shards (no sharding rule)"
            ),
        };
        let warning = (self.dest.is_none() && dest_shards > 1 && t.bytes > warn_bytes).then(|| {
            format!(
                "table {} ({}) has no sharding rule, so all of it is copied to each of the {dest_shards} destination shards ({} in all); if it should be split, add a [[sharded_tables]] entry naming it (or a partitioned table above it) before the copy starts",
                t.name,
                human_bytes(t.bytes),
                human_bytes(t.bytes.saturating_mul(dest_shards as u64))
            )
        });
        TableRouting {
            table: t.name.clone(),
            source,
            dest,
            bytes: t.bytes,
            warning,
        }
    }
}

/// `1.5 GB`, `200 MB`, `12 kB`.
pub fn human_bytes(n: u64) -> String {
    let units = ["bytes", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Everything a move needs to know up front.
#[derive(Debug, Clone)]
pub struct Plan {
    pub slot: String,
    pub publication: String,
    pub source: Topology,
    pub dest: Topology,
    pub tables: Vec<TablePlan>,
}

impl Plan {
    pub fn source_shards(&self) -> usize {
        self.source.shards.len()
    }

    pub fn dest_shards(&self) -> usize {
        self.dest.shards.len()
    }

    /// Find a table by name.
    pub fn table(&self, name: &TableName) -> Option<usize> {
        self.tables.iter().position(|t| &t.table.name == name)
    }

    /// Every table's routing, in words.
    pub fn routing(&self, warn_bytes: u64) -> Vec<TableRouting> {
        let (n, m) = (self.source_shards(), self.dest_shards());
        self.tables
            .iter()
            .map(|t| t.routing(n, m, warn_bytes))
            .collect()
    }
}

/// Routing of `table` on a cluster of `shards` shards named `cluster`.
pub fn routing(
    config: &Config,
    cluster: &str,
    shards: usize,
    table: &PublishedTable,
) -> Result<Option<Routing>> {
    if shards <= 1 {
        return Ok(None);
    }
    let columns = table.column_names();
    let Some(rule) =
        config.sharder_for(cluster, &table.name, &table.ancestors, &columns, shards)?
    else {
        return Ok(None);
    };
    let column = rule.column;
    let Some(index) = table.columns.iter().position(|c| c.name == column) else {
        return Err(super::error::DataSyncError::preflight(
            format!(
                "table {} is sharded on column \"{column}\" in cluster \"{cluster}\", but the publication does not publish that column",
                table.name
            ),
            format!(
                "add \"{column}\" to the publication's column list for {}, or fix the sharded_tables entry",
                table.name
            ),
        ));
    };
    Ok(Some(Routing {
        sharder: rule.sharder,
        column: index,
        origin: rule.origin,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data_sync::catalog::Column;
    use crate::sharding::Mapping;

    fn table() -> PublishedTable {
        PublishedTable {
            oid: 1,
            name: TableName {
                schema: "public".into(),
                name: "t".into(),
            },
            relkind: 'r',
            replica_identity: 'd',
            columns: vec![Column {
                name: "k".into(),
                type_oid: 25,
                type_name: "text".into(),
                identity: true,
                not_null: true,
                binary_safe: true,
                c_collation: true,
            }],
            row_filter: None,
            estimated_rows: 0,
            bytes: 0,
            leaves_without_identity: vec![],
            generated: vec![],
            ancestors: vec![],
            leaves: vec![],
        }
    }

    #[test]
    fn predicates() {
        let mut plan = TablePlan {
            table: table(),
            dest: None,
            source: None,
            dest_table: DestTable::default(),
        };
        assert_eq!(plan.source_rows_predicate(1, 3), None);
        assert!(plan.from_source(0) && !plan.from_source(1));
        plan.source = Some(Routing {
            sharder: Sharder::new("t", "k", DataType::Text, Function::Hash, 3).unwrap(),
            column: 0,
            origin: RuleOrigin::Table,
        });
        assert_eq!(
            plan.source_rows_predicate(1, 3).unwrap(),
            "satisfies_hash_partition('pgdog.hash_text'::regclass, 3, 1, \"k\"::text)"
        );
        let mapping = Mapping::new(vec![
            Rule::List {
                values: vec![Value::Text("it's".into())],
                shard: 0,
            },
            Rule::Range {
                start: Some(Value::Text("m".into())),
                end: None,
                shard: 1,
            },
            Rule::Default { shard: 2 },
        ])
        .unwrap();
        plan.source = Some(Routing {
            sharder: Sharder::new("t", "k", DataType::Text, Function::Mapping(mapping), 3).unwrap(),
            column: 0,
            origin: RuleOrigin::Table,
        });
        assert_eq!(
            plan.source_rows_predicate(2, 3).unwrap(),
            "coalesce(CASE WHEN \"k\" IN ('it''s') THEN 0 WHEN \"k\" COLLATE \"C\" >= 'm' THEN 1 ELSE 2 END = 2, false)"
        );
    }
}
