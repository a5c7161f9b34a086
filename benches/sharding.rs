//! Throughput of the per-row sharding path: hashing a key as Postgres hash
//! partitioning does, and a whole `Sharder::shard` on a binary COPY field.
//!
//! Run with `cargo bench --bench sharding`; every benchmark reports keys per
//! second.

// A test or benchmark: an unwrap that fails is a failure to see.
#![allow(clippy::unwrap_used)]

use divan::counter::ItemsCount;
use divan::{black_box, Bencher};
use pgdog::sharding::hash::hash_shard;
use pgdog::sharding::{DataType, Format, Function, Sharder, ValueRef};

fn main() {
    divan::main();
}

/// Keys hashed per benchmark iteration.
const KEYS: usize = 4096;
/// A shard count that is not a power of two. Benchmarks read it through
/// `black_box`, as the engine reads it from config, so the modulo is not
/// turned into a multiplication by a constant.
const SHARDS: usize = 12;

/// Spread-out bigint keys, the same on every run.
fn bigint_keys() -> Vec<i64> {
    (0..KEYS as i64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_u64 as i64))
        .collect()
}

#[divan::bench]
fn hash_bigint(bencher: Bencher) {
    let keys = bigint_keys();
    let shards = black_box(SHARDS);
    bencher.counter(ItemsCount::new(KEYS)).bench(|| {
        keys.iter()
            .map(|&key| hash_shard(Some(ValueRef::Int(black_box(key))), shards))
            .sum::<usize>()
    });
}

/// Text keys of `len` bytes (ASCII, so every length is valid UTF-8).
#[divan::bench(args = [8, 36, 256])]
fn hash_text(bencher: Bencher, len: usize) {
    let keys: Vec<String> = (0..KEYS).map(|i| format!("{i:0>len$}")).collect();
    let shards = black_box(SHARDS);
    bencher.counter(ItemsCount::new(KEYS)).bench(|| {
        keys.iter()
            .map(|key| hash_shard(Some(ValueRef::Text(black_box(key))), shards))
            .sum::<usize>()
    });
}

/// Parse an 8-byte big-endian field, hash it, pick the shard: what the data
/// sync does for every row of a binary COPY of a table sharded on bigint.
#[divan::bench]
fn sharder_binary_bigint(bencher: Bencher) {
    let sharder = Sharder::new(
        "users",
        "id",
        DataType::Bigint,
        Function::Hash,
        black_box(SHARDS),
    )
    .expect("valid sharder");
    let fields: Vec<[u8; 8]> = bigint_keys().iter().map(|key| key.to_be_bytes()).collect();
    bencher.counter(ItemsCount::new(KEYS)).bench(|| {
        fields
            .iter()
            .map(|field| {
                sharder
                    .shard(Some(black_box(field)), Format::Binary)
                    .unwrap_or(0)
            })
            .sum::<usize>()
    });
}

/// The same for a uuid key in text form, as pgoutput sends it by default.
#[divan::bench]
fn sharder_text_uuid(bencher: Bencher) {
    let sharder = Sharder::new(
        "users",
        "id",
        DataType::Uuid,
        Function::Hash,
        black_box(SHARDS),
    )
    .expect("valid sharder");
    let fields: Vec<String> = bigint_keys()
        .iter()
        .map(|&key| {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&key.to_be_bytes());
            bytes[8..].copy_from_slice(&key.rotate_left(17).to_le_bytes());
            ValueRef::Uuid(bytes).to_string()
        })
        .collect();
    bencher.counter(ItemsCount::new(KEYS)).bench(|| {
        fields
            .iter()
            .map(|field| {
                sharder
                    .shard(Some(black_box(field.as_bytes())), Format::Text)
                    .unwrap_or(0)
            })
            .sum::<usize>()
    });
}
