//! The SQL of each statement shape the apply side prepares: single-row
//! INSERT, UPDATE and DELETE by replica identity, their REPLICA IDENTITY
//! FULL forms, and multi-row batches (one statement for a run of same-shape
//! changes, so the destination starts its executor once, not per row).

use std::hash::Hash;

use super::super::catalog::quote_ident;
use super::relation::RelationInfo;

/// The shape of a prepared statement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShapeKey {
    pub relation: u32,
    pub kind: Kind,
    /// Which relation columns are SET (updates) or matched (full-identity
    /// deletes and updates); empty for the others.
    pub mask: Vec<bool>,
    /// Rows per statement: 1, or a batch size.
    pub rows: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Insert,
    /// Insert, or update the row with the same identity: an UPDATE whose
    /// row may have come from another shard (sharding key outside the
    /// replica identity).
    Upsert,
    Update,
    Delete,
    /// Update matched on every column (REPLICA IDENTITY FULL).
    UpdateFull,
    DeleteFull,
}

/// Parameters per row of a shape: every column for INSERT; SET columns
/// then key columns for UPDATE; key columns for DELETE.
pub fn params_per_row(rel: &RelationInfo, key: &ShapeKey) -> usize {
    let keys = rel.columns.iter().filter(|c| c.key).count();
    match key.kind {
        Kind::Insert | Kind::Upsert => rel.columns.len(),
        Kind::Update => key.mask.iter().filter(|m| **m).count() + keys,
        Kind::Delete => keys,
        Kind::UpdateFull | Kind::DeleteFull => key.mask.iter().filter(|m| **m).count(),
    }
}

/// `$n::type`, or `$n` where the type is not known.
fn cast(n: usize, type_name: Option<&str>) -> String {
    match type_name {
        Some(t) => format!("${n}::{t}"),
        None => format!("${n}"),
    }
}

/// `INSERT INTO t (a, b) [OVERRIDING SYSTEM VALUE] VALUES ($1, $2), ...`
fn insert_sql(rel: &RelationInfo, rows: usize) -> String {
    let names: Vec<String> = rel.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let per = rel.columns.len();
    let tuples: Vec<String> = (0..rows)
        .map(|r| {
            let params: Vec<String> = (1..=per).map(|i| format!("${}", r * per + i)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    let overriding = if rel.overriding() {
        " OVERRIDING SYSTEM VALUE"
    } else {
        ""
    };
    format!(
        "INSERT INTO {} ({}){overriding} VALUES {}",
        rel.name.quoted(),
        names.join(", "),
        tuples.join(", ")
    )
}

/// SQL of a shape. Parameters follow [`params_per_row`], row after row.
pub fn statement_sql(rel: &RelationInfo, key: &ShapeKey) -> String {
    let table = format!("{}{}", rel.only(), rel.name.quoted());
    let rows = key.rows.max(1) as usize;
    match key.kind {
        Kind::Insert => insert_sql(rel, rows),
        Kind::Upsert => upsert_sql(rel, rows),
        Kind::Update if rows == 1 => update_one_sql(rel, key, &table),
        Kind::Update => update_many_sql(rel, key, &table, rows),
        Kind::Delete if rows == 1 => {
            let cond: Vec<String> = rel
                .columns
                .iter()
                .filter(|c| c.key)
                .enumerate()
                .map(|(i, c)| format!("{} = ${}", quote_ident(&c.name), i + 1))
                .collect();
            format!("DELETE FROM {table} WHERE {}", cond.join(" AND "))
        }
        Kind::Delete => delete_many_sql(rel, &table, rows),
        Kind::UpdateFull | Kind::DeleteFull => full_identity_sql(rel, key, &table),
    }
}

type Col = super::relation::RelColumn;

/// An insert that updates the row its key already names.
fn upsert_sql(rel: &RelationInfo, rows: usize) -> String {
    let cols = &rel.columns;
    let keys: Vec<String> = cols
        .iter()
        .filter(|c| c.key)
        .map(|c| quote_ident(&c.name))
        .collect();
    let set: Vec<String> = cols
        .iter()
        .filter(|c| !c.key && !c.always)
        .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(&c.name)))
        .collect();
    let action = if set.is_empty() {
        "NOTHING".to_string()
    } else {
        format!("UPDATE SET {}", set.join(", "))
    };
    format!(
        "{} ON CONFLICT ({}) DO {action}",
        insert_sql(rel, rows),
        keys.join(", ")
    )
}

/// One row: the changed columns set, the key matched.
fn update_one_sql(rel: &RelationInfo, key: &ShapeKey, table: &str) -> String {
    let mut n = 0;
    let mut set = Vec::new();
    for (c, on) in rel.columns.iter().zip(&key.mask) {
        if *on {
            n += 1;
            set.push(format!("{} = ${n}", quote_ident(&c.name)));
        }
    }
    let mut cond = Vec::new();
    for c in rel.columns.iter().filter(|c| c.key) {
        n += 1;
        cond.push(format!("{} = ${n}", quote_ident(&c.name)));
    }
    format!(
        "UPDATE {table} SET {} WHERE {}",
        set.join(", "),
        cond.join(" AND ")
    )
}

/// `(VALUES ($1::ty, $2::ty), ...)` of `rows` rows of `cols`, and its
/// aliases `p1, p2, ...`: the first row's casts type the list.
fn values_list(cols: &[&Col], rows: usize) -> (String, String) {
    let per = cols.len();
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let params: Vec<String> = cols
                .iter()
                .enumerate()
                .map(|(i, c)| cast(r * per + i + 1, c.type_name.as_deref()))
                .collect();
            format!("({})", params.join(", "))
        })
        .collect();
    let aliases: Vec<String> = (1..=per).map(|i| format!("p{i}")).collect();
    (values.join(", "), aliases.join(", "))
}

