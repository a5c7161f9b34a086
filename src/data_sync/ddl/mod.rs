//! Schema changes during a move: DDL run on a source shard reaches every
//! destination shard at the same point of the change stream.
//!
//! [`capture`] installs event triggers on each source shard. At the end of
//! every DDL command they emit a transactional logical message (prefix
//! [`PREFIX`]) that holds the client's statement text, `search_path`, the
//! command tag, the tables the command touched (by OID and name), and
//! what it dropped or rewrote. The message is decoded in commit order with
//! the rows around it, so the stream meets it after the changes committed
//! before the DDL and before those that use the new shape.
//!
//! The stream ([`Event::parse`], [`decide`]) replays the statement inside
//! its destination transaction, so the DDL commits with the stream's
//! position and is applied exactly once. A statement that cannot run in a
//! transaction (`CREATE INDEX CONCURRENTLY`) is queued in the same
//! transaction and built afterwards on its own connection ([`pending`]).
//! The move then plans again, so every later change uses the new shape.

pub mod capture;
pub mod pending;

use std::collections::BTreeSet;

use super::catalog::TableName;

/// The logical message prefix of captured DDL.
pub const PREFIX: &str = "pgdog.ddl";

/// `pg_event_trigger_table_rewrite_reason()`: the rewrite gave existing
/// rows a new column's (volatile) default, a value no row change carries.
pub const REWRITE_DEFAULT: u32 = 2;

/// pgdog's own reason, next to the server's: a table was attached with
/// rows as a partition below this partitioned table. Published through
/// its root, those rows never reach the stream.
pub const REWRITE_ATTACHED: u32 = 256;

/// An object a command dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// `index`, `table`, `table column`, `sequence`, ...
    pub kind: String,
    /// As the server spells it (quoted where needed).
    pub identity: String,
    pub schema: String,
    pub name: String,
}

/// One captured DDL command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The command tag (`ALTER TABLE`, `CREATE INDEX`, ...).
    pub tag: String,
    /// Which DDL command of the client's query string this is (1 for the
    /// first).
    pub ordinal: usize,
    pub search_path: String,
    pub role: String,
    /// The client's whole query string.
    pub query: String,
    /// Tables the command touched: source OID and name (every member of
    /// a partitioned table's tree).
    pub tables: Vec<(u32, TableName)>,
    /// Tables the command rewrote: OID and the rewrite's reason bits.
    pub rewrites: Vec<(u32, u32)>,
    /// Objects it dropped.
    pub dropped: Vec<Dropped>,
    /// Objects it created or altered: type and identity.
    pub objects: Vec<(String, String)>,
}

