//! Sharding: which shard a row belongs to, exactly as PostgreSQL hash
//! partitioning would place it (or as list/range rules say).
//!
//! The config loader builds one [`Sharder`] per sharded table; the data-sync
//! engine calls [`Sharder::shard`] with the key column of every copied or
//! replicated row. `pgdog hash` uses [`shards_of_values`].

mod error;
pub mod hash;
pub mod mapping;
pub mod value;

use std::num::NonZeroUsize;

pub use error::{MappingError, ShardingError};
pub use mapping::{Mapping, Rule};
pub use value::ValueError;
pub use value::{DataType, Format, Kind, Value, ValueRef};

/// How a table's key picks a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Function {
    /// Postgres hash partitioning: shard `i` of `n` holds the rows a
    /// partition `FOR VALUES WITH (MODULUS n, REMAINDER i)` would.
    Hash,
    /// List and range rules.
    Mapping(Mapping),
}

/// How one sharded table is split: its key column's data type, the function
/// and the shard count. `table` and `column` are only for error messages.
///
/// NULL keys go where Postgres puts them: with [`Function::Hash`] a NULL
/// hashes to 0 and lands on shard 0; with a mapping only a default rule
/// takes NULL, and without one the row is an [`ShardingError::Unmapped`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sharder {
    pub table: String,
    pub column: String,
    pub data_type: DataType,
    pub function: Function,
    pub shards: usize,
}

impl Sharder {
    /// A sharder whose mapping (if any) fits the data type and shard count.
    pub fn new(
        table: impl Into<String>,
        column: impl Into<String>,
        data_type: DataType,
        function: Function,
        shards: usize,
    ) -> Result<Sharder, ShardingError> {
        let sharder = Sharder {
            table: table.into(),
            column: column.into(),
            data_type,
            function,
            shards,
        };
        sharder
            .validate()
            .map_err(|reason| sharder.config_error(reason))?;
        Ok(sharder)
    }

    /// What [`Sharder::new`] checks, for a sharder built field by field.
    pub fn validate(&self) -> Result<(), MappingError> {
        if self.shards == 0 {
            return Err(MappingError::ZeroShards);
        }
        if let Function::Mapping(mapping) = &self.function {
            mapping.check_shards(self.shards)?;
            if let Some(found) = mapping.kind() {
                if found != self.data_type.kind() {
                    let rule = mapping
                        .rules()
                        .iter()
                        .position(|rule| !matches!(rule, Rule::Default { .. }))
                        .unwrap_or(0);
                    return Err(MappingError::WrongType {
                        rule,
                        data_type: self.data_type,
                        found,
                    });
                }
            }
        }
        Ok(())
    }

    /// The shard of a row whose key column holds `value` (`None` for NULL)
    /// in `format`. Does not allocate unless it fails.
    // Inlined into the caller's row loop (measured 3x faster from another
    // crate): the hash's latency then overlaps from one row to the next.
    #[inline]
    pub fn shard(&self, value: Option<&[u8]>, format: Format) -> Result<usize, ShardingError> {
        let key = match value {
            Some(bytes) => Some(self.data_type.parse(bytes, format).map_err(|reason| {
                ShardingError::Malformed {
                    table: self.table.clone(),
                    column: self.column.clone(),
                    data_type: self.data_type,
                    format,
                    len: bytes.len(),
                    reason,
                }
            })?),
            None => None,
        };
        self.shard_value(key)
    }

    /// The shard of an already parsed key.
    #[inline]
    pub fn shard_value(&self, key: Option<ValueRef<'_>>) -> Result<usize, ShardingError> {
        // A sharder built field by field may not have been validated; these
        // two checks are what stands between a bad config and a panic or an
        // index past the shard list in the caller.
        if self.shards == 0 {
            return Err(self.config_error(MappingError::ZeroShards));
        }
        match &self.function {
            Function::Hash => Ok(hash::hash_shard(key, self.shards)),
            Function::Mapping(mapping) => match mapping.shard(key) {
                Some(shard) if shard < self.shards => Ok(shard),
                Some(shard) => Err(self.config_error(MappingError::ShardOutOfRange {
                    rule: mapping
                        .rules()
                        .iter()
                        .position(|rule| rule.shard() == shard)
                        .unwrap_or_default(),
                    shard,
                    shards: self.shards,
                })),
                None => Err(ShardingError::Unmapped {
                    table: self.table.clone(),
                    column: self.column.clone(),
                    value: key.map_or_else(|| "NULL".to_owned(), ValueRef::describe),
                }),
            },
        }
    }

