//! What the catalog says about the objects of a schema dump: which belong
//! to the publication's tables (on the source), which exist already (on a
//! destination), and a signature to tell whether two of them match. Every
//! object is named by pg_dump's own (kind, schema, tag), so entries of the
//! dump are looked up here directly.
//!
//! One query per server, however many tables there are.

use std::collections::HashMap;

use pgdog_protocol::frontend::Format;

use crate::data_sync::catalog::TableName;
use crate::data_sync::error::{DataSyncError, Result};
use crate::net::Connection;

/// pg_dump's name of an object: `("INDEX", Some("public"), "orders_pkey")`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub kind: String,
    pub schema: Option<String>,
    pub tag: String,
}

impl Key {
    pub fn new(kind: &str, schema: Option<&str>, tag: &str) -> Key {
        Key {
            kind: kind.to_string(),
            schema: schema.map(str::to_string),
            tag: tag.to_string(),
        }
    }
}

/// What the catalog knows of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Object {
    /// The table it belongs to (tables, their indexes, constraints,
    /// triggers...).
    pub table: Option<TableName>,
    /// Single letters: `r` the table's replica identity (its primary key
    /// or `REPLICA IDENTITY USING INDEX`), `v` a validated constraint, `P`
    /// on a partitioned table, `p`/`u`/`x`/`f`/`c` the constraint type.
    pub flags: String,
    /// What must be equal for an existing object to match (columns of a
    /// table, labels of an enum, base type of a domain, body of a
    /// function); `None` where existing is enough.
    pub signature: Option<String>,
    /// Size of the table it belongs to, in bytes (to build the largest
    /// indexes first).
    pub bytes: u64,
}

impl Object {
    pub fn has(&self, flag: char) -> bool {
        self.flags.contains(flag)
    }
}

/// Objects of one database, by pg_dump name.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub by_key: HashMap<Key, Object>,
}

impl Objects {
    pub fn get(&self, kind: &str, schema: Option<&str>, tag: &str) -> Option<&Object> {
        self.by_key.get(&Key::new(kind, schema, tag))
    }

    pub fn contains(&self, kind: &str, schema: Option<&str>, tag: &str) -> bool {
        self.get(kind, schema, tag).is_some()
    }
}

