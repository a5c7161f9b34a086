//! The source's privileges on what schema sync creates. pg_dump writes an
//! object's ACL as one GRANT or REVOKE per grantee. Those run with the
//! object on every destination shard. A statement whose role the shard
//! lacks (roles belong to a server, not to the schema) is left out and
//! said once per role and shard, instead of failing the whole sync.

use std::collections::BTreeMap;

use tracing::warn;

use super::apply::Statement;
use super::catalog::Objects;
use super::dump::Entry;

/// The role a GRANT or REVOKE line of pg_dump's gives to or takes from
/// (`PUBLIC`: every role), or `None` for any other line. The grantee is
/// the last word, read from the end, so a quoted name may hold anything.
pub fn grantee(line: &str) -> Option<String> {
    let s = line.trim().strip_suffix(';')?.trim_end();
    let s = s.strip_suffix(" WITH GRANT OPTION").unwrap_or(s);
    let word = if s.starts_with("GRANT ") {
        " TO "
    } else if s.starts_with("REVOKE ") {
        " FROM "
    } else {
        return None;
    };
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

/// What of an ACL entry runs on a shard whose catalog is `dest`: its
/// statements for roles the shard has. Those for missing roles go to
/// `left_out`, by role.
pub fn for_shard(
    e: &Entry,
    dest: &Objects,
    left_out: &mut BTreeMap<String, Vec<String>>,
) -> Option<Statement> {
    let mut kept = Vec::new();
    for line in e.sql.lines().filter(|l| !l.trim().is_empty()) {
        match grantee(line) {
            Some(role) if role != "PUBLIC" && !dest.contains("ROLE", None, &role) => left_out
                .entry(role)
                .or_default()
                .push(line.trim().to_string()),
            _ => kept.push(line),
        }
    }
    (!kept.is_empty()).then(|| Statement {
        sql: kept.join("\n"),
        object: e.describe(),
        may_exist: false,
    })
}

/// Say what was left out on `what` (a destination shard), once per role.
pub fn warn_left_out(left_out: &BTreeMap<String, Vec<String>>, what: &str) {
    for (role, lines) in left_out {
        warn!(
            "role \"{role}\" does not exist on {what}: {} of the source's GRANT and REVOKE statements for it were left out ({}{}); create the role there (pg_dumpall --roles-only on the source lists the roles) and run them",
            lines.len(),
            lines[0],
            if lines.len() > 1 { ", ..." } else { "" }
        );
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
        assert_eq!(g("GRANT SELECT ON TABLE t TO"), None);
    }
}