    fn config_error(&self, reason: MappingError) -> ShardingError {
        ShardingError::Config {
            table: self.table.clone(),
            column: self.column.clone(),
            reason,
        }
    }
}

/// The hash shard of each text-format value, in order: the operator's
/// `pgdog hash --data-type bigint --shards 4 VALUE...`.
pub fn shards_of_values<S: AsRef<str>>(
    data_type: DataType,
    shards: NonZeroUsize,
    values: &[S],
) -> Result<Vec<usize>, ShardingError> {
    values
        .iter()
        .map(|value| {
            let value = value.as_ref();
            data_type
                .parse(value.as_bytes(), Format::Text)
                .map(|key| hash::hash_shard(Some(key), shards.get()))
                .map_err(|reason| ShardingError::Argument {
                    value: value.to_owned(),
                    data_type,
                    reason,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Shard counts of the pinned placements below.
    const SHARD_COUNTS: [usize; 5] = [2, 3, 4, 7, 12];

    /// Where PostgreSQL 15.18 (x86-64) put each value: for every type and
    /// each shard count n in [`SHARD_COUNTS`], a table
    /// `CREATE TABLE p (k <type>) PARTITION BY HASH (k)` with n partitions
    /// `FOR VALUES WITH (MODULUS n, REMAINDER r)`; the value was inserted and
    /// `tableoid::regclass` read back. `varchar` placed every value exactly
    /// as `text` did.
    const PLACEMENTS: &[(DataType, Option<&str>, [usize; 5])] = &[
        (DataType::Bigint, Some("0"), [0, 2, 0, 4, 8]),
        (DataType::Bigint, Some("1"), [0, 2, 0, 5, 8]),
        (DataType::Bigint, Some("-1"), [1, 2, 1, 0, 5]),
        (DataType::Bigint, Some("42"), [0, 0, 2, 0, 6]),
        (DataType::Bigint, Some("2147483647"), [1, 1, 3, 0, 7]),
        (DataType::Bigint, Some("2147483648"), [0, 0, 2, 3, 6]),
        (DataType::Bigint, Some("-2147483648"), [0, 0, 2, 3, 6]),
        (DataType::Bigint, Some("-2147483649"), [1, 1, 3, 0, 7]),
        (DataType::Bigint, Some("1234567890123"), [1, 0, 3, 0, 3]),
        (
            DataType::Bigint,
            Some("9223372036854775807"),
            [0, 0, 2, 3, 6],
        ),
        (
            DataType::Bigint,
            Some("-9223372036854775808"),
            [1, 1, 3, 0, 7],
        ),
        (DataType::Bigint, None, [0, 0, 0, 0, 0]),
        (DataType::Integer, Some("32767"), [0, 1, 2, 5, 10]),
        (DataType::Integer, Some("-32768"), [1, 0, 1, 0, 9]),
        (DataType::Integer, Some("42"), [0, 0, 2, 0, 6]),
        (DataType::Smallint, Some("-1"), [1, 2, 1, 0, 5]),
        (DataType::Smallint, Some("32767"), [0, 1, 2, 5, 10]),
        (DataType::Text, Some(""), [0, 2, 2, 1, 2]),
        (DataType::Text, Some("a"), [0, 2, 2, 3, 2]),
        (DataType::Text, Some("abc"), [1, 1, 1, 3, 1]),
        (DataType::Text, Some("żółw"), [1, 2, 3, 1, 11]),
        (DataType::Text, Some("abcdefghijk"), [1, 0, 3, 3, 3]),
        (DataType::Text, Some("abcdefghijkl"), [1, 1, 1, 3, 1]),
        (DataType::Text, Some("abcdefghijklm"), [0, 1, 2, 0, 10]),
        (
            DataType::Text,
            Some("The quick brown fox jumps over the lazy dog"),
            [1, 1, 1, 1, 1],
        ),
        (DataType::Text, None, [0, 0, 0, 0, 0]),
        (DataType::Varchar, Some("żółw"), [1, 2, 3, 1, 11]),
        (
            DataType::Uuid,
            Some("00000000-0000-0000-0000-000000000000"),
            [1, 0, 1, 2, 9],
        ),
        (
            DataType::Uuid,
            Some("ffffffff-ffff-ffff-ffff-ffffffffffff"),
            [1, 1, 1, 0, 1],
        ),
        (
            DataType::Uuid,
            Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            [0, 1, 0, 6, 4],
        ),
        (
            DataType::Uuid,
            Some("550e8400-e29b-41d4-a716-446655440000"),
            [1, 2, 1, 4, 5],
        ),
        (DataType::Uuid, None, [0, 0, 0, 0, 0]),
    ];

    fn hash_sharder(data_type: DataType, shards: usize) -> Sharder {
        Sharder::new("users", "id", data_type, Function::Hash, shards).unwrap()
    }

    /// The binary send format of a text-format value.
    fn binary(data_type: DataType, text: &str) -> Vec<u8> {
        match data_type.parse_text(text).unwrap() {
            Value::Int(value) => match data_type {
                DataType::Smallint => i16::try_from(value).unwrap().to_be_bytes().to_vec(),
                DataType::Integer => i32::try_from(value).unwrap().to_be_bytes().to_vec(),
                _ => value.to_be_bytes().to_vec(),
            },
            Value::Uuid(bytes) => bytes.to_vec(),
            Value::Text(text) => text.into_bytes(),
        }
    }

    #[test]
    fn placements_match_postgres() {
        for &(data_type, value, expected) in PLACEMENTS {
            for (&shards, &expected) in SHARD_COUNTS.iter().zip(&expected) {
                let sharder = hash_sharder(data_type, shards);
                let context = format!("{data_type} {value:?} over {shards} shards");
                let text = value.map(str::as_bytes);
                assert_eq!(sharder.shard(text, Format::Text), Ok(expected), "{context}");
                let binary = value.map(|value| binary(data_type, value));
                assert_eq!(
                    sharder.shard(binary.as_deref(), Format::Binary),
                    Ok(expected),
                    "{context}"
                );
            }
        }
    }

    #[test]
    fn integer_widths_land_together() {
        // An int2, int4 and int8 column holding the same value, whatever the
        // configured integer type: Postgres' hashint8extended folds the high
        // half in so the three agree, and so do we.
        for value in [0i16, 1, -1, 42, i16::MIN, i16::MAX] {
            let widths = [
                value.to_be_bytes().to_vec(),
                i32::from(value).to_be_bytes().to_vec(),
                i64::from(value).to_be_bytes().to_vec(),
            ];
            for data_type in [DataType::Smallint, DataType::Integer, DataType::Bigint] {
                for shards in [2, 3, 7, 12, 1000] {
                    let sharder = hash_sharder(data_type, shards);
                    let expected = hash::hash_shard(Some(ValueRef::Int(value.into())), shards);
                    for bytes in &widths {
                        assert_eq!(sharder.shard(Some(bytes), Format::Binary), Ok(expected));
                    }
                }
            }
        }
    }

    #[test]
    fn malformed_values_name_table_column_and_length() {
        let sharder = hash_sharder(DataType::Bigint, 4);
        let error = sharder.shard(Some(&[1, 2, 3]), Format::Binary).unwrap_err();
        assert_eq!(
            error,
            ShardingError::Malformed {
                table: "users".into(),
                column: "id".into(),
                data_type: DataType::Bigint,
                format: Format::Binary,
                len: 3,
                reason: ValueError::IntegerLength { actual: 3 },
            }
        );
        assert_eq!(
            error.to_string(),
            "malformed sharding key in users.id: 3-byte binary bigint value: binary integer \
             is 3 bytes long; expected 2, 4 or 8; check that data_type in the sharding config \
             matches the column's type"
        );

        let uuid = hash_sharder(DataType::Uuid, 4);
        let error = uuid.shard(Some(b"not-a-uuid"), Format::Text).unwrap_err();
        assert!(matches!(
            error,
            ShardingError::Malformed {
                len: 10,
                reason: ValueError::BadUuid { at: 0 },
                ..
            }
        ));
        assert!(error.to_string().contains("users.id"));

        let text = hash_sharder(DataType::Text, 4);
        let error = text.shard(Some(b"caf\xe9"), Format::Binary).unwrap_err();
        let message = error.to_string();
        assert!(matches!(
            error,
            ShardingError::Malformed {
                len: 4,
                reason: ValueError::NotUtf8 { valid_up_to: 3 },
                ..
            }
        ));
        assert!(
            message.contains("users.id") && message.contains("4-byte"),
            "{message}"
        );
    }

    fn country_sharder() -> Sharder {
        let mapping = Mapping::new(vec![
            Rule::List {
                values: vec![Value::Int(1), Value::Int(2)],
                shard: 0,
            },
            Rule::Range {
                start: Some(Value::Int(100)),
                end: None,
                shard: 1,
            },
        ])
        .unwrap();
        Sharder::new(
            "users",
            "id",
            DataType::Bigint,
            Function::Mapping(mapping),
            2,
        )
        .unwrap()
    }

    #[test]
    fn mapping_sharder() {
        let sharder = country_sharder();
        assert_eq!(sharder.shard(Some(b"2"), Format::Text), Ok(0));
        assert_eq!(
            sharder.shard(Some(&100i32.to_be_bytes()), Format::Binary),
            Ok(1)
        );
        let error = sharder.shard(Some(b"42"), Format::Text).unwrap_err();
        assert_eq!(
            error.to_string(),
            "value 42 of users.id matches no mapping rule and there is no default rule; \
             add a { shard = N } default or a rule covering it"
        );
        let error = sharder.shard(None, Format::Binary).unwrap_err();
        assert!(matches!(error, ShardingError::Unmapped { ref value, .. } if value == "NULL"));

        let mut with_default = sharder.clone();
        let Function::Mapping(mapping) = &sharder.function else {
            unreachable!()
        };
        let mut rules = mapping.rules().to_vec();
        rules.push(Rule::Default { shard: 1 });
        with_default.function = Function::Mapping(Mapping::new(rules).unwrap());
        assert_eq!(with_default.shard(Some(b"42"), Format::Text), Ok(1));
        assert_eq!(with_default.shard(None, Format::Text), Ok(1));
    }

    #[test]
    fn unmapped_text_is_quoted_and_cut_short() {
        let mapping = Mapping::new(vec![Rule::List {
            values: vec![Value::Text("eu".into())],
            shard: 0,
        }])
        .unwrap();
        let sharder = Sharder::new(
            "users",
            "region",
            DataType::Text,
            Function::Mapping(mapping),
            1,
        )
        .unwrap();
        let long = "x".repeat(1000);
        let error = sharder
            .shard(Some(long.as_bytes()), Format::Text)
            .unwrap_err();
        let ShardingError::Unmapped { value, .. } = error else {
            panic!("{error:?}")
        };
        assert_eq!(value, format!("'{}'...", "x".repeat(64)));
    }

    #[test]
    fn config_checks() {
        let error = Sharder::new("users", "id", DataType::Bigint, Function::Hash, 0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "sharding config for users.id: the shard count is 0; it must be at least 1"
        );

        let Function::Mapping(mapping) = country_sharder().function else {
            unreachable!()
        };
        let wrong_type = Sharder::new(
            "users",
            "id",
            DataType::Uuid,
            Function::Mapping(mapping.clone()),
            2,
        );
        assert!(matches!(
            wrong_type,
            Err(ShardingError::Config {
                reason: MappingError::WrongType {
                    found: Kind::Integer,
                    data_type: DataType::Uuid,
                    ..
                },
                ..
            })
        ));
        let too_few = Sharder::new(
            "users",
            "id",
            DataType::Integer,
            Function::Mapping(mapping),
            1,
        );
        assert!(matches!(
            too_few,
            Err(ShardingError::Config {
                reason: MappingError::ShardOutOfRange {
                    rule: 1,
                    shard: 1,
                    shards: 1
                },
                ..
            })
        ));

        // Built field by field and never validated: still no panic.
        let mut unchecked = hash_sharder(DataType::Bigint, 2);
        unchecked.shards = 0;
        assert!(matches!(
            unchecked.shard(Some(b"1"), Format::Text),
            Err(ShardingError::Config { .. })
        ));
        let mut unchecked = country_sharder();
        unchecked.shards = 1;
        assert!(matches!(
            unchecked.shard(Some(b"100"), Format::Text),
            Err(ShardingError::Config {
                reason: MappingError::ShardOutOfRange { .. },
                ..
            })
        ));
    }

    #[test]
    fn hash_command_helper() {
        let shards = NonZeroUsize::new(4).unwrap();
        assert_eq!(
            shards_of_values(DataType::Bigint, shards, &["0", "42", "-1"]),
            Ok(vec![0, 2, 1])
        );
        assert_eq!(
            shards_of_values(DataType::Text, shards, &[String::from("żółw")]),
            Ok(vec![3])
        );
        let error = shards_of_values(DataType::Uuid, shards, &["nope"]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("\"nope\" is not a valid uuid: "),
            "{error}"
        );
    }

    fn key_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..40)
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(bytes in key_bytes(), shards in 1usize..64) {
            let mapping = Mapping::new(vec![Rule::Range {
                start: Some(Value::Int(0)),
                end: None,
                shard: 0,
            }])
            .unwrap();
            for data_type in DataType::ALL {
                let mut sharders = vec![hash_sharder(data_type, shards)];
                if data_type.kind() == Kind::Integer {
                    sharders.push(
                        Sharder::new("t", "k", data_type, Function::Mapping(mapping.clone()), shards)
                            .unwrap(),
                    );
                }
                for sharder in &sharders {
                    for format in [Format::Text, Format::Binary] {
                        if let Ok(shard) = sharder.shard(Some(&bytes), format) {
                            prop_assert!(shard < shards);
                        }
                    }
                }
            }
        }

        #[test]
        fn integer_text_and_binary_agree(value in any::<i64>(), shards in 1usize..64) {
            let sharder = hash_sharder(DataType::Bigint, shards);
            let text = sharder.shard(Some(value.to_string().as_bytes()), Format::Text);
            prop_assert_eq!(&text, &sharder.shard(Some(&value.to_be_bytes()), Format::Binary));
            if let Ok(narrow) = i32::try_from(value) {
                prop_assert_eq!(&text, &sharder.shard(Some(&narrow.to_be_bytes()), Format::Binary));
            }
            if let Ok(narrow) = i16::try_from(value) {
                prop_assert_eq!(&text, &sharder.shard(Some(&narrow.to_be_bytes()), Format::Binary));
            }
        }

        #[test]
        fn uuid_text_and_binary_agree(bytes in any::<[u8; 16]>(), shards in 1usize..64) {
            let sharder = hash_sharder(DataType::Uuid, shards);
            let binary = sharder.shard(Some(&bytes), Format::Binary);
            prop_assert!(binary.is_ok());
            let text = ValueRef::Uuid(bytes).to_string();
            prop_assert_eq!(&binary, &sharder.shard(Some(text.as_bytes()), Format::Text));
            let braced = format!("{{{}}}", text.to_uppercase());
            prop_assert_eq!(&binary, &sharder.shard(Some(braced.as_bytes()), Format::Text));
        }

        #[test]
        fn text_formats_agree(text in any::<String>(), shards in 1usize..64) {
            for data_type in [DataType::Text, DataType::Varchar] {
                let sharder = hash_sharder(data_type, shards);
                let binary = sharder.shard(Some(text.as_bytes()), Format::Binary);
                prop_assert!(binary.is_ok());
                prop_assert_eq!(&binary, &sharder.shard(Some(text.as_bytes()), Format::Text));
            }
        }
    }
}