/// Many rows: `UPDATE t SET a = v.p1 FROM (VALUES ...) v(p1, p2) WHERE
/// t.k = v.p2`.
fn update_many_sql(rel: &RelationInfo, key: &ShapeKey, table: &str, rows: usize) -> String {
    let cols = &rel.columns;
    let set_cols: Vec<&Col> = cols
        .iter()
        .zip(&key.mask)
        .filter(|(_, on)| **on)
        .map(|(c, _)| c)
        .collect();
    let key_cols: Vec<&Col> = cols.iter().filter(|c| c.key).collect();
    let all: Vec<&Col> = set_cols.iter().chain(&key_cols).copied().collect();
    let (values, aliases) = values_list(&all, rows);
    let set: Vec<String> = set_cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = v.p{}", quote_ident(&c.name), i + 1))
        .collect();
    let cond: Vec<String> = key_cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("t.{} = v.p{}", quote_ident(&c.name), set_cols.len() + i + 1))
        .collect();
    format!(
        "UPDATE {table} AS t SET {} FROM (VALUES {values}) AS v({aliases}) WHERE {}",
        set.join(", "),
        cond.join(" AND ")
    )
}

/// Many rows: `DELETE FROM t USING (VALUES ...) v(p1) WHERE t.k = v.p1`.
fn delete_many_sql(rel: &RelationInfo, table: &str, rows: usize) -> String {
    let key_cols: Vec<&Col> = rel.columns.iter().filter(|c| c.key).collect();
    let (values, aliases) = values_list(&key_cols, rows);
    let cond: Vec<String> = key_cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("t.{} = v.p{}", quote_ident(&c.name), i + 1))
        .collect();
    format!(
        "DELETE FROM {table} AS t USING (VALUES {values}) AS v({aliases}) WHERE {}",
        cond.join(" AND ")
    )
}

