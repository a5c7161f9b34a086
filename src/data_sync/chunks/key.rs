//! Chunk keys: the unique key a table is copied by, in key ranges, and the
//! values pgdog compares against chunk bounds. A streamed change is
//! decided by where its key falls, so pgdog must order keys exactly as the
//! source's btree index does: integers, uuids, dates and timestamps (binary
//! streams), and text whose collation is `C` or `POSIX` (byte order). A
//! table whose key is of another type, or text in a linguistic collation,
//! keeps the whole-table snapshot copy.

use pgdog_protocol::pgoutput::Column;

use super::super::catalog::{quote_ident, quote_literal, PublishedTable};

/// How one key column's values are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// int2, int4, int8 (as i64).
    Int,
    /// uuid: 16 bytes, compared as bytes (PostgreSQL's order).
    Uuid,
    /// text or varchar in the `C` collation: bytes.
    Text,
    /// date (days since 2000-01-01), timestamp and timestamptz
    /// (microseconds since 2000-01-01): only from binary values.
    Time { days: bool },
}

impl KeyKind {
    /// The kind of a column type, or why it cannot be a chunk key.
    pub fn of(type_oid: u32, c_collation: bool, binary: bool) -> Result<KeyKind, String> {
        match type_oid {
            20 | 21 | 23 => Ok(KeyKind::Int),
            2950 => Ok(KeyKind::Uuid),
            25 | 1043 if c_collation => Ok(KeyKind::Text),
            25 | 1043 => Err("text in a collation other than C or POSIX, whose order pgdog cannot reproduce".into()),
            1082 | 1114 | 1184 if binary => Ok(KeyKind::Time {
                days: type_oid == 1082,
            }),
            1082 | 1114 | 1184 => {
                Err("a date or timestamp, while the stream sends text values (a table of the publication has a type whose binary form is server-specific)".into())
            }
            _ => Err("of a type pgdog does not order itself (integers, uuid, C-collated text, dates and timestamps are)".into()),
        }
    }

    /// The SQL giving a value's canonical text, which [`KeyKind::parse`]
    /// reads back: what pgdog compares.
    fn canonical_sql(self, column: &str) -> String {
        match self {
            KeyKind::Int => format!("{column}::int8::text"),
            KeyKind::Uuid | KeyKind::Text => format!("{column}::text"),
            KeyKind::Time { days: true } => format!("({column} - '2000-01-01'::date)::text"),
            KeyKind::Time { days: false } => {
                format!("((extract(epoch FROM {column}) - 946684800) * 1000000)::int8::text")
            }
        }
    }

    /// A value from its canonical text.
    pub fn parse(self, text: &str) -> Option<KeyValue> {
        Some(match self {
            KeyKind::Int | KeyKind::Time { .. } => KeyValue::Int(text.parse().ok()?),
            KeyKind::Uuid => KeyValue::Bytes(parse_uuid(text.as_bytes())?),
            KeyKind::Text => KeyValue::Bytes(text.as_bytes().to_vec()),
        })
    }

    /// A value as pgoutput sent it (binary, or text for a text stream).
    pub fn decode(self, type_oid: u32, column: &Column<'_>) -> Option<KeyValue> {
        match column {
            Column::Binary(b) => Some(match self {
                KeyKind::Int | KeyKind::Time { .. } => KeyValue::Int(match (type_oid, b.len()) {
                    (21, 2) => i16::from_be_bytes([b[0], b[1]]) as i64,
                    (23 | 1082, 4) => i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as i64,
                    (20 | 1114 | 1184, 8) => {
                        i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
                    }
                    _ => return None,
                }),
                KeyKind::Uuid if b.len() == 16 => KeyValue::Bytes(b.to_vec()),
                KeyKind::Uuid => return None,
                KeyKind::Text => KeyValue::Bytes(b.to_vec()),
            }),
            Column::Text(t) => match self {
                KeyKind::Int => Some(KeyValue::Int(std::str::from_utf8(t).ok()?.parse().ok()?)),
                KeyKind::Uuid => Some(KeyValue::Bytes(parse_uuid(t)?)),
                KeyKind::Text => Some(KeyValue::Bytes(t.to_vec())),
                KeyKind::Time { .. } => None,
            },
            Column::Null | Column::Unchanged => None,
        }
    }
}

/// `a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11` (or without dashes) to bytes.
fn parse_uuid(text: &[u8]) -> Option<Vec<u8>> {
    let hex: Vec<u8> = text.iter().copied().filter(|c| *c != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    hex.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

/// One key column's value, comparable with others of its column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyValue {
    Int(i64),
    Bytes(Vec<u8>),
}

/// A whole key, compared column by column.
pub type Key = Vec<KeyValue>;

/// One column of a chunk key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumn {
    pub name: String,
    /// `format_type()`, for literals.
    pub type_name: String,
    pub type_oid: u32,
    pub kind: KeyKind,
}

/// The key a table is copied by, in chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkKey {
    pub columns: Vec<KeyColumn>,
}

/// A key as SQL literals (one per column) and as compared values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// Each column's value as its type's text, the way `::text` printed
    /// it in pgdog's session: for literals in SQL.
    pub literals: Vec<String>,
    pub key: Key,
}

