//! Proof that pgdog's hash sharding is PostgreSQL's hash partitioning: for
//! every key type and 2, 3, 4, 7 and 12 shards, 10,000 random values plus
//! edge values get the shard a real server's `satisfies_hash_partition`
//! says, in text form and in the binary form the server itself sends.

// A test or benchmark: an unwrap that fails is a failure to see.
#![allow(clippy::unwrap_used)]

use pgdog::harness::Cluster;
use pgdog::sharding::{DataType, Format, Function, Sharder};
use pgdog_protocol::copy_binary::Decoder;

const SHARDS: [usize; 5] = [2, 3, 4, 7, 12];
const RANDOM: usize = 10_000;

/// xorshift: deterministic, seeded from the clock, printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Values in COPY text format (no tabs, newlines or backslashes to escape).
fn values(data_type: DataType, rng: &mut Rng) -> Vec<String> {
    let mut out: Vec<String> = match data_type {
        DataType::Bigint => [
            "0",
            "1",
            "-1",
            "9223372036854775807",
            "-9223372036854775808",
            "2147483648",
            "-2147483649",
        ]
        .map(String::from)
        .to_vec(),
        DataType::Integer => ["0", "1", "-1", "2147483647", "-2147483648"]
            .map(String::from)
            .to_vec(),
        DataType::Smallint => ["0", "1", "-1", "32767", "-32768"]
            .map(String::from)
            .to_vec(),
        DataType::Uuid => [
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        ]
        .map(String::from)
        .to_vec(),
        DataType::Text | DataType::Varchar => [
            "",
            "a",
            "żółw",
            "🐢🐢🐢",
            "abcdefghijkl",
            "The quick brown fox jumps over the lazy dog",
        ]
        .map(String::from)
        .to_vec(),
    };
    const CHARS: &[char] = &[
        'a', 'Z', '0', ' ', '-', 'é', 'ż', 'ł', '中', '文', '🐢', 'ß', '\'', '"', '%',
    ];
    for _ in 0..RANDOM {
        let r = rng.next();
        out.push(match data_type {
            DataType::Bigint => (r as i64).to_string(),
            DataType::Integer => (r as i32).to_string(),
            DataType::Smallint => (r as i16).to_string(),
            DataType::Uuid => {
                let b = [r.to_be_bytes(), rng.next().to_be_bytes()].concat();
                let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
                format!(
                    "{}-{}-{}-{}-{}",
                    &h[0..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..32]
                )
            }
            DataType::Text | DataType::Varchar => {
                let len = (r % 40) as usize;
                (0..len)
                    .map(|_| CHARS[(rng.next() % CHARS.len() as u64) as usize])
                    .collect()
            }
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_sharding_matches_postgres_partitioning() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7)
        | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let cluster = Cluster::start_default().unwrap();
    let mut conn = cluster.connect("postgres").await.unwrap();
    for data_type in DataType::ALL {
        let ty = match data_type {
            DataType::Varchar => "varchar(100)",
            other => other.name(),
        };
        let name = data_type.name();
        conn.execute(&format!(
            "CREATE TABLE vals_{name} (i int, v {ty}); CREATE TABLE p_{name} (v {ty}) PARTITION BY HASH (v);"
        ))
        .await
        .unwrap();
        let vals = values(data_type, &mut rng);
        let mut copy = conn
            .copy_in(&format!("COPY vals_{name} FROM STDIN"))
            .await
            .unwrap();
        for (i, v) in vals.iter().enumerate() {
            copy.write(format!("{i}\t{v}\n").as_bytes());
            copy.maybe_flush().await.unwrap();
        }
        // And a NULL key: hash 0, shard 0.
        copy.write(format!("{}\t\\N\n", vals.len()).as_bytes());
        let loaded = copy.finish().await.unwrap();
        assert_eq!(loaded as usize, vals.len() + 1);

        // The partition Postgres picks for each value and modulus.
        let picks: Vec<String> = SHARDS
            .iter()
            .map(|n| {
                format!("(SELECT r FROM generate_series(0, {}) r WHERE satisfies_hash_partition('p_{name}'::regclass, {n}, r, v))", n - 1)
            })
            .collect();
        let rows = conn
            .query(&format!(
                "SELECT v::text, {} FROM vals_{name} ORDER BY i",
                picks.join(", ")
            ))
            .await
            .unwrap();
        // The same values as the server sends them in binary.
        let mut binary = Vec::new();
        {
            let mut out = conn
                .copy_out(&format!(
                    "COPY (SELECT v FROM vals_{name} ORDER BY i) TO STDOUT (FORMAT binary)"
                ))
                .await
                .unwrap();
            let mut dec = Decoder::new();
            while let Some(chunk) = out.next().await.unwrap() {
                dec.push(chunk).unwrap();
                while let Some(row) = dec.next_row().unwrap() {
                    binary.push(row.field(0).unwrap().map(<[u8]>::to_vec));
                }
            }
        }
        assert_eq!(binary.len(), rows.len());
        let mut checked = 0;
        for (k, &n) in SHARDS.iter().enumerate() {
            let sharder = Sharder::new("vals", "v", data_type, Function::Hash, n).unwrap();
            for (row, bin) in rows.iter().zip(&binary) {
                let expected: usize = row.text(k + 1).unwrap().parse().unwrap();
                let text = row.get(0);
                assert_eq!(
                    sharder.shard(text, Format::Text).unwrap(),
                    expected,
                    "{name} {:?} over {n} shards (text)",
                    row.text(0)
                );
                assert_eq!(
                    sharder.shard(bin.as_deref(), Format::Binary).unwrap(),
                    expected,
                    "{name} {:?} over {n} shards (binary)",
                    row.text(0)
                );
                checked += 1;
            }
        }
        eprintln!(
            "{name}: {checked} placements agree with PostgreSQL {}",
            cluster.install.major
        );
    }
}
