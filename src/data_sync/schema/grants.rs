//! The source's owners and privileges on what schema sync creates.
//! pg_dump ends an object's entry with `ALTER ... OWNER TO role;` and
//! writes its ACL as one GRANT or REVOKE per grantee. Those run with the
//! object on every destination shard where they can. Roles belong to a
//! server, not to the schema, so a shard may lack one. The user pgdog
//! connects as may also be unable to give objects to a role (it must be a
//! superuser, or inherit the role and on 16+ be able to SET it, which it
//! then needs anyway to build the table's indexes). Such a statement is
//! left out and said once per role and shard, and the sync goes on; an
//! owner the server still refuses is a warning from the server.

use std::collections::BTreeMap;

use tracing::warn;

use super::apply::Statement;
use super::catalog::Objects;
use super::dump::Entry;

/// Statements left out on one shard, by role.
pub type LeftOut = BTreeMap<String, Vec<String>>;

/// The role named last in `s` after `word` (` TO `, ` FROM `), read from
/// the end so that a quoted name may hold anything.
fn last_role(s: &str, word: &str) -> Option<String> {
    let (before, name) = if let Some(body) = s.strip_suffix('"') {
        // Back to the quote that opens the name: quotes inside it come in
        // pairs.
        let bytes = body.as_bytes();
        let mut i = bytes.len();
        loop {
            let q = body[..i].rfind('"')?;
            if q > 0 && bytes[q - 1] == b'"' {
                i = q - 1;
                continue;
            }
            break (&s[..q], body[q + 1..].replace("\"\"", "\""));
        }
    } else {
        let q = s.rfind(' ')?;
        (&s[..=q], s[q + 1..].to_string())
    };
    (before.ends_with(word) && !name.is_empty()).then_some(name)
}

/// The role a GRANT or REVOKE line of pg_dump's gives to or takes from
/// (`PUBLIC`: every role), or `None` for any other line.
pub fn grantee(line: &str) -> Option<String> {
    let s = line.trim().strip_suffix(';')?.trim_end();
    let s = s.strip_suffix(" WITH GRANT OPTION").unwrap_or(s);
    if s.starts_with("GRANT ") {
        last_role(s, " TO ")
    } else if s.starts_with("REVOKE ") {
        last_role(s, " FROM ")
    } else {
        None
    }
}

/// The new owner of an `ALTER ... OWNER TO role;` line, or `None`.
pub fn owner(line: &str) -> Option<String> {
    let s = line.trim().strip_suffix(';')?.trim_end();
    if !s.starts_with("ALTER ") {
        return None;
    }
    last_role(s, " OWNER TO ")
}

/// What of an ACL entry runs on a shard whose catalog is `dest`: its
/// statements for roles the shard has. Those for missing roles go to
/// `left_out`. A grant pg_dump wrote as made by another role (`SET SESSION
/// AUTHORIZATION`) is made by pgdog's user instead: that role may not
/// exist here, and the privilege is the same.
pub fn for_shard(e: &Entry, dest: &Objects, left_out: &mut LeftOut) -> Option<Statement> {
    let mut kept = Vec::new();
    for line in e.sql.lines().filter(|l| !l.trim().is_empty()) {
        let t = line.trim();
        if t.starts_with("SET SESSION AUTHORIZATION ") || t == "RESET SESSION AUTHORIZATION;" {
            continue;
        }
        match grantee(line) {
            Some(role) if role != "PUBLIC" && !dest.contains("ROLE", None, &role) => {
                left_out.entry(role).or_default().push(t.to_string())
            }
            Some(_) if !dest.contains("PRIVILEGE", None, "MAINTAIN") => {
                kept.extend(without_maintain(line))
            }
            _ => kept.push(line.to_string()),
        }
    }
    (!kept.is_empty()).then(|| Statement {
        sql: kept.join("\n"),
        object: e.describe(),
        may_exist: false,
    })
}

