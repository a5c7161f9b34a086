//! Whether the application can work on the destination once it is
//! switched. Every privilege a freeze role has on the source (through its
//! own grants, its memberships or PUBLIC) on the moved tables, the
//! partitioned tables above them, their schemas and the sequences they use,
//! it must have on every destination shard too. Otherwise the cutover
//! would freeze the source and hand the application a cluster where its
//! first write fails. Where a role owns a table on the source, it must
//! own it on the destination too (the application's migrations alter
//! it). Schema sync carries owners and grants only onto what it creates,
//! and only to roles a shard had then. Tables made by hand, and grants
//! changed since, are caught here, with the statements to run.

use std::collections::{BTreeMap, BTreeSet};

use super::super::catalog::{quote_ident, text_array, TableName};
use super::super::error::{Problem, Result};
use crate::net::Connection;

/// One privilege of one role on one object, as GRANT spells it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Privilege {
    pub role: String,
    /// `TABLE`, `SEQUENCE` or `SCHEMA`.
    pub kind: String,
    /// Quoted: `"public"."orders"`, or `"public"` for a schema.
    pub object: String,
    pub privilege: String,
}

/// The effective privileges of roles `$1` on tables `$2` (quoted names)
/// and what comes with them: their partitioned ancestors, their schemas,
/// and the sequences they own or name in a default; and `OWNER` where a
/// role owns a table (its migrations need that). A table or role the
/// server lacks gives no rows.
const PRIVILEGES_SQL: &str = "
WITH roles AS (
    SELECT oid, rolname FROM pg_roles WHERE rolname = ANY ($1::text[])
), named AS (
    SELECT to_regclass(t.name) AS oid FROM unnest($2::text[]) AS t(name)
), tabs AS (
    -- pg_partition_ancestors gives nothing for a table outside a tree.
    SELECT oid FROM named WHERE oid IS NOT NULL
    UNION
    SELECT a.relid FROM named, LATERAL pg_partition_ancestors(named.oid) AS a
), seqs AS (
    SELECT d.objid AS oid
    FROM pg_depend d JOIN tabs t ON d.refobjid = t.oid
    WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
    UNION
    SELECT d.refobjid
    FROM pg_attrdef ad JOIN tabs t ON ad.adrelid = t.oid
    JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
), objects AS (
    SELECT 'TABLE' AS kind, c.oid, n.nspname::text AS schema, c.relname::text AS name,
           ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'] AS privileges
    FROM tabs JOIN pg_class c ON c.oid = tabs.oid JOIN pg_namespace n ON n.oid = c.relnamespace
    UNION ALL
    SELECT 'SEQUENCE', c.oid, n.nspname::text, c.relname::text,
           ARRAY['USAGE', 'SELECT', 'UPDATE']
    FROM seqs JOIN pg_class c ON c.oid = seqs.oid AND c.relkind = 'S' JOIN pg_namespace n ON n.oid = c.relnamespace
    UNION ALL
    SELECT DISTINCT 'SCHEMA', n.oid, n.nspname::text, NULL::text, ARRAY['USAGE']
    FROM tabs JOIN pg_class c ON c.oid = tabs.oid JOIN pg_namespace n ON n.oid = c.relnamespace
)
SELECT r.rolname, o.kind, o.schema, o.name, p.privilege
FROM roles r CROSS JOIN objects o CROSS JOIN LATERAL unnest(o.privileges) AS p(privilege)
WHERE CASE o.kind
        WHEN 'TABLE' THEN has_table_privilege(r.oid, o.oid, p.privilege)
        WHEN 'SEQUENCE' THEN has_sequence_privilege(r.oid, o.oid, p.privilege)
        ELSE has_schema_privilege(r.oid, o.oid, p.privilege)
      END
UNION ALL
SELECT r.rolname, 'TABLE', o.schema, o.name, 'OWNER'
FROM roles r JOIN objects o ON o.kind = 'TABLE' JOIN pg_class c ON c.oid = o.oid AND c.relowner = r.oid";

/// What `roles` may do on one server with `tables` and what comes with
/// them.
pub async fn of(
    conn: &mut Connection,
    roles: &[String],
    tables: &[TableName],
) -> Result<BTreeSet<Privilege>> {
    let roles = text_array(roles.iter().cloned());
    let tables = text_array(tables.iter().map(TableName::quoted));
    let rows = conn.query_text(PRIVILEGES_SQL, &[&roles, &tables]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            // Quoted here, not by the server: servers of other versions
            // reserve other words.
            let schema = quote_ident(r.text(2).unwrap_or(""));
            Privilege {
                role: r.text(0).unwrap_or("").to_string(),
                kind: r.text(1).unwrap_or("").to_string(),
                object: match r.text(3) {
                    Some(name) => format!("{schema}.{}", quote_ident(name)),
                    None => schema,
                },
                privilege: r.text(4).unwrap_or("").to_string(),
            }
        })
        .collect())
}

