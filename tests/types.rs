//! Every column type of the fixtures through a 1→2 move, on PostgreSQL 15
//! and on the newer server: uuid and text sharding keys, NULLs everywhere,
//! TOASTed values left unchanged by updates, a row moving between shards
//! with an unchanged TOASTed value (fetched from its old shard), a generated
//! column, an enum array (copied as text: its binary form names server
//! OIDs), REPLICA IDENTITY USING INDEX, and a large transaction streamed
//! before it commits.

// A test or benchmark: an unwrap that fails is a failure to see.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use pgdog::data_sync::Mode;
use pgdog::harness::fleet::DATABASE;
use pgdog::harness::{ClusterOptions, Fleet, PgInstall};
use pgdog::sharding::DataType;

const SCHEMA: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE typed (
    id uuid PRIMARY KEY,
    i8 bigint, i4 int, i2 smallint, num numeric(20,5), txt text, big text, bin bytea,
    flag bool, f8 float8, f4 real, ts timestamptz, d date, t time, iv interval,
    js jsonb, jn json, ia int[], ta text[], m mood, ip inet,
    gen bigint GENERATED ALWAYS AS (i8 * 2) STORED
);
CREATE TABLE tagged (name text PRIMARY KEY, moods mood[], note text);
CREATE TABLE keyed (code int NOT NULL, v text);
CREATE UNIQUE INDEX keyed_code ON keyed (code);
ALTER TABLE keyed REPLICA IDENTITY USING INDEX keyed_code;
";

const SHARDING: &str = "
[[sharded_tables]]
database = \"dest\"
name = \"typed\"
column = \"id\"
data_type = \"uuid\"

[[sharded_tables]]
database = \"dest\"
name = \"tagged\"
column = \"name\"
data_type = \"text\"

[[sharded_tables]]
database = \"dest\"
name = \"keyed\"
column = \"code\"
data_type = \"integer\"
";

const LOAD: &str = "
INSERT INTO typed (id, i8, i4, i2, num, txt, big, bin, flag, f8, f4, ts, d, t, iv, js, jn, ia, ta, m, ip)
SELECT md5(g::text)::uuid,
       CASE WHEN g % 7 = 0 THEN NULL ELSE g::bigint * 1000003 END,
       CASE WHEN g % 11 = 0 THEN NULL ELSE g END,
       CASE WHEN g % 13 = 0 THEN NULL ELSE (g % 30000)::smallint END,
       CASE WHEN g % 5 = 0 THEN NULL ELSE g / 7.0 END,
       CASE WHEN g % 3 = 0 THEN NULL ELSE 'żółw 🐢 ' || g END,
       CASE WHEN g % 100 = 0 THEN (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 4000) i) END,
       CASE WHEN g % 4 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END,
       CASE WHEN g % 6 = 0 THEN NULL ELSE g % 2 = 0 END,
       CASE WHEN g % 8 = 0 THEN NULL ELSE g * 1.5 END,
       CASE WHEN g % 9 = 0 THEN NULL ELSE g * 0.25 END,
       CASE WHEN g % 10 = 0 THEN NULL ELSE '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute' END,
       CASE WHEN g % 12 = 0 THEN NULL ELSE '2024-01-01'::date + g END,
       CASE WHEN g % 14 = 0 THEN NULL ELSE '00:00'::time + g * interval '1 second' END,
       CASE WHEN g % 15 = 0 THEN NULL ELSE g * interval '1 hour' END,
       CASE WHEN g % 16 = 0 THEN NULL ELSE jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g)) END,
       CASE WHEN g % 17 = 0 THEN NULL ELSE json_build_object('n', g) END,
       CASE WHEN g % 18 = 0 THEN NULL ELSE ARRAY[g, NULL, g + 1] END,
       CASE WHEN g % 19 = 0 THEN NULL ELSE ARRAY['x' || g, NULL, 'tab\there'] END,
       CASE WHEN g % 20 = 0 THEN NULL ELSE (ARRAY['sad', 'ok', 'happy'])[g % 3 + 1]::mood END,
       CASE WHEN g % 21 = 0 THEN NULL ELSE ('10.0.' || (g % 256) || '.1')::inet END
