//! Sharding keys: the column types a table can be sharded on, and reading one
//! column value, as COPY or a replication message delivers it, into a key.
//!
//! [`ValueRef`] borrows from the row and is what the per-row path uses (no
//! allocation); [`Value`] owns its text and is what config rules hold.

use std::fmt;

use serde::Deserialize;
use thiserror::Error;

/// Why the bytes of one sharding key could not be read as its data type.
///
/// Never carries the key's bytes: a binary value may be anything, and error
/// messages end up in logs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValueError {
    /// A binary integer that is not an int2, int4 or int8.
    #[error("binary integer is {actual} bytes long; expected 2, 4 or 8")]
    IntegerLength { actual: usize },
    /// A binary uuid that is not 16 bytes.
    #[error("binary uuid is {actual} bytes long; expected 16")]
    UuidLength { actual: usize },
    /// Text that is not UTF-8.
    #[error(
        "not valid UTF-8 (first bad byte at offset {valid_up_to}); \
         sharding on text needs a UTF8 source database"
    )]
    NotUtf8 { valid_up_to: usize },
    /// Text-format integer with something other than an optional sign and
    /// decimal digits (surrounding whitespace is allowed, as in Postgres).
    #[error("not a decimal integer")]
    NotANumber,
    /// Text-format integer outside the bigint range.
    #[error("integer out of the bigint range")]
    OutOfRange,
    /// Text that Postgres' `uuid_in` would reject.
    #[error(
        "not a uuid (unexpected input at byte {at}); expected 32 hex digits, \
         optionally with a hyphen after any group of 4 and wrapped in braces"
    )]
    BadUuid { at: usize },
}

/// The type of a sharding key column, as spelled in the sharding config.
///
/// `smallint`, `integer` and `bigint` are interchangeable: Postgres hashes
/// equal values of the three identically, and binary input of any of the
/// three widths is accepted whichever is configured. `varchar` and `text` are
/// interchangeable too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    Bigint,
    Integer,
    Smallint,
    Uuid,
    Varchar,
    Text,
}

/// How a column value is encoded: Postgres' text output or its binary
/// send format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Binary,
}

/// The three kinds of keys the data types boil down to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Integer,
    Uuid,
    Text,
}

/// A parsed sharding key borrowing from the row it was read from.
///
/// Ordering is numeric for integers and bytewise for uuids (as Postgres
/// orders uuids) and for text (Postgres' `C` collation, not the database's).
/// Keys of different kinds are never compared by the sharding code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ValueRef<'a> {
    Int(i64),
    Uuid([u8; 16]),
    Text(&'a str),
}

/// An owned sharding key, as held by list and range rules.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    Int(i64),
    Uuid([u8; 16]),
    Text(String),
}

impl DataType {
    /// Every data type, in declaration order.
    pub const ALL: [DataType; 6] = [
        DataType::Bigint,
        DataType::Integer,
        DataType::Smallint,
        DataType::Uuid,
        DataType::Varchar,
        DataType::Text,
    ];