/// The statements that give what `missing` lists: one GRANT per role and
/// object, and ALTER ... OWNER TO for ownership.
pub fn grants(missing: &BTreeSet<Privilege>) -> Vec<String> {
    let mut by_object: BTreeMap<(&str, &str, &str), Vec<&str>> = BTreeMap::new();
    for p in missing {
        by_object
            .entry((&p.role, &p.kind, &p.object))
            .or_default()
            .push(&p.privilege);
    }
    by_object
        .into_iter()
        .flat_map(|((role, kind, object), mut privileges)| {
            privileges.sort_by_key(|p| order(kind, p));
            let mut out = Vec::new();
            if privileges.contains(&"OWNER") {
                privileges.retain(|p| *p != "OWNER");
                out.push(format!(
                    "ALTER {kind} {object} OWNER TO {};",
                    quote_ident(role)
                ));
            }
            if !privileges.is_empty() {
                out.push(format!(
                    "GRANT {} ON {kind} {object} TO {};",
                    privileges.join(", "),
                    quote_ident(role)
                ));
            }
            out
        })
        .collect()
}

/// Where `privilege` comes in a GRANT on a `kind`, as people write them.
fn order(kind: &str, privilege: &str) -> usize {
    let list: &[&str] = match kind {
        "SEQUENCE" => &["USAGE", "SELECT", "UPDATE"],
        _ => &[
            "USAGE",
            "SELECT",
            "INSERT",
            "UPDATE",
            "DELETE",
            "TRUNCATE",
            "REFERENCES",
            "TRIGGER",
        ],
    };
    list.iter()
        .position(|p| *p == privilege)
        .unwrap_or(list.len())
}

/// The problem, if the roles lack on one destination shard (`what`) some of
/// what they have on the source.
pub fn problem(
    source: &BTreeSet<Privilege>,
    dest: &BTreeSet<Privilege>,
    what: &str,
) -> Option<Problem> {
    let missing: BTreeSet<Privilege> = source.difference(dest).cloned().collect();
    if missing.is_empty() {
        return None;
    }
    let statements = grants(&missing);
    const SHOWN: usize = 20;
    let mut fix =
        format!(
        "grant them on that shard before the cutover (as the objects' owner or a superuser):\n  {}",
        statements.iter().take(SHOWN).cloned().collect::<Vec<_>>().join("\n  ")
    );
    if statements.len() > SHOWN {
        fix.push_str(&format!(
            "\n  and {} more; pg_dump --schema-only on the source lists every GRANT",
            statements.len() - SHOWN
        ));
    }
    let roles: BTreeSet<&str> = missing.iter().map(|p| p.role.as_str()).collect();
    let owned = missing.iter().filter(|p| p.privilege == "OWNER").count();
    let granted = missing.len() - owned;
    let mut lacks = Vec::new();
    if granted > 0 {
        lacks.push(format!(
            "{granted} privilege{}",
            if granted == 1 { "" } else { "s" }
        ));
    }
    if owned > 0 {
        lacks.push(format!(
            "the ownership of {owned} table{}",
            if owned == 1 { "" } else { "s" }
        ));
    }
    let (noun, verb, has) = if roles.len() == 1 {
        ("role", "lacks", "it has")
    } else {
        ("roles", "lack", "they have")
    };
    Some(Problem {
        problem: format!(
            "on {what}, {noun} {} {verb} {} {has} on the source, so the application's writes (or its migrations, for what it owns) there after the switch would fail",
            roles.into_iter().collect::<Vec<_>>().join(", "),
            lacks.join(" and "),
        ),
        fix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(role: &str, kind: &str, object: &str, privilege: &str) -> Privilege {
        Privilege {
            role: role.into(),
            kind: kind.into(),
            object: object.into(),
            privilege: privilege.into(),
        }
    }

    #[test]
    fn grants_group_by_role_and_object() {
        let missing: BTreeSet<Privilege> = [
            p("webapp", "TABLE", "\"public\".\"orders\"", "INSERT"),
            p("webapp", "TABLE", "\"public\".\"orders\"", "UPDATE"),
            p("webapp", "TABLE", "\"public\".\"plans\"", "OWNER"),
            p("webapp", "SCHEMA", "\"public\"", "USAGE"),
            p(
                "Odd\"Role",
                "SEQUENCE",
                "\"public\".\"orders_id_seq\"",
                "USAGE",
            ),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            grants(&missing),
            [
                "GRANT USAGE ON SEQUENCE \"public\".\"orders_id_seq\" TO \"Odd\"\"Role\";",
                "GRANT USAGE ON SCHEMA \"public\" TO \"webapp\";",
                "GRANT INSERT, UPDATE ON TABLE \"public\".\"orders\" TO \"webapp\";",
                "ALTER TABLE \"public\".\"plans\" OWNER TO \"webapp\";",
            ]
        );
    }

    #[test]
    fn only_what_the_destination_lacks_is_a_problem() {
        let source: BTreeSet<Privilege> = [
            p("webapp", "TABLE", "t", "SELECT"),
            p("webapp", "TABLE", "t", "INSERT"),
        ]
        .into_iter()
        .collect();
        let more: BTreeSet<Privilege> = source
            .iter()
            .cloned()
            .chain([p("webapp", "TABLE", "t", "DELETE")])
            .collect();
        assert!(problem(&source, &more, "shard 0").is_none());
        let less: BTreeSet<Privilege> = [p("webapp", "TABLE", "t", "SELECT")].into_iter().collect();
        let found = problem(&source, &less, "destination shard 1").unwrap();
        assert!(found.problem.contains("destination shard 1"), "{found:?}");
        assert!(found.problem.contains("lacks 1 privilege "), "{found:?}");
        assert!(
            found.fix.contains("GRANT INSERT ON TABLE t TO \"webapp\";"),
            "{found:?}"
        );
    }
}