FROM generate_series(1, 3000) g;
INSERT INTO tagged
SELECT 'name ' || g || CASE WHEN g % 10 = 0 THEN E' with\\ttab and \\\\ backslash' ELSE '' END,
       CASE WHEN g % 4 = 0 THEN NULL ELSE ARRAY['happy', 'sad']::mood[] END,
       CASE WHEN g % 25 = 0 THEN (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 3000) i) ELSE 'note ' || g END
FROM generate_series(1, 2000) g;
INSERT INTO keyed SELECT g, 'v' || g FROM generate_series(1, 1000) g;
CREATE PUBLICATION pub FOR TABLE typed, tagged, keyed;
";

/// Changes while streaming: every kind, on every table.
const CHANGES: &str = "
UPDATE typed SET i4 = coalesce(i4, 0) + 1, js = '{\"changed\": true}' WHERE i8 % 3 = 0;   -- big left unchanged (TOAST)
UPDATE typed SET big = NULL WHERE id = md5('200')::uuid;
UPDATE typed SET txt = NULL, bin = '\\x00ff', ia = '{}' WHERE i4 % 10 = 1;
DELETE FROM typed WHERE i2 % 17 = 0;
INSERT INTO typed (id, i8, txt, m, ta) VALUES (gen_random_uuid(), 42, 'new', 'ok', ARRAY['a\\b']);
UPDATE tagged SET moods = ARRAY['ok']::mood[] WHERE name LIKE 'name 1%';
-- key changes: rows move between shards; notes of every 25th row are TOASTed
-- and unchanged, so their value comes from the old shard
UPDATE tagged SET name = name || ' moved' WHERE name LIKE 'name 2%';
DELETE FROM tagged WHERE name LIKE 'name 3%';
UPDATE keyed SET code = code + 100000 WHERE code % 3 = 0;
UPDATE keyed SET v = 'changed' WHERE code % 3 = 1;
DELETE FROM keyed WHERE code % 3 = 2 AND code < 500;
-- a transaction large enough to be streamed before it commits
BEGIN;
INSERT INTO keyed SELECT g, repeat('x', 200) FROM generate_series(200000, 230000) g;
SAVEPOINT s1;
INSERT INTO keyed SELECT g, 'rolled back' FROM generate_series(300000, 301000) g;
ROLLBACK TO SAVEPOINT s1;
UPDATE keyed SET v = 'in big txn' WHERE code BETWEEN 200000 AND 200100;
COMMIT;
-- and one that is streamed and then aborted
BEGIN;
INSERT INTO keyed SELECT g, 'aborted' FROM generate_series(400000, 430000) g;
ROLLBACK;
";

async fn move_all_types(install: Option<PgInstall>) {
    let mut cluster_options =
        ClusterOptions::default().setting("logical_decoding_work_mem", "64kB");
    cluster_options.install = install;
    let fleet = Fleet::start(1, 2, cluster_options).await.unwrap();
    fleet.on_sources(SCHEMA).await.unwrap();
    fleet.on_dests(SCHEMA).await.unwrap();
    fleet.on_sources(LOAD).await.unwrap();
    let config = fleet.config(SHARDING).unwrap();
    let mut run = start(config, move_options("pub", Mode::Full));
    run.wait_streaming(Duration::from_secs(60)).await;
    fleet.sources[0].exec(DATABASE, CHANGES).await.unwrap();
    fleet
        .wait_caught_up(&run.slot, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(run.missing_rows(), 0);
    run.stop().await.unwrap();
    let checks = vec![
        check(
            "typed",
            &[
                "id", "i8", "i4", "i2", "num", "txt", "big", "bin", "flag", "f8", "f4", "ts", "d",
                "t", "iv", "js", "jn", "ia", "ta", "m", "ip", "gen",
            ],
            Some("id"),
            DataType::Uuid,
            2,
            false,
        ),
        check(
            "tagged",
            &["name", "moods", "note"],
            Some("name"),
            DataType::Text,
            2,
            false,
        ),
        check(
            "keyed",
            &["code", "v"],
            Some("code"),
            DataType::Integer,
            2,
            false,
        ),
    ];
    verify_equal(&fleet, &checks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_types_pg15() {
    move_all_types(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_types_newer_postgres() {
    let Some(install) = PgInstall::newest_at_least(16) else {
        pgdog::harness::skip_unless_ci("no PostgreSQL 16+ found (run scripts/fetch-postgres.sh)");
        return;
    };
    move_all_types(Some(install)).await;
}
