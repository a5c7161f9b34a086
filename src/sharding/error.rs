//! Errors of the sharding subsystem: a mapping that cannot be built
//! ([`MappingError`]), and the error the data-sync engine sees for one row
//! ([`ShardingError`]), which carries why a key's bytes could not be read
//! ([`ValueError`], beside the parsing in [`super::value`]).

use thiserror::Error;

use super::value::{DataType, Format, Kind, ValueError};

/// Why a list/range mapping (or a [`Sharder`](super::Sharder) around it) is
/// not usable. `rule` is the index of the offending rule in config order.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MappingError {
    /// `shards = 0`.
    #[error("the shard count is 0; it must be at least 1")]
    ZeroShards,
    /// A list rule with no values.
    #[error("rule {rule} lists no values; give it at least one or remove it")]
    EmptyList { rule: usize },
    /// Values of different kinds (say a number and a uuid) in one mapping.
    #[error(
        "rule {rule} has a {found} value but earlier rules use {expected} values; use one type"
    )]
    MixedTypes {
        rule: usize,
        expected: Kind,
        found: Kind,
    },
    /// Mapping values of a kind the key column's data type cannot produce.
    #[error("rule {rule} has a {found} value but the column's data_type is {data_type}")]
    WrongType {
        rule: usize,
        data_type: DataType,
        found: Kind,
    },
    /// A range whose start is not below its end.
    #[error("rule {rule} is an empty range: start {start} is not below end {end}")]
    EmptyRange {
        rule: usize,
        start: String,
        end: String,
    },
    /// Two ranges that share values.
    #[error("ranges in rules {first} and {second} overlap; make each end at or before the next one starts")]
    Overlap { first: usize, second: usize },
    /// One value listed twice (in one rule or two).
    #[error("value {value} is listed by rules {first} and {second}; list it once")]
    DuplicateValue {
        value: String,
        first: usize,
        second: usize,
    },
    /// A listed value that a range rule covers too.
    #[error(
        "value {value} of list rule {list} is also covered by range rule {range}; keep it in one"
    )]
    ListInRange {
        value: String,
        list: usize,
        range: usize,
    },
    /// More than one default rule.
    #[error("rules {first} and {second} are both defaults; keep one")]
    DuplicateDefault { first: usize, second: usize },
    /// A rule pointing at a shard that does not exist.
    #[error("rule {rule} sends values to shard {shard} but there are only {shards} shards (numbered from 0)")]
    ShardOutOfRange {
        rule: usize,
        shard: usize,
        shards: usize,
    },
}

/// Why one row could not be given a shard.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShardingError {
    /// The key column's bytes are not a value of the configured data type.
    #[error(
        "malformed sharding key in {table}.{column}: {len}-byte {format} {data_type} value: \
         {reason}; check that data_type in the sharding config matches the column's type"
    )]
    Malformed {
        table: String,
        column: String,
        data_type: DataType,
        format: Format,
        /// Length of the value in bytes; the bytes themselves are not kept.
        len: usize,
        reason: ValueError,
    },
    /// A list/range mapping with no rule for this value and no default.
    #[error(
        "value {value} of {table}.{column} matches no mapping rule and there is no default rule; \
         add a {{ shard = N }} default or a rule covering it"
    )]
    Unmapped {
        table: String,
        column: String,
        /// The value as text (`NULL` for a NULL key), cut short if long.
        value: String,
    },
    /// The sharder for this table is misconfigured.
    #[error("sharding config for {table}.{column}: {reason}")]
    Config {
        table: String,
        column: String,
        reason: MappingError,
    },
    /// An operator-supplied value (`pgdog hash VALUE...`) that does not parse.
    #[error("{value:?} is not a valid {data_type}: {reason}")]
    Argument {
        value: String,
        data_type: DataType,
        reason: ValueError,
    },
}