    /// The config spelling (`bigint`, `varchar`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DataType::Bigint => "bigint",
            DataType::Integer => "integer",
            DataType::Smallint => "smallint",
            DataType::Uuid => "uuid",
            DataType::Varchar => "varchar",
            DataType::Text => "text",
        }
    }

    /// The kind of key this type parses into.
    pub fn kind(self) -> Kind {
        match self {
            DataType::Bigint | DataType::Integer | DataType::Smallint => Kind::Integer,
            DataType::Uuid => Kind::Uuid,
            DataType::Varchar | DataType::Text => Kind::Text,
        }
    }

    /// A Postgres type name as `format_type` or `information_schema` print
    /// it: `bigint`/`int8`, `integer`/`int4`/`int`, `smallint`/`int2`,
    /// `uuid`, `character varying`/`varchar`, `text`. Case and surrounding
    /// whitespace are ignored, and so is a type modifier such as `(255)`.
    pub fn from_type_name(name: &str) -> Option<DataType> {
        let name = name.trim();
        // `character varying(255)` -> `character varying`
        let name = match name.find('(') {
            Some(open) if name.ends_with(')') => name[..open].trim_end(),
            _ => name,
        };
        let known = [
            ("bigint", DataType::Bigint),
            ("int8", DataType::Bigint),
            ("integer", DataType::Integer),
            ("int4", DataType::Integer),
            ("int", DataType::Integer),
            ("smallint", DataType::Smallint),
            ("int2", DataType::Smallint),
            ("uuid", DataType::Uuid),
            ("character varying", DataType::Varchar),
            ("varchar", DataType::Varchar),
            ("text", DataType::Text),
        ];
        known
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|&(_, data_type)| data_type)
    }

    /// The data type of a built-in type OID, as a pgoutput Relation message
    /// or a RowDescription gives it.
    pub fn from_type_oid(oid: u32) -> Option<DataType> {
        // Fixed OIDs from pg_type.dat.
        match oid {
            20 => Some(DataType::Bigint),
            23 => Some(DataType::Integer),
            21 => Some(DataType::Smallint),
            2950 => Some(DataType::Uuid),
            1043 => Some(DataType::Varchar),
            25 => Some(DataType::Text),
            _ => None,
        }
    }

    /// Reads one non-NULL column value. Never allocates; never panics.
    ///
    /// - Integers, binary: 2, 4 or 8 bytes big-endian, whichever the
    ///   configured integer type (the column may be narrower than configured).
    /// - Integers, text: what Postgres 15's `int8in` takes: optional
    ///   surrounding whitespace, an optional sign, decimal digits. The
    ///   value is not checked against the range of `smallint` or `integer`.
    /// - Uuid, binary: 16 bytes. Text: what `uuid_in` takes (32 hex digits,
    ///   either case, an optional hyphen after each group of 4, optional
    ///   braces, nothing else).
    /// - Text and varchar: the bytes, which must be UTF-8, in both formats.
    ///   Text-format values must already be unescaped (COPY's text format
    ///   escapes backslashes and control characters; undoing that is the
    ///   COPY reader's job).
    #[inline]
    pub fn parse<'a>(self, bytes: &'a [u8], format: Format) -> Result<ValueRef<'a>, ValueError> {
        match (self.kind(), format) {
            (Kind::Integer, Format::Binary) => parse_int_binary(bytes).map(ValueRef::Int),
            (Kind::Integer, Format::Text) => parse_int_text(bytes).map(ValueRef::Int),
            (Kind::Uuid, Format::Binary) => <[u8; 16]>::try_from(bytes)
                .map(ValueRef::Uuid)
                .map_err(|_| ValueError::UuidLength {
                    actual: bytes.len(),
                }),
            (Kind::Uuid, Format::Text) => parse_uuid_text(bytes).map(ValueRef::Uuid),
            (Kind::Text, _) => std::str::from_utf8(bytes)
                .map(ValueRef::Text)
                .map_err(|error| ValueError::NotUtf8 {
                    valid_up_to: error.valid_up_to(),
                }),
        }
    }

    /// Parses a text-format value into an owned key, for config rules and
    /// operator input.
    pub fn parse_text(self, text: &str) -> Result<Value, ValueError> {
        self.parse(text.as_bytes(), Format::Text)
            .map(ValueRef::to_value)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Text => "text",
            Format::Binary => "binary",
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Integer => "integer",
            Kind::Uuid => "uuid",
            Kind::Text => "text",
        })
    }
}

impl<'a> ValueRef<'a> {
    pub fn kind(&self) -> Kind {
        match self {
            ValueRef::Int(_) => Kind::Integer,
            ValueRef::Uuid(_) => Kind::Uuid,
            ValueRef::Text(_) => Kind::Text,
        }
    }

    pub fn to_value(self) -> Value {
        match self {
            ValueRef::Int(value) => Value::Int(value),
            ValueRef::Uuid(value) => Value::Uuid(value),
            ValueRef::Text(value) => Value::Text(value.to_owned()),
        }
    }

    /// The value for an error message: text is quoted and cut to its first
    /// 64 characters so one huge key cannot flood a log line.
    pub(crate) fn describe(self) -> String {
        const LIMIT: usize = 64;
        match self {
            ValueRef::Text(text) => match text.char_indices().nth(LIMIT) {
                Some((cut, _)) => format!("{}...", ValueRef::Text(&text[..cut])),
                None => self.to_string(),
            },
            _ => self.to_string(),
        }
    }
}

