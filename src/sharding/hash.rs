//! PostgreSQL's hash partitioning, bit for bit: Bob Jenkins' lookup3 hash as
//! Postgres ships it (`src/common/hashfn.c`), the per-type "extended" hash
//! functions, and how `compute_partition_hash_value` (`partbounds.c`) turns
//! a key into a remainder. [`hash_shard`] is what `FOR VALUES WITH (MODULUS
//! n, REMAINDER r)` partitions agree with.
//!
//! Postgres reads the key's bytes as native-endian 32-bit words, so a server
//! on a big-endian CPU places rows differently; this module reproduces the
//! little-endian servers (x86-64, arm64), whatever CPU pgdog runs on.

use super::value::ValueRef;

/// The seed Postgres passes to every extended hash function when it hashes a
/// partition key (`HASH_PARTITION_SEED` in `partition.h`).
pub const HASH_PARTITION_SEED: u64 = 0x7A5B_2236_7996_DCFD;

/// lookup3's internal state: three 32-bit words.
#[derive(Clone, Copy)]
struct State {
    a: u32,
    b: u32,
    c: u32,
}

impl State {
    /// The starting state for a key of `len` bytes. A non-zero seed is mixed
    /// in as if it were one more 12-byte block of input (high word, low word,
    /// zero).
    #[inline(always)]
    fn new(len: u32, seed: u64) -> State {
        let init = 0x9e37_79b9_u32.wrapping_add(len).wrapping_add(3_923_095);
        let mut state = State {
            a: init,
            b: init,
            c: init,
        };
        if seed != 0 {
            state.a = state.a.wrapping_add((seed >> 32) as u32);
            state.b = state.b.wrapping_add(seed as u32);
            state.mix();
        }
        state
    }

    /// Adds one 12-byte block's words.
    #[inline(always)]
    fn add(&mut self, a: u32, b: u32, c: u32) {
        self.a = self.a.wrapping_add(a);
        self.b = self.b.wrapping_add(b);
        self.c = self.c.wrapping_add(c);
    }

    /// lookup3's reversible `mix`, run after every full block.
    #[inline(always)]
    fn mix(&mut self) {
        // Each step: x -= z; x ^= z <<< r; z += y, rotating the roles.
        let State {
            mut a,
            mut b,
            mut c,
        } = *self;
        for (ra, rb, rc) in [(4, 6, 8), (16, 19, 4)] {
            a = a.wrapping_sub(c) ^ c.rotate_left(ra);
            c = c.wrapping_add(b);
            b = b.wrapping_sub(a) ^ a.rotate_left(rb);
            a = a.wrapping_add(c);
            c = c.wrapping_sub(b) ^ b.rotate_left(rc);
            b = b.wrapping_add(a);
        }
        *self = State { a, b, c };
    }

    /// lookup3's `final`; Postgres' 64-bit result is `b` above `c`.
    #[inline(always)]
    fn finish(self) -> u64 {
        let State {
            mut a,
            mut b,
            mut c,
        } = self;
        c = (c ^ b).wrapping_sub(b.rotate_left(14));
        a = (a ^ c).wrapping_sub(c.rotate_left(11));
        b = (b ^ a).wrapping_sub(a.rotate_left(25));
        c = (c ^ b).wrapping_sub(b.rotate_left(16));
        a = (a ^ c).wrapping_sub(c.rotate_left(4));
        b = (b ^ a).wrapping_sub(a.rotate_left(14));
        c = (c ^ b).wrapping_sub(b.rotate_left(24));
        (u64::from(b) << 32) | u64::from(c)
    }
}

/// Little-endian word at `at` of a block.
#[inline(always)]
fn word(block: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]])
}

/// Postgres' `hash_bytes_extended` (behind `hash_any_extended`): the 64-bit
/// lookup3 hash of `key`, perturbed by `seed` unless it is 0.
pub fn hash_bytes_extended(key: &[u8], seed: u64) -> u64 {
    // Postgres takes the length as an int; varlena values stay under 1 GB.
    let mut state = State::new(key.len() as u32, seed);
    let mut blocks = key.chunks_exact(12);
    for block in &mut blocks {
        state.add(word(block, 0), word(block, 4), word(block, 8));
        state.mix();
    }
    // The last 0 to 11 bytes, zero-padded. Postgres shifts the bytes that go
    // into `c` up by one (its low byte was once meant for the length); the
    // 12th byte is always padding, so nothing is shifted out.
    let rest = blocks.remainder();
    let mut tail = [0u8; 12];
    tail[..rest.len()].copy_from_slice(rest);
    state.add(word(&tail, 0), word(&tail, 4), word(&tail, 8) << 8);
    state.finish()
}

/// Postgres' `hash_uint32_extended`: the same as hashing the four bytes of
/// `k`, without storing them.
pub fn hash_uint32_extended(k: u32, seed: u64) -> u64 {
    let mut state = State::new(4, seed);
    state.add(k, 0, 0);
    state.finish()
}

/// Postgres' `hashint8extended`. The high half is folded into the low half
/// so that a value that fits in 32 bits hashes as `hashint4extended` (and
/// `hashint2extended`) would hash it: the three integer types agree.
pub fn hash_int8_extended(value: i64, seed: u64) -> u64 {
    let low = value as u32;
    let high = (value >> 32) as u32;
    let folded = if value >= 0 { low ^ high } else { low ^ !high };
    hash_uint32_extended(folded, seed)
}

