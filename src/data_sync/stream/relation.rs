//! What pgoutput's Relation messages told us, joined with the plan: per
//! relation OID of one source shard, the table, its columns, and which
//! column decides the destination shard.

use std::sync::Arc;

use pgdog_protocol::pgoutput::Relation;

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
            })
            .collect();
        let dest_key = table
            .and_then(|t| plan.tables[t].dest.as_ref().map(|r| (t, r)))
            .and_then(|(t, r)| {
                let key_name = &plan.tables[t].table.columns[r.column].name;
                columns.iter().position(|c| &c.name == key_name)
            });
        RelationInfo {
            oid: rel.oid,
            display: Arc::from(name.to_string()),
            name,
            columns,
            full: rel.replica_identity == b'f',
            table,
            dest_key,
        }
    }

    /// Same table, columns, keys and identity: prepared statements still fit.
    pub fn same_shape(&self, other: &RelationInfo) -> bool {
        self.name == other.name && self.columns == other.columns && self.full == other.full
    }
}