impl Value {
    pub fn kind(&self) -> Kind {
        self.as_value_ref().kind()
    }

    pub fn as_value_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Int(value) => ValueRef::Int(*value),
            Value::Uuid(value) => ValueRef::Uuid(*value),
            Value::Text(value) => ValueRef::Text(value),
        }
    }
}

impl<'a> From<&'a Value> for ValueRef<'a> {
    fn from(value: &'a Value) -> Self {
        value.as_value_ref()
    }
}

impl From<ValueRef<'_>> for Value {
    fn from(value: ValueRef<'_>) -> Self {
        value.to_value()
    }
}

/// Integers bare, uuids in canonical hyphenated lowercase, text as a SQL
/// string literal (`'it''s'`).
impl fmt::Display for ValueRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueRef::Int(value) => write!(f, "{value}"),
            ValueRef::Uuid(bytes) => {
                for (i, byte) in bytes.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
            ValueRef::Text(text) => {
                f.write_str("'")?;
                for (i, part) in text.split('\'').enumerate() {
                    if i > 0 {
                        f.write_str("''")?;
                    }
                    f.write_str(part)?;
                }
                f.write_str("'")
            }
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_value_ref().fmt(f)
    }
}

fn parse_int_binary(bytes: &[u8]) -> Result<i64, ValueError> {
    if let Ok(int8) = <[u8; 8]>::try_from(bytes) {
        Ok(i64::from_be_bytes(int8))
    } else if let Ok(int4) = <[u8; 4]>::try_from(bytes) {
        Ok(i32::from_be_bytes(int4).into())
    } else if let Ok(int2) = <[u8; 2]>::try_from(bytes) {
        Ok(i16::from_be_bytes(int2).into())
    } else {
        Err(ValueError::IntegerLength {
            actual: bytes.len(),
        })
    }
}

/// The C library's `isspace` in the C locale, which is what Postgres trims.
fn is_c_space(byte: &u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn parse_int_text(bytes: &[u8]) -> Result<i64, ValueError> {
    let start = bytes
        .iter()
        .position(|b| !is_c_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_c_space(b))
        .map_or(start, |last| last + 1);
    let digits = &bytes[start..end];
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(ValueError::NotANumber);
    }
    // Accumulate towards the sign so that i64::MIN does not overflow.
    let mut value: i64 = 0;
    for digit in digits {
        let digit = i64::from(digit - b'0');
        value = value
            .checked_mul(10)
            .and_then(|v| {
                if negative {
                    v.checked_sub(digit)
                } else {
                    v.checked_add(digit)
                }
            })
            .ok_or(ValueError::OutOfRange)?;
    }
    Ok(value)
}

/// Hex digit values by byte; `0xff` marks a byte that is not a hex digit, so
/// or-ing two lookups and testing the high nibble checks both at once.
const HEX: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Where each byte's two hex digits start in the canonical 8-4-4-4-12 form.
const CANONICAL: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