/// The extended hash Postgres' default hash operator class uses for the
/// key's type: `hashint8extended` (equal to `hashint4extended` and
/// `hashint2extended` on their ranges), `uuid_hash_extended` (the 16 bytes)
/// or `hashtextextended` (the bytes, for a deterministic collation; `varchar`
/// uses the text operator class).
pub fn hash_value_extended(value: ValueRef<'_>, seed: u64) -> u64 {
    match value {
        ValueRef::Int(value) => hash_int8_extended(value, seed),
        ValueRef::Uuid(bytes) => hash_bytes_extended(&bytes, seed),
        ValueRef::Text(text) => hash_bytes_extended(text.as_bytes(), seed),
    }
}

/// Postgres' `hash_combine64` (`hashfn.h`), used to fold each key column's
/// hash into the row's.
pub fn hash_combine64(a: u64, b: u64) -> u64 {
    a ^ b
        .wrapping_add(0x49a0_f4dd_15e5_a8e3)
        .wrapping_add(a << 54)
        .wrapping_add(a >> 7)
}

/// The row hash `compute_partition_hash_value` computes for a one-column
/// partition key: the key's extended hash with [`HASH_PARTITION_SEED`],
/// combined into 0. A NULL key contributes nothing, so its hash is 0.
pub fn partition_hash(value: Option<ValueRef<'_>>) -> u64 {
    match value {
        Some(value) => hash_combine64(0, hash_value_extended(value, HASH_PARTITION_SEED)),
        None => 0,
    }
}

/// The shard (the partition remainder) Postgres would pick for this key
/// with `shards` hash partitions of equal modulus. NULL goes to shard 0.
///
/// # Panics
///
/// If `shards` is 0.
pub fn hash_shard(value: Option<ValueRef<'_>>, shards: usize) -> usize {
    // The remainder is below `shards`, so it fits back in a usize.
    (partition_hash(value) % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed as psql wants it: a signed int8.
    const SEED_AS_INT8: i64 = 8816678312871386365;

    // Every expected value below was read from PostgreSQL 15.18 on x86-64,
    // e.g. `SELECT hashint8extended(42, 8816678312871386365)`; negative
    // results were shifted by 2^64 to print them unsigned.

    #[test]
    fn seed_is_the_one_psql_takes() {
        assert_eq!(HASH_PARTITION_SEED as i64, SEED_AS_INT8);
    }

    #[test]
    fn int8_matches_hashint8extended() {
        for (value, expected) in [
            (0, 14043151463718383821),
            (1, 5968994663651403477),
            (-1, 13429671726050313922),
            (42, 7363975540656877951),
            (2147483648, 4938542303000433043),
            (1234567890123, 4234184308168508908),
            (i64::MIN, 12396478474604902556),
            // Folds to the same word as 2^31, so the same hash.
            (i64::MAX, 4938542303000433043),
        ] {
            assert_eq!(
                hash_int8_extended(value, HASH_PARTITION_SEED),
                expected,
                "{value}"
            );
        }
        // Without a seed (`hashint8extended(42, 0)`), the mix of the seed is
        // skipped altogether.
        assert_eq!(hash_int8_extended(42, 0), 8010225493015854792);
    }

    #[test]
    fn int4_and_int2_hash_like_int8() {
        // `hashint4extended(v, seed)` and `hashint2extended(v::int2, seed)`
        // returned the same numbers as `hashint8extended` for 0, -1 and 42.
        for value in [0i16, -1, 42] {
            let int8 = hash_int8_extended(value.into(), HASH_PARTITION_SEED);
            let int4 = hash_uint32_extended(i32::from(value) as u32, HASH_PARTITION_SEED);
            assert_eq!(int8, int4);
        }
    }

    #[test]
    fn text_matches_hashtextextended() {
        for (text, expected) in [
            ("", 12746098489256034243),
            ("a", 11741518614589318779),
            ("abc", 3628778498291917250),
            ("żółw", 14878844045778440728),
            ("abcdefghijk", 16400308765164184184),
            ("abcdefghijkl", 10569952532096173958),
            ("abcdefghijklm", 11660989958984271539),
            (
                "The quick brown fox jumps over the lazy dog",
                5870222023910117606,
            ),
        ] {
            assert_eq!(
                hash_bytes_extended(text.as_bytes(), HASH_PARTITION_SEED),
                expected,
                "{text:?}"
            );
        }
        assert_eq!(hash_bytes_extended(b"abc", 0), 11698987603481062295);
    }

    #[test]
    fn uuid_matches_uuid_hash_extended() {
        let a0ee = [
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
            0x0a, 0x11,
        ];
        for (uuid, expected) in [
            ([0x00; 16], 13165661927312822978),
            ([0xff; 16], 18297757609368245406),
            (a0ee, 424513190990560493),
        ] {
            assert_eq!(
                hash_value_extended(ValueRef::Uuid(uuid), HASH_PARTITION_SEED),
                expected
            );
        }
    }

    #[test]
    fn uint32_is_bytes_of_the_word() {
        for k in [0u32, 1, 0xdead_beef, u32::MAX] {
            for seed in [0, 1, HASH_PARTITION_SEED] {
                assert_eq!(
                    hash_uint32_extended(k, seed),
                    hash_bytes_extended(&k.to_le_bytes(), seed)
                );
            }
        }
    }

    #[test]
    fn null_is_hash_zero_and_shard_zero() {
        assert_eq!(partition_hash(None), 0);
        for shards in 1..20 {
            assert_eq!(hash_shard(None, shards), 0);
        }
    }

    #[test]
    fn combine_into_zero_adds_the_constant() {
        assert_eq!(hash_combine64(0, 1), 0x49a0_f4dd_15e5_a8e4);
        assert_eq!(hash_combine64(0, u64::MAX), 0x49a0_f4dd_15e5_a8e2);
    }
}