impl ChunkKey {
    /// The chunk key of `table`, or why it has none: its replica identity
    /// (the primary key, or the unique index it names), every column of
    /// an orderable type. `binary`: the stream sends binary values.
    pub fn of(table: &PublishedTable, binary: bool) -> Result<ChunkKey, String> {
        match table.replica_identity {
            'd' | 'i' => {}
            'f' => {
                return Err(
                    "its replica identity is FULL, so a change does not name a unique key".into(),
                )
            }
            _ => return Err("it has no replica identity".into()),
        }
        let mut columns = Vec::new();
        for c in table.columns.iter().filter(|c| c.identity) {
            let kind = KeyKind::of(c.type_oid, c.c_collation, binary)
                .map_err(|why| format!("its key column \"{}\" is {why}", c.name))?;
            columns.push(KeyColumn {
                name: c.name.clone(),
                type_name: c.type_name.clone(),
                type_oid: c.type_oid,
                kind,
            });
        }
        if columns.is_empty() {
            return Err("it has no primary key or unique replica identity".into());
        }
        if !table.leaves_without_identity.is_empty() {
            return Err("some of its partitions have no usable replica identity".into());
        }
        Ok(ChunkKey { columns })
    }

    /// `("a", "b")`, quoted, qualified by `alias` when given.
    pub fn row(&self, alias: Option<&str>) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| match alias {
                Some(a) => format!("{a}.{}", quote_ident(&c.name)),
                None => quote_ident(&c.name),
            })
            .collect();
        format!("({})", cols.join(", "))
    }

    /// `('1'::bigint, 'x'::text)` for a bound.
    pub fn literal(&self, bound: &Bound) -> String {
        let vals: Vec<String> = self
            .columns
            .iter()
            .zip(&bound.literals)
            .map(|(c, v)| format!("{}::{}", quote_literal(v), c.type_name))
            .collect();
        format!("({})", vals.join(", "))
    }

    /// Conditions for keys in `(lo, hi]`; an open end has none.
    pub fn range_conds(&self, lo: Option<&Bound>, hi: Option<&Bound>) -> Vec<String> {
        let mut conds = Vec::new();
        if let Some(lo) = lo {
            conds.push(format!("{} > {}", self.row(None), self.literal(lo)));
        }
        if let Some(hi) = hi {
            conds.push(format!("{} <= {}", self.row(None), self.literal(hi)));
        }
        conds
    }

    /// Select list for a bound: each column's text, then its canonical
    /// text, from rows aliased `k`.
    pub fn bound_select(&self) -> String {
        let mut out: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("k.{}::text", quote_ident(&c.name)))
            .collect();
        out.extend(
            self.columns
                .iter()
                .map(|c| c.kind.canonical_sql(&format!("k.{}", quote_ident(&c.name)))),
        );
        out.join(", ")
    }

    /// A bound from a row of [`ChunkKey::bound_select`].
    pub fn bound_from_row(&self, row: &pgdog_protocol::backend::DataRow) -> Option<Bound> {
        let n = self.columns.len();
        let mut literals = Vec::with_capacity(n);
        let mut key = Vec::with_capacity(n);
        for (i, c) in self.columns.iter().enumerate() {
            literals.push(row.text(i)?.to_string());
            key.push(c.kind.parse(row.text(n + i)?)?);
        }
        Some(Bound { literals, key })
    }

    /// The key of a streamed tuple; `columns[i]` is where key column `i`
    /// sits in the relation's tuple. `None` when a value is missing.
    pub fn key_of<'t>(
        &self,
        positions: &[usize],
        get: impl Fn(usize) -> Option<Column<'t>>,
    ) -> Option<Key> {
        self.columns
            .iter()
            .zip(positions)
            .map(|(c, &p)| c.kind.decode(c.type_oid, &get(p)?))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_text_values_compare_as_postgres_orders_them() {
        let k = KeyKind::Int;
        let neg = k
            .decode(20, &Column::Binary(&(-5i64).to_be_bytes()))
            .unwrap();
        let pos = k.decode(23, &Column::Binary(&7i32.to_be_bytes())).unwrap();
        let small = k.decode(21, &Column::Binary(&3i16.to_be_bytes())).unwrap();
        assert!(neg < small && small < pos);
        assert_eq!(k.decode(20, &Column::Text(b"7")).unwrap(), pos);
        assert_eq!(k.parse("-5").unwrap(), neg);
        assert_eq!(k.decode(20, &Column::Binary(&[1, 2])), None);
        let u = KeyKind::Uuid;
        let a = u
            .decode(2950, &Column::Text(b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"))
            .unwrap();
        let b = u.parse("a0eebc999c0b4ef8bb6d6bb9bd380a12").unwrap();
        assert!(a < b);
        assert_eq!(u.parse("xyz"), None);
        let t = KeyKind::Text;
        // Byte order: 'B' < 'a' in C, unlike a linguistic collation.
        assert!(t.parse("B").unwrap() < t.parse("a").unwrap());
        let ts = KeyKind::Time { days: false };
        assert_eq!(
            ts.decode(1184, &Column::Binary(&1_000_000i64.to_be_bytes())),
            ts.parse("1000000")
        );
        assert_eq!(ts.decode(1184, &Column::Text(b"2022-01-01")), None);
        // Composite keys compare column by column.
        let k1: Key = vec![KeyValue::Int(1), KeyValue::Bytes(b"z".to_vec())];
        let k2: Key = vec![KeyValue::Int(2), KeyValue::Bytes(b"a".to_vec())];
        assert_eq!(k1.cmp(&k2), std::cmp::Ordering::Less);
    }

    #[test]
    fn kinds_say_why_not() {
        assert!(KeyKind::of(25, false, true)
            .unwrap_err()
            .contains("collation"));
        assert!(KeyKind::of(1184, false, false)
            .unwrap_err()
            .contains("text values"));
        assert!(KeyKind::of(1700, false, true).is_err());
        assert_eq!(KeyKind::of(1043, true, true), Ok(KeyKind::Text));
    }
}