/// The query. `$1` is the publication: its tables, the partition trees
/// they are part of, and what those need. NULL: every object of the
/// database (what a destination has). Runs with `search_path = ''`, as
/// pg_dump does, so type names in function tags are qualified the way
/// pg_dump qualifies them.
const OBJECTS_SQL: &str = r#"
WITH RECURSIVE
pub AS (
  SELECT c.oid FROM pg_catalog.pg_publication_tables p
    JOIN pg_catalog.pg_namespace n ON n.nspname = p.schemaname
    JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
   WHERE $1::text IS NOT NULL AND p.pubname = $1::text
  UNION ALL
  SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE $1::text IS NULL AND c.relkind IN ('r', 'p')
     AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgdog')
     AND n.nspname NOT LIKE 'pg\_%'
),
rels AS (
  SELECT oid FROM pub
  UNION SELECT a.relid FROM pub, pg_catalog.pg_partition_ancestors(pub.oid) a
  UNION SELECT t.relid FROM pub, pg_catalog.pg_partition_tree(pub.oid) t
),
rel AS (
  SELECT c.oid, c.relname, c.relkind, c.relispartition, c.relrowsecurity, n.nspname,
         c.relpages::bigint * 8192 AS bytes
    FROM rels JOIN pg_catalog.pg_class c ON c.oid = rels.oid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
),
funcs AS (
  SELECT p.oid, p.proname, p.prokind, p.pronargs, p.proargtypes, p.prorettype, p.prosrc, n.nspname
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgdog') AND n.nspname NOT LIKE 'pg\_%'
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                      WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid AND d.deptype = 'e')
     -- Left out: functions tied to a table or view that is not moved.
     AND ($1::text IS NULL OR NOT EXISTS (
       SELECT 1 FROM pg_catalog.pg_depend d
         LEFT JOIN pg_catalog.pg_type t ON d.refclassid = 'pg_catalog.pg_type'::pg_catalog.regclass AND t.oid = d.refobjid
         JOIN pg_catalog.pg_class k ON k.oid = CASE WHEN d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                                                     THEN d.refobjid ELSE t.typrelid END
        WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid
          AND k.relkind IN ('r', 'p', 'v', 'm', 'f') AND k.oid NOT IN (SELECT oid FROM rels)))
),
types0(t) AS (
  SELECT a.atttypid FROM pg_catalog.pg_attribute a
   WHERE a.attrelid IN (SELECT oid FROM rels) AND a.attnum > 0 AND NOT a.attisdropped
  UNION SELECT unnest(f.proargtypes::oid[]) FROM funcs f
  UNION SELECT f.prorettype FROM funcs f
  UNION SELECT d.refobjid FROM pg_catalog.pg_depend d
   WHERE d.refclassid = 'pg_catalog.pg_type'::pg_catalog.regclass
     AND ((d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass
           AND d.objid IN (SELECT ad.oid FROM pg_catalog.pg_attrdef ad WHERE ad.adrelid IN (SELECT oid FROM rels)))
       OR (d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass
           AND d.objid IN (SELECT co.oid FROM pg_catalog.pg_constraint co WHERE co.conrelid IN (SELECT oid FROM rels))))
  UNION SELECT ty.oid FROM pg_catalog.pg_type ty WHERE $1::text IS NULL
),
tc(t) AS (
  SELECT t FROM types0
  UNION
  SELECT r FROM tc JOIN pg_catalog.pg_type ty ON ty.oid = tc.t
   CROSS JOIN LATERAL unnest(
     ARRAY[ty.typbasetype, ty.typelem,
           coalesce((SELECT rg.rngsubtype FROM pg_catalog.pg_range rg WHERE rg.rngtypid = ty.oid), 0::oid)]
     || ARRAY(SELECT a.atttypid FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class k ON k.oid = a.attrelid
               WHERE a.attrelid = ty.typrelid AND k.relkind = 'c' AND a.attnum > 0 AND NOT a.attisdropped)) r
   WHERE r <> 0
),
seqs AS (
  SELECT d.objid AS oid FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class s ON s.oid = d.objid
   WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
     AND d.deptype IN ('a', 'i') AND s.relkind = 'S' AND d.refobjid IN (SELECT oid FROM rels)
  UNION
  SELECT d.refobjid FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_attrdef ad ON ad.oid = d.objid
    JOIN pg_catalog.pg_class s ON s.oid = d.refobjid
   WHERE d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND s.relkind = 'S'
     AND ad.adrelid IN (SELECT oid FROM rels)
  UNION
  SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE $1::text IS NULL AND c.relkind = 'S'
     AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgdog') AND n.nspname NOT LIKE 'pg\_%'
)
-- The first branch types every column of the union: text, never name, or
-- each tag built below (table, space, constraint) would be cut to 63 bytes
-- and no longer match pg_dump's.
SELECT 'TABLE'::text, nspname::text, relname::text, nspname::text, relname::text,
       CASE WHEN relkind = 'p' THEN 'P' ELSE '' END::text,
       (SELECT string_agg(pg_catalog.quote_ident(a.attname) || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attname)
          FROM pg_catalog.pg_attribute a WHERE a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped)::text,
       bytes::bigint
  FROM rel
UNION ALL
SELECT 'TABLE ATTACH', nspname, relname, nspname, relname, '', NULL, 0 FROM rel WHERE relispartition
UNION ALL
SELECT 'ROW SECURITY', nspname, relname, nspname, relname, '', NULL, 0 FROM rel WHERE relrowsecurity
UNION ALL
SELECT 'PRIMARY KEY', rel.nspname, rel.relname, rel.nspname, rel.relname, '', NULL, 0
  FROM rel WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_constraint co WHERE co.conrelid = rel.oid AND co.contype = 'p')
UNION ALL
SELECT 'DEFAULT', rel.nspname, rel.relname || ' ' || a.attname, rel.nspname, rel.relname, '', NULL, 0
  FROM pg_catalog.pg_attrdef d JOIN rel ON rel.oid = d.adrelid
  JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
UNION ALL
SELECT CASE co.contype WHEN 'f' THEN 'FK CONSTRAINT' WHEN 'c' THEN 'CHECK CONSTRAINT' ELSE 'CONSTRAINT' END,
       rel.nspname, rel.relname || ' ' || co.conname, rel.nspname, rel.relname,
       co.contype::text
         || CASE WHEN co.contype = 'p' OR coalesce(ix.indisreplident, false) THEN 'r' ELSE '' END
         || CASE WHEN co.convalidated THEN 'v' ELSE '' END
         || CASE WHEN rel.relkind = 'p' THEN 'P' ELSE '' END,
       NULL, rel.bytes
  FROM pg_catalog.pg_constraint co JOIN rel ON rel.oid = co.conrelid
  LEFT JOIN pg_catalog.pg_index ix ON ix.indexrelid = co.conindid AND co.contype IN ('p', 'u', 'x')