impl Event {
    /// Read a message emitted by [`capture`]'s trigger. Every field is
    /// `<byte length>:<bytes>`; lists are a count, then their items.
    pub fn parse(content: &[u8]) -> Result<Event, String> {
        let mut r = Fields { rest: content };
        let version = r.text()?;
        if version != "1" {
            return Err(format!(
                "captured with an unknown format version {version:?} (a newer pgdog?)"
            ));
        }
        let tag = r.text()?;
        let ordinal = r.number()?;
        let search_path = r.text()?;
        let role = r.text()?;
        let query = r.text()?;
        let items = |r: &mut Fields| -> Result<Vec<Vec<String>>, String> {
            let n = r.number()?;
            (0..n)
                .map(|_| Ok(r.text()?.split('\t').map(str::to_string).collect()))
                .collect()
        };
        let part = |v: &[String], i: usize| v.get(i).cloned().unwrap_or_default();
        let tables = items(&mut r)?
            .into_iter()
            .map(|v| {
                Ok((
                    part(&v, 0).parse().map_err(|_| "a table OID")?,
                    TableName {
                        schema: part(&v, 1),
                        name: part(&v, 2),
                    },
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let rewrites = items(&mut r)?
            .into_iter()
            .map(|v| {
                Ok((
                    part(&v, 0).parse().map_err(|_| "a rewrite OID")?,
                    part(&v, 1).parse().map_err(|_| "a rewrite reason")?,
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let dropped = items(&mut r)?
            .into_iter()
            .map(|v| Dropped {
                kind: part(&v, 0),
                identity: part(&v, 1),
                schema: part(&v, 2),
                name: part(&v, 3),
            })
            .collect();
        let objects = items(&mut r)?
            .into_iter()
            .map(|v| (part(&v, 0), part(&v, 1)))
            .collect();
        Ok(Event {
            tag,
            ordinal,
            search_path,
            role,
            query,
            tables,
            rewrites,
            dropped,
            objects,
        })
    }

    /// The one statement of the client's query string this command came
    /// from, or why it cannot be told.
    pub fn statement(&self) -> Result<String, String> {
        let all = split_statements(&self.query);
        let pick = if all.len() == 1 {
            all[0]
        } else {
            // Several statements in one query string: the n-th of those
            // that fire event triggers.
            let ddl: Vec<&str> = all.iter().copied().filter(|s| fires_trigger(s)).collect();
            match ddl.get(self.ordinal.saturating_sub(1)).copied() {
                Some(s) => s,
                None => {
                    return Err(format!(
                    "the query string holds {} statements and pgdog cannot tell which one ran {}",
                    all.len(),
                    self.tag
                ))
                }
            }
        };
        let first = first_words(pick, 1);
        let tag_first = self.tag.split_whitespace().next().unwrap_or("");
        if !first.eq_ignore_ascii_case(tag_first) {
            return Err(format!(
                "{} ran inside `{}` (a DO block, a function or a procedure), which pgdog does not run again: it may also write rows",
                self.tag,
                abbreviate(pick)
            ));
        }
        Ok(pick.trim().trim_end_matches(';').trim().to_string())
    }
}

/// What the stream does with a captured command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run `statement` on every destination shard; the plan's tables it
    /// touched (by plan index); whether it must run outside a
    /// transaction; the index it builds (for a concurrent build).
    Apply {
        statement: String,
        tables: BTreeSet<usize>,
        concurrently: bool,
        index: Option<String>,
        /// Dropped relations: run only where one of them exists.
        only_if_exists: Vec<String>,
    },
    /// Not part of the move (a table it does not move, pgdog's own
    /// objects, a table that joins through the publication): said at
    /// debug level.
    Skip(String),
    /// Part of the move but not replayed: said loudly, with what to do.
    Refuse(String),
}

/// Decide what to do with `event`. `moved` gives the plan index of a
/// source table by OID or by quoted name.
pub fn decide(event: &Event, moved: impl Fn(u32, &TableName) -> Option<usize>) -> Decision {
    let tables: BTreeSet<usize> = event
        .tables
        .iter()
        .filter_map(|(oid, name)| moved(*oid, name))
        .collect();
    let tag = event.tag.to_ascii_uppercase();
    let statement = match event.statement() {
        Ok(s) => s,
        Err(why) if !tables.is_empty() => return Decision::Refuse(why),
        Err(why) => return Decision::Skip(why),
    };
    let words = upper_words(&statement, 6);
    let has = |w: &str| words.iter().any(|x| x == w);
    // Partitions come and go through the publication: the move plans
    // again and schema sync creates what the shards lack.
    let upper = statement.to_ascii_uppercase();
    if upper.contains("ATTACH PARTITION") || upper.contains("DETACH PARTITION") {
        return Decision::Skip(
            "a partition attached or detached: the move takes it in from the publication".into(),
        );
    }
    let concurrently = has("CONCURRENTLY") && (tag == "CREATE INDEX" || tag == "DROP INDEX");
    let index = if tag == "CREATE INDEX" {
        event
            .objects
            .iter()
            .find(|(t, _)| t == "index")
            .map(|(_, i)| i.clone())
    } else {
        None
    };
    let apply = |tables: BTreeSet<usize>, only_if_exists: Vec<String>| Decision::Apply {
        statement: statement.clone(),
        tables,
        concurrently,
        index: index.clone(),
        only_if_exists,
    };
    if tag == "DROP TABLE" || tag == "DROP FOREIGN TABLE" {
        return if event.dropped.iter().any(|d| {
            d.kind == "table"
                && moved(
                    0,
                    &TableName {
                        schema: d.schema.clone(),
                        name: d.name.clone(),
                    },
                )
                .is_some()
        }) {
            Decision::Refuse(format!(
                "`{}` dropped a table this move copies: pgdog leaves it on the destination shards (drop it there yourself once you are sure)",
                abbreviate(&statement)
            ))
        } else {
            Decision::Skip("drops a table this move does not copy".into())
        };
    }
    if tag == "DROP INDEX" || tag == "DROP SEQUENCE" {
        let rels: Vec<String> = event
            .dropped
            .iter()
            .filter(|d| d.kind == "index" || d.kind == "sequence")
            .map(|d| d.identity.clone())
            .collect();
        if rels.is_empty() {
            return Decision::Skip("drops nothing pgdog knows".into());
        }
        return apply(tables, rels);
    }
    if !tables.is_empty() {
        return apply(tables, Vec::new());
    }
    if !event.tables.is_empty() {
        return Decision::Skip("changes only tables this move does not copy".into());
    }
    // Objects a moved table may come to use: a sequence a new column's
    // default calls, a type or domain a new column has, a function a
    // default or a check calls.
    const STANDALONE: &[&str] = &[
        "CREATE SEQUENCE",
        "ALTER SEQUENCE",
        "CREATE TYPE",
        "ALTER TYPE",
        "CREATE DOMAIN",
        "ALTER DOMAIN",
        "CREATE FUNCTION",
        "ALTER FUNCTION",
        "CREATE SCHEMA",
    ];
    if STANDALONE.contains(&tag.as_str()) {
        if event.objects.iter().any(|(_, i)| {
            i.starts_with("pgdog.") || i.starts_with("pg_temp") || i.starts_with("pgdog")
        }) {
            return Decision::Skip("pgdog's own object".into());
        }
        return apply(tables, Vec::new());
    }
    Decision::Skip(format!("{} touches no table of the move", event.tag))
}

/// The byte-length-prefixed fields of a message.
struct Fields<'a> {
    rest: &'a [u8],
}

impl Fields<'_> {
    fn text(&mut self) -> Result<String, String> {
        let colon = self
            .rest
            .iter()
            .position(|b| *b == b':')
            .ok_or("a field without its length")?;
        let len: usize = std::str::from_utf8(&self.rest[..colon])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or("a field length that is not a number")?;
        let start = colon + 1;
        let end = start
            .checked_add(len)
            .filter(|e| *e <= self.rest.len())
            .ok_or("a field longer than the message")?;
        let value = String::from_utf8_lossy(&self.rest[start..end]).into_owned();
        self.rest = &self.rest[end..];
        Ok(value)
    }

    fn number(&mut self) -> Result<usize, String> {
        self.text()?
            .parse()
            .map_err(|_| "a count that is not a number".to_string())
    }
}

/// Split a query string into its statements (without empty ones), the way
/// the server's lexer sees quotes, dollar quotes and comments.
pub fn split_statements(sql: &str) -> Vec<&str> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut depth = 0usize; // parentheses: CREATE RULE (...; ...)
    fn push<'a>(out: &mut Vec<&'a str>, s: &'a str) {
        if !strip_comments(s).trim().is_empty() {
            out.push(s.trim());
        }
    }
    while i < b.len() {
        match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut nest = 1;
                i += 2;
                while i < b.len() && nest > 0 {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        nest += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        nest -= 1;
                        i += 2;
                    } else {
                        i += 1;
                    }
                }
                continue;
            }
            b'\'' => {
                let escapes = i > 0 && matches!(b[i - 1], b'e' | b'E');
                i += 1;
                while i < b.len() {
                    if escapes && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == b'\'' {
                        if b.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += 1;
                }
            }
            b'$' => {
                // $tag$ ... $tag$ (not a $1 parameter)
                let tag_end = b[i + 1..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .map(|p| i + 1 + p);
                if let Some(e) = tag_end {
                    let starts_ok = b.get(i + 1).is_none_or(|c| !c.is_ascii_digit());
                    if b[e] == b'$' && starts_ok {
                        let tag = &sql[i..=e];
                        if let Some(close) = sql[e + 1..].find(tag) {
                            i = e + 1 + close + tag.len();
                            continue;
                        }
                        i = b.len();
                        continue;
                    }
                }
            }
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            b';' if depth == 0 => {
                push(&mut out, &sql[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < b.len() {
        push(&mut out, &sql[start..]);
    }
    out
}

/// The statement without its comments (for deciding whether it is empty
/// and for its first words).
fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let line = rest.find("--");
        let block = rest.find("/*");
        match (line, block) {
            (Some(l), b) if b.is_none_or(|b| l < b) => {
                out.push_str(&rest[..l]);
                rest = rest[l..].find('\n').map_or("", |n| &rest[l + n..]);
            }
            (_, Some(bk)) => {
                out.push_str(&rest[..bk]);
                out.push(' ');
                rest = rest[bk..].find("*/").map_or("", |n| &rest[bk + n + 2..]);
            }
            _ => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

fn upper_words(s: &str, n: usize) -> Vec<String> {
    strip_comments(s)
        .split(|c: char| c.is_whitespace() || c == '(')
        .filter(|w| !w.is_empty())
        .take(n)
        .map(|w| w.to_ascii_uppercase())
        .collect()
}

fn first_words(s: &str, n: usize) -> String {
    upper_words(s, n).join(" ")
}

/// Whether a statement is one that fires `ddl_command_end` (and so has
/// an ordinal among the DDL of its query string).
fn fires_trigger(s: &str) -> bool {
    let w = upper_words(s, 2);
    let first = w.first().map(String::as_str).unwrap_or("");
    let second = w.get(1).map(String::as_str).unwrap_or("");
    let shared = matches!(
        second,
        "DATABASE" | "ROLE" | "USER" | "GROUP" | "TABLESPACE" | "SYSTEM" | "EVENT"
    );
    matches!(
        first,
        "CREATE" | "ALTER" | "DROP" | "COMMENT" | "GRANT" | "REVOKE" | "SECURITY" | "IMPORT"
    ) && !shared
}

/// A statement cut to one line for messages.
pub fn abbreviate(s: &str) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 120 {
        format!("{}...", one.chars().take(117).collect::<String>())
    } else {
        one
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(s: &str) -> String {
        format!("{}:{s}", s.len())
    }

    fn message(tag: &str, n: usize, query: &str, tables: &[(u32, &str, &str)]) -> Vec<u8> {
        let mut m = field("1") + &field(tag) + &field(&n.to_string());
        m += &field("\"$user\", public");
        m += &field("app");
        m += &field(query);
        m += &field(&tables.len().to_string());
        for (oid, schema, name) in tables {
            m += &field(&format!("{oid}\t{schema}\t{name}"));
        }
        m += &(field("0") + &field("0") + &field("0"));
        m.into_bytes()
    }

    #[test]
    fn a_message_reads_back_with_multibyte_text() {
        let q = "ALTER TABLE \"Zähler\" ADD COLUMN \"ü\" int DEFAULT 0";
        let e = Event::parse(&message(
            "ALTER TABLE",
            1,
            q,
            &[(16384, "public", "Zähler")],
        ))
        .unwrap();
        assert_eq!(e.query, q);
        assert_eq!(e.tables[0].1.name, "Zähler");
        assert_eq!(e.statement().unwrap(), q);
        assert!(Event::parse(b"1:1").is_err());
        assert!(Event::parse(b"9:1").is_err());
        assert!(Event::parse(b"").is_err());
    }

    #[test]
    fn statements_split_around_quotes_dollar_quotes_and_comments() {
        let sql = "ALTER TABLE a ADD COLUMN b text DEFAULT 'x;y'; -- c;\n\
                   CREATE FUNCTION f() RETURNS int AS $f$ SELECT 1; $f$ LANGUAGE sql; \
                   /* a; /* nested; */ */ INSERT INTO \"a;b\" VALUES (E'\\';'); ;";
        let parts = split_statements(sql);
        assert_eq!(parts.len(), 3, "{parts:?}");
        assert!(parts[1].contains("$f$ SELECT 1; $f$"));
        assert!(parts[2].contains("INSERT INTO \"a;b\""));
        assert_eq!(split_statements("SELECT $1; SELECT 2").len(), 2);
    }

    #[test]
    fn the_nth_ddl_of_a_query_string_is_replayed_and_a_do_block_is_not() {
        let q = "ALTER TABLE a ADD c int; INSERT INTO a VALUES (1); ALTER TABLE a ADD d int;";
        let mut e = Event::parse(&message("ALTER TABLE", 2, q, &[(1, "public", "a")])).unwrap();
        assert_eq!(e.statement().unwrap(), "ALTER TABLE a ADD d int");
        e.ordinal = 3;
        assert!(e.statement().is_err());
        let d = Event::parse(&message(
            "ALTER TABLE",
            1,
            "DO $$ BEGIN ALTER TABLE a ADD c int; UPDATE a SET c = 1; END $$",
            &[(1, "public", "a")],
        ))
        .unwrap();
        let moved = |_: u32, n: &TableName| (n.name == "a").then_some(0);
        assert!(matches!(decide(&d, moved), Decision::Refuse(_)));
    }

    #[test]
    fn decisions_follow_the_tables_the_command_touched() {
        let moved = |oid: u32, n: &TableName| (oid == 1 || n.name == "a").then_some(0);
        let e = Event::parse(&message(
            "CREATE INDEX",
            1,
            "CREATE INDEX CONCURRENTLY a_c ON a (c)",
            &[(1, "public", "a")],
        ))
        .unwrap();
        match decide(&e, moved) {
            Decision::Apply {
                concurrently,
                tables,
                ..
            } => {
                assert!(concurrently);
                assert_eq!(tables.into_iter().collect::<Vec<_>>(), vec![0]);
            }
            other => panic!("{other:?}"),
        }
        let other = Event::parse(&message(
            "ALTER TABLE",
            1,
            "ALTER TABLE b ADD c int",
            &[(2, "public", "b")],
        ))
        .unwrap();
        assert!(matches!(decide(&other, moved), Decision::Skip(_)));
        let attach = Event::parse(&message(
            "ALTER TABLE",
            1,
            "ALTER TABLE a ATTACH PARTITION a_1 FOR VALUES IN (1)",
            &[(1, "public", "a")],
        ))
        .unwrap();
        assert!(matches!(decide(&attach, moved), Decision::Skip(_)));
        let seq = Event::parse(&message("CREATE SEQUENCE", 1, "CREATE SEQUENCE s", &[])).unwrap();
        assert!(matches!(decide(&seq, moved), Decision::Apply { .. }));
        let grant = Event::parse(&message("GRANT", 1, "GRANT SELECT ON b TO x", &[])).unwrap();
        assert!(matches!(decide(&grant, moved), Decision::Skip(_)));
    }
}