/// The grammar of Postgres' `string_to_uuid`: optional `{`, then 16 pairs of
/// hex digits where a single `-` may follow any even-numbered pair but the
/// last, then `}` if the braces were opened, then the end.
fn parse_uuid_text(bytes: &[u8]) -> Result<[u8; 16], ValueError> {
    // The form Postgres prints (and pgoutput sends), without branching per
    // digit; any other form, or a bad digit, takes the general path.
    if let Ok(text) = <&[u8; 36]>::try_from(bytes) {
        if [8, 13, 18, 23].iter().all(|&at| text[at] == b'-') {
            let mut uuid = [0u8; 16];
            let mut seen = 0u8;
            for (out, &at) in uuid.iter_mut().zip(&CANONICAL) {
                let (high, low) = (HEX[usize::from(text[at])], HEX[usize::from(text[at + 1])]);
                seen |= high | low;
                *out = (high << 4) | (low & 0x0f);
            }
            if seen & 0xf0 == 0 {
                return Ok(uuid);
            }
        }
    }
    let digit = |at: usize| {
        bytes
            .get(at)
            .map(|&b| HEX[usize::from(b)])
            .filter(|&d| d < 16)
    };
    let braces = bytes.first() == Some(&b'{');
    let mut at = usize::from(braces);
    let mut uuid = [0u8; 16];
    for (i, out) in uuid.iter_mut().enumerate() {
        match (digit(at), digit(at + 1)) {
            (Some(high), Some(low)) => *out = (high << 4) | low,
            (None, _) => return Err(ValueError::BadUuid { at }),
            (Some(_), None) => return Err(ValueError::BadUuid { at: at + 1 }),
        }
        at += 2;
        if i % 2 == 1 && i < 15 && bytes.get(at) == Some(&b'-') {
            at += 1;
        }
    }
    if braces {
        if bytes.get(at) != Some(&b'}') {
            return Err(ValueError::BadUuid { at });
        }
        at += 1;
    }
    if at != bytes.len() {
        return Err(ValueError::BadUuid { at });
    }
    Ok(uuid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UUID: [u8; 16] = [
        0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a,
        0x11,
    ];

    fn text(data_type: DataType, input: &str) -> Result<ValueRef<'_>, ValueError> {
        data_type.parse(input.as_bytes(), Format::Text)
    }

    #[test]
    fn binary_integers_of_every_width() {
        for data_type in [DataType::Bigint, DataType::Integer, DataType::Smallint] {
            let parse = |bytes: &[u8]| {
                data_type
                    .parse(bytes, Format::Binary)
                    .map(ValueRef::to_value)
            };
            assert_eq!(parse(&(-2i16).to_be_bytes()), Ok(Value::Int(-2)));
            assert_eq!(
                parse(&i32::MIN.to_be_bytes()),
                Ok(Value::Int(i32::MIN.into()))
            );
            assert_eq!(parse(&i64::MAX.to_be_bytes()), Ok(Value::Int(i64::MAX)));
            for len in [0, 1, 3, 5, 7, 9, 16] {
                assert_eq!(
                    parse(&vec![0; len]),
                    Err(ValueError::IntegerLength { actual: len })
                );
            }
        }
    }

    #[test]
    fn text_integers_follow_int8in() {
        let bigint = |input| text(DataType::Bigint, input);
        assert_eq!(bigint("42"), Ok(ValueRef::Int(42)));
        assert_eq!(bigint("+7"), Ok(ValueRef::Int(7)));
        assert_eq!(bigint("-0"), Ok(ValueRef::Int(0)));
        assert_eq!(bigint(" \t42\n "), Ok(ValueRef::Int(42)));
        assert_eq!(bigint("-9223372036854775808"), Ok(ValueRef::Int(i64::MIN)));
        assert_eq!(bigint("9223372036854775807"), Ok(ValueRef::Int(i64::MAX)));
        assert_eq!(bigint("9223372036854775808"), Err(ValueError::OutOfRange));
        assert_eq!(bigint("-9223372036854775809"), Err(ValueError::OutOfRange));
        for bad in [
            "", " ", "-", "+", "42abc", "4 2", "--1", "+-1", "0x10", "1_000", "١",
        ] {
            assert_eq!(bigint(bad), Err(ValueError::NotANumber), "{bad:?}");
        }
        // Lenient about the narrower types' ranges: the column cannot hold
        // such a value anyway, and the hash does not depend on the width.
        assert_eq!(text(DataType::Smallint, "70000"), Ok(ValueRef::Int(70000)));
    }

    #[test]
    fn uuids_in_every_form_uuid_in_accepts() {
        for accepted in [
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "{A0EEBC999C0B4EF8BB6D6BB9BD380A11}",
            "a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        ] {
            assert_eq!(
                text(DataType::Uuid, accepted),
                Ok(ValueRef::Uuid(UUID)),
                "{accepted}"
            );
        }
        for (rejected, at) in [
            ("", 0),
            ("a0eebc999-c0b-4ef8-bb6d-6bb9bd380a11", 9),
            ("{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", 37),
            ("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", 36),
            ("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-", 36),
            ("a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11", 9),
            (" a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", 0),
            ("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", 35),
            ("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g", 35),
            ("-a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", 0),
            ("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 ", 36),
        ] {
            assert_eq!(
                text(DataType::Uuid, rejected),
                Err(ValueError::BadUuid { at }),
                "{rejected}"
            );
        }
    }

    #[test]
    fn binary_uuid_is_16_bytes() {
        assert_eq!(
            DataType::Uuid.parse(&UUID, Format::Binary),
            Ok(ValueRef::Uuid(UUID))
        );
        assert_eq!(
            DataType::Uuid.parse(&UUID[..15], Format::Binary),
            Err(ValueError::UuidLength { actual: 15 })
        );
        assert_eq!(
            DataType::Uuid.parse(b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", Format::Binary),
            Err(ValueError::UuidLength { actual: 36 })
        );
    }

    #[test]
    fn text_must_be_utf8_in_both_formats() {
        for format in [Format::Text, Format::Binary] {
            for data_type in [DataType::Text, DataType::Varchar] {
                assert_eq!(
                    data_type.parse("żółw".as_bytes(), format),
                    Ok(ValueRef::Text("żółw"))
                );
                assert_eq!(data_type.parse(b"", format), Ok(ValueRef::Text("")));
                assert_eq!(
                    data_type.parse(b"ab\xffcd", format),
                    Err(ValueError::NotUtf8 { valid_up_to: 2 })
                );
            }
        }
    }

    #[test]
    fn type_names() {
        // Every spelling of each type, `|` between them.
        for (names, expected) in [
            ("bigint|INT8", DataType::Bigint),
            ("integer|int4|Int", DataType::Integer),
            ("smallint|int2", DataType::Smallint),
            ("uuid", DataType::Uuid),
            (
                "character varying|character varying(255)|varchar| varchar (10) ",
                DataType::Varchar,
            ),
            ("text|TEXT", DataType::Text),
        ] {
            for name in names.split('|') {
                assert_eq!(DataType::from_type_name(name), Some(expected), "{name}");
            }
        }
        for unknown in ["", "numeric", "int16", "character", "json", "text[]", "("] {
            assert_eq!(DataType::from_type_name(unknown), None, "{unknown}");
        }
        for data_type in DataType::ALL {
            assert_eq!(DataType::from_type_name(data_type.name()), Some(data_type));
        }
        assert_eq!(DataType::from_type_oid(20), Some(DataType::Bigint));
        assert_eq!(DataType::from_type_oid(2950), Some(DataType::Uuid));
        assert_eq!(DataType::from_type_oid(1700), None);
    }

    #[test]
    fn data_type_deserializes_from_config_spelling() {
        #[derive(Deserialize)]
        struct Table {
            data_type: DataType,
        }
        let table: Table = toml::from_str("data_type = \"varchar\"").unwrap();
        assert_eq!(table.data_type, DataType::Varchar);
        assert!(toml::from_str::<Table>("data_type = \"int8\"").is_err());
    }

    #[test]
    fn display() {
        assert_eq!(ValueRef::Int(-5).to_string(), "-5");
        assert_eq!(
            ValueRef::Uuid(UUID).to_string(),
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
        );
        assert_eq!(Value::Text("it's".into()).to_string(), "'it''s'");
        let long = "ż".repeat(100);
        assert_eq!(
            ValueRef::Text(&long).describe(),
            format!("'{}'...", "ż".repeat(64))
        );
        // Display and parse agree for uuids.
        let shown = ValueRef::Uuid(UUID).to_string();
        assert_eq!(text(DataType::Uuid, &shown), Ok(ValueRef::Uuid(UUID)));
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            for data_type in DataType::ALL {
                for format in [Format::Text, Format::Binary] {
                    if let Ok(value) = data_type.parse(&bytes, format) {
                        prop_assert_eq!(value.kind(), data_type.kind());
                    }
                }
            }
        }

        #[test]
        fn text_integers_round_trip(value in any::<i64>()) {
            let shown = value.to_string();
            prop_assert_eq!(text(DataType::Bigint, &shown), Ok(ValueRef::Int(value)));
        }

        #[test]
        fn uuid_text_round_trips(bytes in any::<[u8; 16]>()) {
            let shown = ValueRef::Uuid(bytes).to_string();
            prop_assert_eq!(text(DataType::Uuid, &shown), Ok(ValueRef::Uuid(bytes)));
            let upper = format!("{{{}}}", shown.to_uppercase().replace('-', ""));
            prop_assert_eq!(text(DataType::Uuid, &upper), Ok(ValueRef::Uuid(bytes)));
        }
    }
}