UNION ALL
SELECT k.kind, n.nspname, ic.relname, rel.nspname, rel.relname,
       CASE WHEN ix.indisprimary OR ix.indisreplident THEN 'r' ELSE '' END
         || CASE WHEN rel.relkind = 'p' THEN 'P' ELSE '' END,
       NULL, rel.bytes
  FROM pg_catalog.pg_index ix JOIN rel ON rel.oid = ix.indrelid
  JOIN pg_catalog.pg_class ic ON ic.oid = ix.indexrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace
  CROSS JOIN LATERAL (VALUES ('INDEX'), (CASE WHEN ic.relispartition THEN 'INDEX ATTACH' END)) k(kind)
 WHERE k.kind IS NOT NULL
UNION ALL
SELECT 'TRIGGER', rel.nspname, rel.relname || ' ' || tg.tgname, rel.nspname, rel.relname, '', NULL, 0
  FROM pg_catalog.pg_trigger tg JOIN rel ON rel.oid = tg.tgrelid WHERE NOT tg.tgisinternal
UNION ALL
SELECT 'RULE', rel.nspname, rel.relname || ' ' || rw.rulename, rel.nspname, rel.relname, '', NULL, 0
  FROM pg_catalog.pg_rewrite rw JOIN rel ON rel.oid = rw.ev_class WHERE rw.rulename <> '_RETURN'
UNION ALL
SELECT 'POLICY', rel.nspname, rel.relname || ' ' || pol.polname, rel.nspname, rel.relname, '', NULL, 0
  FROM pg_catalog.pg_policy pol JOIN rel ON rel.oid = pol.polrelid
UNION ALL
SELECT 'STATISTICS', n.nspname, s.stxname, rel.nspname, rel.relname, '', NULL, 0
  FROM pg_catalog.pg_statistic_ext s JOIN rel ON rel.oid = s.stxrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = s.stxnamespace
UNION ALL
SELECT k.kind, n.nspname, c.relname, o.nspname, o.relname, '', pg_catalog.format_type(s.seqtypid, NULL), 0
  FROM seqs JOIN pg_catalog.pg_class c ON c.oid = seqs.oid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_sequence s ON s.seqrelid = c.oid
  LEFT JOIN LATERAL (
    SELECT ot.relname, otn.nspname FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_class ot ON ot.oid = d.refobjid
      JOIN pg_catalog.pg_namespace otn ON otn.oid = ot.relnamespace
     WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
       AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype IN ('a', 'i')
     LIMIT 1) o ON true
  CROSS JOIN LATERAL (VALUES ('SEQUENCE'),
    (CASE WHEN $1::text IS NOT NULL OR EXISTS (
       SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
          AND d.objid = c.oid AND d.deptype IN ('a', 'i')) THEN 'SEQUENCE OWNED BY' END)) k(kind)
 WHERE k.kind IS NOT NULL
