//! Sharding: which shard a value belongs to.

pub mod hash;