/// A GRANT or REVOKE line without the MAINTAIN privilege (PostgreSQL 17),
/// for an older server; `None` when nothing else is left.
fn without_maintain(line: &str) -> Option<String> {
    let Some(on) = line.find(" ON ") else {
        return Some(line.to_string());
    };
    let (head, rest) = line.split_at(on);
    let (keyword, list) = ["GRANT ", "REVOKE GRANT OPTION FOR ", "REVOKE "]
        .iter()
        .find_map(|k| head.trim_start().strip_prefix(k).map(|l| (*k, l)))?;
    let privileges: Vec<&str> = list.split(',').map(str::trim).collect();
    if !privileges.contains(&"MAINTAIN") {
        return Some(line.to_string());
    }
    let kept: Vec<&str> = privileges
        .into_iter()
        .filter(|p| *p != "MAINTAIN")
        .collect();
    (!kept.is_empty()).then(|| format!("{keyword}{}{rest}", kept.join(",")))
}

/// `ALTER ... OWNER TO` run so that a refusal (a non-superuser pgdog may
/// lack the new owner's CREATE on the schema) is a warning, not a failed
/// sync: the object then stays pgdog's user's.
fn tolerant_owner(line: &str) -> String {
    format!(
        "DO $pgdog_owner$ BEGIN {} EXCEPTION WHEN insufficient_privilege THEN RAISE WARNING 'pgdog schema sync could not give an object its source owner, it stays owned by %: %', current_user, SQLERRM; END $pgdog_owner$;",
        line.trim()
    )
}

/// `statement` without the trailing `OWNER TO` lines whose role pgdog
/// cannot give objects to on this shard (they go to `left_out`), the others
/// made [`tolerant_owner`]. Only the lines after the object's own
/// statement are looked at, never a line in a function body.
pub fn owners_for_shard(statement: &mut Statement, dest: &Objects, left_out: &mut LeftOut) {
    let mut lines: Vec<&str> = statement.sql.lines().collect();
    let mut keep_from_end: Vec<String> = Vec::new();
    while let Some(last) = lines.last() {
        if last.trim().is_empty() {
            lines.pop();
            continue;
        }
        let Some(role) = owner(last) else { break };
        if !dest.contains("OWNABLE ROLE", None, &role) {
            left_out
                .entry(role)
                .or_default()
                .push(last.trim().to_string());
        } else {
            keep_from_end.push(tolerant_owner(last));
        }
        lines.pop();
    }
    if keep_from_end.is_empty() && lines.len() == statement.sql.lines().count() {
        return;
    }
    let mut out: Vec<String> = lines.into_iter().map(str::to_string).collect();
    out.extend(keep_from_end.into_iter().rev());
    statement.sql = out.join("\n");
}