UNION ALL
SELECT CASE ty.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, n.nspname, ty.typname, NULL, NULL, ty.typtype::text,
       CASE ty.typtype
         WHEN 'e' THEN (SELECT string_agg(pg_catalog.quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
                          FROM pg_catalog.pg_enum e WHERE e.enumtypid = ty.oid)
         WHEN 'd' THEN pg_catalog.format_type(ty.typbasetype, ty.typtypmod)
         WHEN 'c' THEN (SELECT string_agg(pg_catalog.quote_ident(a.attname) || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
                          FROM pg_catalog.pg_attribute a WHERE a.attrelid = ty.typrelid AND a.attnum > 0 AND NOT a.attisdropped)
         WHEN 'r' THEN (SELECT pg_catalog.format_type(rg.rngsubtype, NULL) FROM pg_catalog.pg_range rg WHERE rg.rngtypid = ty.oid)
       END, 0
  FROM tc JOIN pg_catalog.pg_type ty ON ty.oid = tc.t
  JOIN pg_catalog.pg_namespace n ON n.oid = ty.typnamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgdog') AND n.nspname NOT LIKE 'pg\_%'
   AND ty.typtype IN ('b', 'c', 'd', 'e', 'r')
   AND (ty.typtype <> 'c' OR (SELECT k.relkind FROM pg_catalog.pg_class k WHERE k.oid = ty.typrelid) = 'c')
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type e WHERE e.typarray = ty.oid)
UNION ALL
SELECT CASE f.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END, f.nspname,
       f.proname || '(' || CASE WHEN f.prokind = 'a' AND f.pronargs = 0 THEN '*'
         ELSE coalesce((SELECT string_agg(pg_catalog.format_type(u.t, NULL), ', ' ORDER BY u.i)
                          FROM unnest(f.proargtypes::oid[]) WITH ORDINALITY u(t, i)), '') END || ')',
       NULL, NULL, '', pg_catalog.md5(f.prosrc) || ' ' || pg_catalog.pg_get_function_result(f.oid), 0
  FROM funcs f
UNION ALL
SELECT 'SCHEMA', NULL, n.nspname, NULL, NULL, '', NULL, 0 FROM pg_catalog.pg_namespace n
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgdog') AND n.nspname NOT LIKE 'pg\_%'
UNION ALL
SELECT 'EXTENSION', NULL, e.extname, NULL, NULL, '', NULL, 0 FROM pg_catalog.pg_extension e
UNION ALL
SELECT 'AVAILABLE EXTENSION', NULL, a.name, NULL, NULL, '', NULL, 0 FROM pg_catalog.pg_available_extensions a
UNION ALL
SELECT 'ROLE', NULL, r.rolname, NULL, NULL, '', NULL, 0 FROM pg_catalog.pg_roles r
UNION ALL
SELECT 'OWNABLE ROLE', NULL, r.rolname, NULL, NULL, '', NULL, 0 FROM pg_catalog.pg_roles r
 WHERE (SELECT u.rolsuper FROM pg_catalog.pg_roles u WHERE u.rolname = current_user)
    OR (pg_catalog.pg_has_role(current_user, r.oid, 'USAGE')
        AND CASE WHEN current_setting('server_version_num')::int >= 160000
                 THEN pg_catalog.pg_has_role(current_user, r.oid, 'SET') ELSE true END)
UNION ALL
SELECT 'PRIVILEGE', NULL, 'MAINTAIN', NULL, NULL, '', NULL, 0
 WHERE current_setting('server_version_num')::int >= 170000
UNION ALL
SELECT 'COLLATION', n.nspname, co.collname, NULL, NULL, '', NULL, 0
  FROM pg_catalog.pg_collation co JOIN pg_catalog.pg_namespace n ON n.oid = co.collnamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgdog') AND n.nspname NOT LIKE 'pg\_%'
"#;

/// The publication's objects on a source (`Some(publication)`), or every
/// object of a destination (`None`).
pub async fn objects(conn: &mut Connection, publication: Option<&str>) -> Result<Objects> {
    conn.execute("BEGIN; SET LOCAL search_path = ''").await?;
    let rows = conn
        .query_params(
            OBJECTS_SQL,
            &[Format::Text],
            [publication.map(str::as_bytes)],
            Format::Text,
        )
        .await;
    conn.execute("COMMIT").await?;
    let rows = rows?;
    let mut out = Objects::default();
    for r in &rows {
        let Some(kind) = r.text(0) else {
            return Err(DataSyncError::State(
                "schema catalog query returned an object without a kind".into(),
            ));
        };
        // pg_dump writes names on one line in its headers.
        let one_line = |s: &str| s.replace(['\n', '\r'], " ");
        let key = Key {
            kind: kind.to_string(),
            schema: r.text(1).map(one_line),
            tag: one_line(r.text(2).unwrap_or("")),
        };
        let table = match (r.text(3), r.text(4)) {
            (Some(s), Some(n)) => Some(TableName {
                schema: s.into(),
                name: n.into(),
            }),
            _ => None,
        };
        let object = Object {
            table,
            flags: r.text(5).unwrap_or("").to_string(),
            signature: r.text(6).map(str::to_string),
            bytes: r.text(7).and_then(|b| b.parse().ok()).unwrap_or(0),
        };
        out.by_key.insert(key, object);
    }
    Ok(out)
}

/// Tables, views and foreign tables of the database that are not among
/// `kept`'s tables: pg_dump leaves them out (and so does not lock them,
/// nor need the right to).
pub async fn other_relations(
    conn: &mut Connection,
    kept: &Objects,
) -> Result<Vec<(TableName, &'static str)>> {
    let rows = conn
        .query(
            "SELECT n.nspname, c.relname, c.relkind FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
                AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgdog')
                AND n.nspname NOT LIKE 'pg\\_%'",
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let (schema, name) = (r.text(0)?, r.text(1)?);
            let kind = match r.text(2)? {
                "v" => "VIEW",
                "m" => "MATERIALIZED VIEW",
                "f" => "FOREIGN TABLE",
                _ => "TABLE",
            };
            (!kept.contains("TABLE", Some(schema), name)).then(|| {
                (
                    TableName {
                        schema: schema.into(),
                        name: name.into(),
                    },
                    kind,
                )
            })
        })
        .collect())
}
