//! Reading `pg_dump --schema-only` plain output: the statements of each
//! archive entry, named as pg_dump names them in its `-- Name: ...; Type:
//! ...; Schema: ...` header. Nothing is parsed out of the SQL itself: what
//! an entry is comes from its header, what it belongs to from the catalog.

use super::catalog::Object;

/// One archive entry of the dump: a table, an index, a function...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// pg_dump's object type: `TABLE`, `INDEX`, `FK CONSTRAINT`, ...
    pub kind: String,
    /// `None` for objects outside a schema (schemas, extensions).
    pub schema: Option<String>,
    /// pg_dump's tag: `orders`, `orders orders_pkey`, `stamp()`,
    /// `COLUMN orders.note` (for a comment).
    pub tag: String,
    /// The statements, session `SET`s pg_dump placed before it included.
    pub sql: String,
}

impl Entry {
    /// How an operator reads it: `INDEX public.orders_customer_id_idx`.
    pub fn describe(&self) -> String {
        match &self.schema {
            Some(s) => format!("{} {s}.{}", self.kind, self.tag),
            None => format!("{} {}", self.kind, self.tag),
        }
    }

    /// pgdog's own DDL capture on the source (its event triggers and the
    /// comment that lists the moves using them): not the application's.
    pub fn is_pgdog_capture(&self) -> bool {
        match self.kind.as_str() {
            "EVENT TRIGGER" => self.tag.starts_with("pgdog_ddl_"),
            "COMMENT" => self.tag.starts_with("EVENT TRIGGER pgdog_ddl_"),
            _ => false,
        }
    }

    /// A table's primary key or replica identity index (or its attachment
    /// to a partitioned parent's), `src` being its object on the source.
    pub fn is_identity(&self, src: Option<&Object>) -> bool {
        matches!(self.kind.as_str(), "CONSTRAINT" | "INDEX" | "INDEX ATTACH")
            && src.is_some_and(|o| o.has('r'))
    }
}

/// `-- Name: <tag>; Type: <kind>; Schema: <schema>; Owner: <owner>[; Tablespace: ...]`
fn header(line: &str) -> Option<(String, Option<String>, String)> {
    let rest = line.strip_prefix("-- Name: ")?;
    // The tag may hold anything; the fields after it do not hold "; ".
    let s = rest.rfind("; Schema: ")?;
    let t = rest[..s].rfind("; Type: ")?;
    let tag = &rest[..t];
    let kind = &rest[t + "; Type: ".len()..s];
    let after = &rest[s + "; Schema: ".len()..];
    let schema = after.split("; ").next().unwrap_or("");
    let schema = (schema != "-").then(|| schema.to_string());
    Some((tag.to_string(), schema, kind.to_string()))
}

/// Is this line a setting pg_dump emits between entries for the next one
/// (its table access method or tablespace)?
fn is_session_set(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with("SET default_table_access_method ") || l.starts_with("SET default_tablespace ")
}

/// Split a plain schema dump into its entries, in dump order. The text
/// before the first entry (pg_dump's own session settings) is dropped:
/// the session that runs the entries sets what it needs ([`PREAMBLE`]).
/// psql meta-commands (`\restrict`, `\connect`) are dropped too.
pub fn parse(text: &str) -> Vec<Entry> {
    let lines: Vec<&str> = text.lines().collect();
    let mut entries: Vec<Entry> = Vec::new();
    let mut current: Option<Entry> = None;
    let mut body: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let is_header = line == "--"
            && lines.get(i + 2) == Some(&"--")
            && lines.get(i + 1).and_then(|l| header(l)).is_some();
        if !is_header {
            if !line.starts_with('\\') {
                body.push(line);
            }
            i += 1;
            continue;
        }
        // A SET at the end of the previous body is for the entry that
        // follows it (pg_dump sets the tablespace or access method, then
        // prints the next header).
        let mut carried: Vec<&str> = Vec::new();
        while let Some(last) = body.last() {
            if last.trim().is_empty() {
                body.pop();
            } else if is_session_set(last) {
                carried.insert(0, body.pop().unwrap_or_default());
            } else {
                break;
            }
        }
        if let Some(mut e) = current.take() {
            e.sql = join_sql(&body);
            entries.push(e);
        }
        body = carried;
        if let Some((tag, schema, kind)) = lines.get(i + 1).and_then(|l| header(l)) {
            current = Some(Entry {
                kind,
                schema,
                tag,
                sql: String::new(),
            });
        }
        i += 3;
    }
    if let Some(mut e) = current.take() {
        e.sql = join_sql(&body);
        entries.push(e);
    }
    entries
}