/// Say what was left out on `what` (a destination shard), once per role:
/// grants (`owners` false) or owners.
pub fn warn_left_out(left_out: &LeftOut, what: &str, owners: bool) {
    for (role, lines) in left_out {
        let more = if lines.len() > 1 { ", ..." } else { "" };
        if owners {
            warn!(
                "objects owned by role \"{role}\" on the source stay owned by pgdog's user on {what}, which has no such role or may not give objects to it ({} statements left out: {}{more}); create the role there, or let pgdog's user inherit it, and run them",
                lines.len(),
                lines[0]
            );
        } else {
            warn!(
                "role \"{role}\" does not exist on {what}: {} of the source's GRANT and REVOKE statements for it were left out ({}{more}); create the role there (pg_dumpall --roles-only on the source lists the roles) and run them",
                lines.len(),
                lines[0]
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grantees_of_pg_dump_lines() {
        let g = |l: &str| grantee(l);
        assert_eq!(
            g("GRANT SELECT,INSERT ON TABLE public.orders TO webapp;").as_deref(),
            Some("webapp")
        );
        assert_eq!(
            g("GRANT ALL ON TABLE public.orders TO \"Odd \"\"Role\"\" TO x\";").as_deref(),
            Some("Odd \"Role\" TO x")
        );
        assert_eq!(
            g("GRANT SELECT ON TABLE public.t TO reporting WITH GRANT OPTION;").as_deref(),
            Some("reporting")
        );
        assert_eq!(
            g("REVOKE ALL ON FUNCTION public.f(integer) FROM PUBLIC;").as_deref(),
            Some("PUBLIC")
        );
        assert_eq!(
            g("GRANT SELECT(note) ON TABLE public.orders TO \"a\"\"\";").as_deref(),
            Some("a\"")
        );
        assert_eq!(g("SET SESSION AUTHORIZATION admin;"), None);
        assert_eq!(
            owner("ALTER TABLE billing.\"Accounts\" OWNER TO \"App Owner\";").as_deref(),
            Some("App Owner")
        );
        assert_eq!(
            owner("ALTER FUNCTION public.f(integer) OWNER TO app;").as_deref(),
            Some("app")
        );
        assert_eq!(owner("GRANT ALL ON TABLE t TO x;"), None);
        assert_eq!(g("GRANT SELECT ON TABLE t TO"), None);
    }

    #[test]
    fn owners_kept_where_pgdog_can_give_objects_to_them() {
        use super::super::catalog::{Key, Object};
        let mut dest = Objects::default();
        dest.by_key
            .insert(Key::new("OWNABLE ROLE", None, "app"), Object::default());
        let mut st = Statement {
            sql: "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\n  ALTER TABLE t OWNER TO ghost;\nEND $$;\n\nALTER FUNCTION public.f() OWNER TO app;".into(),
            object: "FUNCTION f()".into(),
            may_exist: false,
        };
        let mut left = LeftOut::new();
        owners_for_shard(&mut st, &dest, &mut left);
        assert!(
            st.sql.ends_with("BEGIN ALTER FUNCTION public.f() OWNER TO app; EXCEPTION WHEN insufficient_privilege THEN RAISE WARNING 'pgdog schema sync could not give an object its source owner, it stays owned by %: %', current_user, SQLERRM; END $pgdog_owner$;"),
            "{}",
            st.sql
        );
        assert!(
            st.sql.contains("ALTER TABLE t OWNER TO ghost;"),
            "a body is not touched"
        );
        assert!(left.is_empty());
        let mut st = Statement {
            sql: "CREATE TABLE t (id int);\nALTER TABLE t OWNER TO ghost;".into(),
            object: "TABLE t".into(),
            may_exist: false,
        };
        owners_for_shard(&mut st, &dest, &mut left);
        assert_eq!(st.sql, "CREATE TABLE t (id int);");
        assert_eq!(left["ghost"], ["ALTER TABLE t OWNER TO ghost;"]);
    }

    #[test]
    fn maintain_is_left_out_for_older_servers() {
        assert_eq!(
            without_maintain("GRANT SELECT,MAINTAIN ON TABLE public.t TO app;").as_deref(),
            Some("GRANT SELECT ON TABLE public.t TO app;")
        );
        assert_eq!(
            without_maintain("GRANT MAINTAIN ON TABLE public.t TO app;"),
            None
        );
        assert_eq!(
            without_maintain("REVOKE ALL ON TABLE public.t FROM app;").as_deref(),
            Some("REVOKE ALL ON TABLE public.t FROM app;")
        );
        assert_eq!(
            without_maintain("GRANT SELECT(a),UPDATE(a) ON TABLE public.t TO app;").as_deref(),
            Some("GRANT SELECT(a),UPDATE(a) ON TABLE public.t TO app;")
        );
        let entry = Entry {
            kind: "ACL".into(),
            schema: Some("public".into()),
            tag: "TABLE t".into(),
            sql: "GRANT MAINTAIN ON TABLE public.t TO app;\nGRANT INSERT,MAINTAIN ON TABLE public.t TO app;".into(),
        };
        let mut dest = Objects::default();
        dest.by_key.insert(
            super::super::catalog::Key::new("ROLE", None, "app"),
            Default::default(),
        );
        let st = for_shard(&entry, &dest, &mut LeftOut::new()).unwrap();
        assert_eq!(st.sql, "GRANT INSERT ON TABLE public.t TO app;");
    }
}