/// REPLICA IDENTITY FULL: touch exactly one row equal to the old one.
fn full_identity_sql(rel: &RelationInfo, key: &ShapeKey, table: &str) -> String {
    let cols = &rel.columns;
    let (set_mask, match_mask) = key.mask.split_at(cols.len().min(key.mask.len()));
    let mut n = 0;
    let mut set = Vec::new();
    if key.kind == Kind::UpdateFull {
        for (c, on) in cols.iter().zip(set_mask) {
            if *on {
                n += 1;
                set.push(format!("{} = ${n}", quote_ident(&c.name)));
            }
        }
    }
    let mut cond = Vec::new();
    for (c, on) in cols.iter().zip(match_mask) {
        if *on {
            n += 1;
            cond.push(format!(
                "{} IS NOT DISTINCT FROM ${n}",
                quote_ident(&c.name)
            ));
        }
    }
    let cond = cond.join(" AND ");
    if rel.partitioned {
        // A ctid is unique within one partition only: the row is its
        // partition (tableoid) and its ctid there.
        let pick = format!(
            "WITH pgdog_row AS (SELECT tableoid AS o, ctid AS c FROM {table} WHERE {cond} LIMIT 1)"
        );
        let at = "pgdog_t.tableoid = pgdog_row.o AND pgdog_t.ctid = pgdog_row.c";
        if key.kind == Kind::UpdateFull {
            format!(
                "{pick} UPDATE {table} AS pgdog_t SET {} FROM pgdog_row WHERE {at}",
                set.join(", ")
            )
        } else {
            format!("{pick} DELETE FROM {table} AS pgdog_t USING pgdog_row WHERE {at}")
        }
    } else {
        let pick = format!("SELECT ctid FROM {table} WHERE {cond} LIMIT 1");
        if key.kind == Kind::UpdateFull {
            format!(
                "UPDATE {table} SET {} WHERE ctid = ({pick})",
                set.join(", ")
            )
        } else {
            format!("DELETE FROM {table} WHERE ctid = ({pick})")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::data_sync::catalog::TableName;
    use crate::data_sync::stream::relation::RelColumn;

    fn rel() -> RelationInfo {
        RelationInfo {
            oid: 1,
            name: TableName {
                schema: "public".into(),
                name: "t".into(),
            },
            display: Arc::from("public.t"),
            columns: vec![
                RelColumn {
                    name: "id".into(),
                    key: true,
                    type_name: Some("bigint".into()),
                    always: false,
                },
                RelColumn {
                    name: "v".into(),
                    key: false,
                    type_name: Some("text".into()),
                    always: false,
                },
            ],
            full: false,
            table: Some(0),
            dest_key: Some(0),
            key_outside_identity: false,
            partitioned: false,
            ordered_updates: false,
        }
    }

    fn key(kind: Kind, mask: Vec<bool>, rows: u16) -> ShapeKey {
        ShapeKey {
            relation: 1,
            kind,
            mask,
            rows,
        }
    }

    #[test]
    fn single_and_batched_shapes() {
        let r = rel();
        assert_eq!(
            statement_sql(&r, &key(Kind::Insert, vec![], 2)),
            "INSERT INTO \"public\".\"t\" (\"id\", \"v\") VALUES ($1, $2), ($3, $4)"
        );
        assert_eq!(
            statement_sql(&r, &key(Kind::Update, vec![false, true], 1)),
            "UPDATE ONLY \"public\".\"t\" SET \"v\" = $1 WHERE \"id\" = $2"
        );
        assert_eq!(
            statement_sql(&r, &key(Kind::Update, vec![false, true], 2)),
            "UPDATE ONLY \"public\".\"t\" AS t SET \"v\" = v.p1 FROM (VALUES ($1::text, $2::bigint), ($3::text, $4::bigint)) AS v(p1, p2) WHERE t.\"id\" = v.p2"
        );
        assert_eq!(
            statement_sql(&r, &key(Kind::Delete, vec![], 3)),
            "DELETE FROM ONLY \"public\".\"t\" AS t USING (VALUES ($1::bigint), ($2::bigint), ($3::bigint)) AS v(p1) WHERE t.\"id\" = v.p1"
        );
        assert_eq!(
            params_per_row(&r, &key(Kind::Update, vec![true, true], 9)),
            3
        );
        assert_eq!(params_per_row(&r, &key(Kind::Upsert, vec![], 9)), 2);
    }

    #[test]
    fn identity_upsert_and_partitions() {
        let mut r = rel();
        r.columns[0].always = true;
        assert_eq!(
            statement_sql(&r, &key(Kind::Upsert, vec![], 2)),
            "INSERT INTO \"public\".\"t\" (\"id\", \"v\") OVERRIDING SYSTEM VALUE VALUES ($1, $2), ($3, $4) ON CONFLICT (\"id\") DO UPDATE SET \"v\" = EXCLUDED.\"v\""
        );
        r.partitioned = true;
        assert_eq!(
            statement_sql(&r, &key(Kind::DeleteFull, vec![false, false, true, true], 1)),
            "WITH pgdog_row AS (SELECT tableoid AS o, ctid AS c FROM \"public\".\"t\" WHERE \"id\" IS NOT DISTINCT FROM $1 AND \"v\" IS NOT DISTINCT FROM $2 LIMIT 1) DELETE FROM \"public\".\"t\" AS pgdog_t USING pgdog_row WHERE pgdog_t.tableoid = pgdog_row.o AND pgdog_t.ctid = pgdog_row.c"
        );
        r.partitioned = false;
        assert_eq!(
            statement_sql(&r, &key(Kind::DeleteFull, vec![false, false, true, true], 1)),
            "DELETE FROM ONLY \"public\".\"t\" WHERE ctid = (SELECT ctid FROM ONLY \"public\".\"t\" WHERE \"id\" IS NOT DISTINCT FROM $1 AND \"v\" IS NOT DISTINCT FROM $2 LIMIT 1)"
        );
        assert_eq!(params_per_row(&r, &key(Kind::Delete, vec![], 9)), 1);
    }
}