/// The body's statements without comment-only and blank lines at either end.
fn join_sql(lines: &[&str]) -> String {
    let keep = |l: &&str| !l.trim().is_empty() && !l.starts_with("--");
    let start = lines.iter().position(keep).unwrap_or(lines.len());
    let end = lines.iter().rposition(keep).map_or(start, |e| e + 1);
    lines[start..end].join("\n")
}

/// Session settings every schema session sets before running entries:
/// names schema-qualified as pg_dump writes them, function bodies not
/// checked (they may name objects created later), no tablespaces.
pub const PREAMBLE: &str = "SELECT pg_catalog.set_config('search_path', '', false); \
SET check_function_bodies = false; SET xmloption = content; SET client_min_messages = warning; \
SET row_security = off; SET default_tablespace = '';";

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../../fixtures/pg_dump/app_schema.sql");

    #[test]
    fn headers_give_kind_schema_and_tag() {
        assert_eq!(
            header("-- Name: orders orders_pkey; Type: CONSTRAINT; Schema: public; Owner: -"),
            Some((
                "orders orders_pkey".into(),
                Some("public".into()),
                "CONSTRAINT".into()
            ))
        );
        assert_eq!(
            header("-- Name: pgcrypto; Type: EXTENSION; Schema: -; Owner: -"),
            Some(("pgcrypto".into(), None, "EXTENSION".into()))
        );
        // A tag with "; " in it still splits at the fields pg_dump adds.
        assert_eq!(
            header("-- Name: a; b; Type: TABLE; Schema: s; Owner: -; Tablespace: "),
            Some(("a; b".into(), Some("s".into()), "TABLE".into()))
        );
        assert_eq!(header("-- just a comment"), None);
    }

    #[test]
    fn a_real_dump_splits_into_its_entries() {
        let entries = parse(FIXTURE);
        let find = |kind: &str, tag: &str| {
            entries
                .iter()
                .find(|e| e.kind == kind && e.tag == tag)
                .unwrap_or_else(|| panic!("no {kind} {tag}"))
        };
        assert!(find("DOMAIN", "email")
            .sql
            .starts_with("CREATE DOMAIN public.email"));
        let table = find("TABLE", "customers");
        assert!(
            table.sql.contains("CREATE TABLE public.customers ("),
            "{}",
            table.sql
        );
        assert!(table.sql.contains("REPLICA IDENTITY FULL"));
        assert!(!table.sql.contains("-- Name"));
        assert!(find("SEQUENCE", "customers_id_seq")
            .sql
            .contains("ADD GENERATED ALWAYS AS IDENTITY"));
        assert_eq!(
            find("INDEX ATTACH", "events_2025_pkey").sql,
            "ALTER INDEX public.events_pkey ATTACH PARTITION public.events_2025_pkey;"
        );
        assert!(find("FUNCTION", "add1(integer, public.email)")
            .sql
            .contains("LANGUAGE sql"));
        assert_eq!(
            find("COMMENT", "COLUMN orders.note").schema.as_deref(),
            Some("public")
        );
        // psql meta-commands and pg_dump's trailing banner are gone.
        assert!(entries.iter().all(|e| !e.sql.contains("\\restrict")
            && !e.sql.contains("\\unrestrict")
            && !e.sql.contains("dump complete")));
        // Every statement of the dump is in exactly one entry.
        let statements = |t: &str| t.lines().filter(|l| l.ends_with(';')).count();
        let in_entries: usize = entries.iter().map(|e| statements(&e.sql)).sum();
        let preamble = FIXTURE
            .lines()
            .take_while(|l| !l.starts_with("-- Name:"))
            .filter(|l| l.ends_with(';'))
            .count();
        let total = FIXTURE
            .lines()
            .filter(|l| l.ends_with(';') && !l.starts_with('\\'))
            .count();
        assert_eq!(in_entries + preamble, total);
    }

    #[test]
    fn settings_before_a_header_go_with_the_next_entry() {
        let text = "SET x = 1;\nSET default_tablespace = '';\n\n--\n-- Name: a; Type: TABLE; Schema: public; Owner: -\n--\n\nCREATE TABLE public.a ();\n\n\nSET default_table_access_method = heap;\n\n--\n-- Name: b; Type: TABLE; Schema: public; Owner: -\n--\n\nCREATE TABLE public.b ();\n";
        let e = parse(text);
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[0].sql,
            "SET default_tablespace = '';\n\nCREATE TABLE public.a ();"
        );
        assert_eq!(
            e[1].sql,
            "SET default_table_access_method = heap;\n\nCREATE TABLE public.b ();"
        );
    }
}
