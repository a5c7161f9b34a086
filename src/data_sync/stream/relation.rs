//! What pgoutput's Relation messages told us, joined with the plan: per
//! relation OID of one source shard, the table, its columns, and which
//! column decides the destination shard.

use std::sync::Arc;

use pgdog_protocol::pgoutput::{Column, Relation};

use super::super::catalog::TableName;
use super::super::plan::Plan;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelColumn {
    pub name: String,
    /// Part of the replica identity.
    pub key: bool,
    /// The column's type as the catalog names it (`format_type`), for the
    /// casts of batched statements; `None` for a column the plan does not
    /// know (added after the move started).
    pub type_name: Option<String>,
    /// `GENERATED ALWAYS AS IDENTITY` on the destination: inserted with
    /// `OVERRIDING SYSTEM VALUE`, never SET by an UPDATE.
    pub always: bool,
}

#[derive(Debug, Clone)]
pub struct RelationInfo {
    pub oid: u32,
    pub name: TableName,
    /// `schema.table`, shared by every statement origin.
    pub display: Arc<str>,
    pub columns: Vec<RelColumn>,
    /// REPLICA IDENTITY FULL: old rows carry every column.
    pub full: bool,
    /// Index into the plan's tables; `None` when the table is not part of
    /// this move (its changes are ignored).
    pub table: Option<usize>,
    /// Index (in `columns`) of the destination sharding key.
    pub dest_key: Option<usize>,
    /// The destination sharding key is not in the replica identity (and
    /// the identity is not FULL): an old tuple does not say which shard a
    /// row was on.
    pub key_outside_identity: bool,
    /// The destination table is partitioned: addressed without `ONLY`, and
    /// a row by partition and ctid.
    pub partitioned: bool,
    /// A unique check on the destination could see the order in which one
    /// multi-row UPDATE changes rows: updates go one statement per row.
    pub ordered_updates: bool,
}

impl RelationInfo {
    pub fn new(rel: &Relation, plan: &Plan) -> RelationInfo {
        let name = TableName {
            schema: if rel.namespace.is_empty() {
                "pg_catalog".into()
            } else {
                rel.namespace.to_string()
            },
            name: rel.name.to_string(),
        };
        let table = plan.table(&name);
        let known = table.map(|t| &plan.tables[t].table.columns);
        let columns: Vec<RelColumn> = rel
            .columns
            .iter()
            .map(|c| RelColumn {
                name: c.name.to_string(),
                key: c.key,
                type_name: known
                    .and_then(|cols| cols.iter().find(|k| k.name == c.name.as_str()))
                    .map(|k| k.type_name.clone()),
                always: table.is_some_and(|t| {
                    plan.tables[t]
                        .dest_table
                        .columns
                        .iter()
                        .any(|d| d.identity_always && d.name == c.name.as_str())
                }),
            })
            .collect();
        let full = rel.replica_identity == b'f';
        let dest_table = table.map(|t| &plan.tables[t]);
        let dest_key = table
            .and_then(|t| plan.tables[t].dest.as_ref().map(|r| (t, r)))
            .and_then(|(t, r)| {
                let key_name = &plan.tables[t].table.columns[r.column].name;
                columns.iter().position(|c| &c.name == key_name)
            });
        let key_outside_identity = !full && dest_key.is_some_and(|k| !columns[k].key);
        let keys: Vec<&str> = columns
            .iter()
            .filter(|c| c.key)
            .map(|c| c.name.as_str())
            .collect();
        RelationInfo {
            oid: rel.oid,
            display: Arc::from(name.to_string()),
            name,
            full,
            table,
            dest_key,
            key_outside_identity,
            partitioned: dest_table.is_some_and(|t| t.dest_table.relkind == 'p'),
            ordered_updates: dest_table.is_none_or(|t| t.dest_table.order_visible(&keys)),
            columns,
        }
    }

    /// `ONLY ` before a plain table's name (its inheritance children are
    /// tables of their own), nothing for a partitioned one.
    pub fn only(&self) -> &'static str {
        if self.partitioned {
            ""
        } else {
            "ONLY "
        }
    }

    /// Whether an UPDATE writes column `i` with value `c`: not when the
    /// value is an unchanged TOAST pointer, and never an identity column
    /// the destination generates ALWAYS (its value cannot be set; a
    /// change of it is applied as delete and insert).
    pub fn sets(&self, i: usize, c: &Column<'_>) -> bool {
        !matches!(c, Column::Unchanged) && !self.columns.get(i).is_some_and(|rc| rc.always)
    }

    /// Some GENERATED ALWAYS identity column is part of the replica
    /// identity: a change of the identity cannot be an UPDATE.
    pub fn always_in_key(&self) -> bool {
        self.columns
            .iter()
            .any(|c| c.always && (c.key || self.full))
    }

    /// Inserts name identity columns generated ALWAYS.
    pub fn overriding(&self) -> bool {
        self.columns.iter().any(|c| c.always)
    }

    /// Same table, columns, keys and identity: prepared statements still fit.
    pub fn same_shape(&self, other: &RelationInfo) -> bool {
        self.name == other.name
            && self.columns == other.columns
            && self.full == other.full
            && self.partitioned == other.partitioned
            && self.ordered_updates == other.ordered_updates
    }
}
