//! `pgdog schema-sync` and the schema side of `pgdog data-sync` against
//! real servers: a source schema with what applications have (a second
//! schema with quoted names, an extension, enums and domains, a function
//! used by a default, triggers, a partitioned table with its own indexes
//! and a foreign key, an exclusion constraint, a policy, extended
//! statistics, comments, grants to a role every shard has and to one only
//! the source has) plus objects a move must leave out (a view, a table
//! outside the publication, a function tied to it).

// A test or benchmark: an unwrap that fails is a failure to see.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Output;
use std::time::Duration;

use common::*;
use pgdog::data_sync::schema::dump::Entry;
use pgdog::data_sync::Mode;
use pgdog::harness::fleet::DATABASE;
use pgdog::harness::{ClusterOptions, Fleet};

const SCHEMA: &str = r#"
CREATE ROLE reader;
CREATE ROLE app_owner;
CREATE ROLE ghost;
CREATE EXTENSION IF NOT EXISTS btree_gist;
CREATE SCHEMA billing;
CREATE TYPE billing.plan_kind AS ENUM ('free', 'pro');
CREATE DOMAIN billing.cents AS bigint CHECK (VALUE >= 0);
CREATE FUNCTION billing.new_ref() RETURNS text LANGUAGE sql AS $$ SELECT md5(random()::text) $$;
CREATE TABLE billing."Accounts" (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id bigint NOT NULL,
    kind billing.plan_kind NOT NULL DEFAULT 'free',
    ref text NOT NULL DEFAULT billing.new_ref(),
    balance billing.cents NOT NULL DEFAULT 0,
    "Display Name" text
);
CREATE UNIQUE INDEX accounts_ref ON billing."Accounts" (ref);
CREATE INDEX accounts_tenant ON billing."Accounts" (tenant_id);
COMMENT ON INDEX billing.accounts_tenant IS 'per tenant';
CREATE TABLE billing.invoices (
    id bigserial PRIMARY KEY,
    tenant_id bigint NOT NULL,
    account_id bigint NOT NULL REFERENCES billing."Accounts",
    amount billing.cents NOT NULL,
    period tstzrange NOT NULL,
    EXCLUDE USING gist (account_id WITH =, period WITH &&)
);
CREATE TABLE public.events (
    id bigint NOT NULL,
    tenant_id bigint NOT NULL,
    at timestamptz NOT NULL,
    account_id bigint REFERENCES billing."Accounts",
    payload jsonb,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE public.events_2025 PARTITION OF public.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE public.events_2026 PARTITION OF public.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE INDEX events_tenant_at ON public.events (tenant_id, at);
CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.payload := coalesce(NEW.payload, '{}'); RETURN NEW; END $$;
CREATE TRIGGER events_touch BEFORE INSERT ON public.events FOR EACH ROW EXECUTE FUNCTION public.touch();
ALTER TABLE billing.invoices ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_only ON billing.invoices USING (tenant_id > 0);
CREATE STATISTICS billing.invoices_stats ON tenant_id, account_id FROM billing.invoices;
COMMENT ON TABLE billing.invoices IS 'what customers owe';
COMMENT ON COLUMN billing."Accounts"."Display Name" IS 'shown on invoices';
GRANT USAGE ON SCHEMA billing TO reader;
GRANT SELECT ON billing.invoices TO reader;
GRANT SELECT ("Display Name"), UPDATE ("Display Name") ON billing."Accounts" TO reader;
GRANT USAGE ON SEQUENCE billing.invoices_id_seq TO reader WITH GRANT OPTION;
REVOKE EXECUTE ON FUNCTION billing.new_ref() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION billing.new_ref() TO reader;
GRANT INSERT ON public.events TO ghost;
ALTER TABLE billing.invoices OWNER TO app_owner;
ALTER FUNCTION public.touch() OWNER TO ghost;

-- Left out of the move.
CREATE TABLE public.private (id int PRIMARY KEY, secret text);
CREATE VIEW public.private_view AS SELECT id FROM public.private;
CREATE FUNCTION public.private_count() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM public.private; END;
"#;

const ROWS: &str = "
INSERT INTO billing.\"Accounts\" (tenant_id, kind, \"Display Name\")
  SELECT g % 50, (ARRAY['free', 'pro']::billing.plan_kind[])[1 + g % 2], 'Account ' || g FROM generate_series(1, 400) g;
INSERT INTO billing.invoices (tenant_id, account_id, amount, period)
  SELECT a.tenant_id, a.id, k * 100, tstzrange('2025-01-01'::timestamptz + k * interval '1 month', '2025-01-01'::timestamptz + (k + 1) * interval '1 month')
  FROM billing.\"Accounts\" a, generate_series(1, 3) k;
INSERT INTO public.events (id, tenant_id, at, account_id)
  SELECT g, a.tenant_id, '2025-06-01'::timestamptz + (g % 400) * interval '1 day', a.id
  FROM generate_series(1, 2000) g JOIN billing.\"Accounts\" a ON a.id = 1 + g % 400;
INSERT INTO public.private VALUES (1, 'x');
ANALYZE;
CREATE PUBLICATION pub FOR TABLE billing.\"Accounts\", billing.invoices, public.events;
";

/// Every table is sharded on its tenant, which is in none of the keys.
const SHARDING: &str =
    "[[sharded_tables]]\ndatabase = \"dest\"\ncolumn = \"tenant_id\"\ndata_type = \"bigint\"\n";

/// Left out of the move, and the grants to a role the destination lacks.
fn left_out(e: &Entry) -> bool {
    e.tag.contains("private") || e.sql.contains("ghost")
}

/// Roles belong to a server: the destination shards have `reader` and
/// `app_owner` (not `ghost`).
async fn start_fleet(sources: usize) -> Fleet {
    let fleet = Fleet::start(sources, 2, ClusterOptions::default())
        .await
        .unwrap();
    fleet
        .on_dests("CREATE ROLE reader; CREATE ROLE app_owner")
        .await
        .unwrap();
    fleet
}

fn pgdog(files: &ConfigFiles, args: &[&str]) -> Output {
    files
        .command("schema-sync", "pub")
        .args(args)
        .output()
        .expect("run pgdog")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The partitioned table's rows, on the shards of their tenant.
async fn verify_events(fleet: &Fleet) {
    let checks = vec![check(
        "events",
        &["id", "tenant_id", "at", "account_id", "payload"],
        Some("tenant_id"),
        pgdog::sharding::DataType::Bigint,
        2,
        false,
    )];
    verify_equal(fleet, &checks).await;
}

fn tables_on(fleet: &Fleet, d: usize) -> Vec<String> {
    schema_entries(&fleet.dests[d])
        .into_iter()
        .filter(|e| e.kind == "TABLE")
        .map(|e| e.tag)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_sync_is_exact_idempotent_and_names_conflicts() {
    init_logging();
    let fleet = start_fleet(1).await;
    fleet.on_sources(SCHEMA).await.unwrap();
    fleet.on_sources(ROWS).await.unwrap();
    let files = ConfigFiles::write(&fleet, SHARDING);

    // A dry run prints each shard's SQL and what is left out, and
    // changes nothing.
    let out = pgdog(&files, &["--dry-run"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("CREATE TABLE billing.\"Accounts\""),
        "{stdout}"
    );
    assert!(stdout.contains("destination shard 1"), "{stdout}");
    assert!(stdout.contains("CREATE INDEX accounts_tenant"), "{stdout}");
    assert!(stdout.contains("NOT VALID;"), "{stdout}");
    for omitted in [
        "left out: TABLE public.private",
        "left out: VIEW public.private_view",
        "left out: FUNCTION public.private_count()",
    ] {
        assert!(stdout.contains(omitted), "no \"{omitted}\" in:\n{stdout}");
    }
    assert!(tables_on(&fleet, 0).is_empty(), "a dry run created tables");

    // The real run: every shard gets the source's schema, exactly, with
    // its grants; those to a role a shard lacks are left out and said.
    let out = pgdog(&files, &[]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("schema sync done"), "{stderr}");
    assert_same_schema(&fleet, left_out);
    for d in 0..2 {
        assert!(
            stderr.contains(&format!(
                "role \"ghost\" does not exist on destination shard {d}"
            )),
            "{stderr}"
        );
        let mut c = fleet.dests[d].connect(DATABASE).await.unwrap();
        let rows = c
            .query(
                "SELECT has_table_privilege('reader', 'billing.invoices', 'SELECT'),
                        has_column_privilege('reader', 'billing.\"Accounts\"', 'Display Name', 'UPDATE'),
                        has_table_privilege('reader', 'billing.\"Accounts\"', 'SELECT'),
                        has_function_privilege('reader', 'billing.new_ref()', 'EXECUTE'),
                        has_function_privilege('public', 'billing.new_ref()', 'EXECUTE'),
                        has_sequence_privilege('reader', 'billing.invoices_id_seq', 'USAGE WITH GRANT OPTION')",
            )
            .await
            .unwrap();
        let got: Vec<&str> = (0..6).map(|i| rows[0].text(i).unwrap()).collect();
        assert_eq!(got, ["t", "t", "f", "t", "f", "t"], "shard {d}");
        // Owners come along where the role exists; the rest stay pgdog's.
        let rows = c
            .query(
                "SELECT (SELECT tableowner FROM pg_tables WHERE schemaname = 'billing' AND tablename = 'invoices'),
                        (SELECT tableowner FROM pg_tables WHERE schemaname = 'billing' AND tablename = 'Accounts'),
                        (SELECT proowner::regrole::text FROM pg_proc WHERE proname = 'touch')",
            )
            .await
            .unwrap();
        let got: Vec<&str> = (0..3).map(|i| rows[0].text(i).unwrap()).collect();
        assert_eq!(got, ["app_owner", "postgres", "postgres"], "shard {d}");
        assert!(
            stderr.contains(&format!("objects owned by role \"ghost\" on the source stay owned by pgdog's user on destination shard {d}")),
            "{stderr}"
        );
        c.close().await;
    }
    let before: Vec<Vec<Entry>> = fleet.dests.iter().map(schema_entries).collect();

    // Again: nothing to do, nothing changes.
    let out = pgdog(&files, &[]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("schema sync done: 0 statements run"),
        "{stderr}"
    );
    let after: Vec<Vec<Entry>> = fleet.dests.iter().map(schema_entries).collect();
    assert_eq!(before, after, "a second schema sync changed the schema");

    // A table that exists with other columns is an error naming it, the
    // shard and the columns, before anything is created anywhere.
    fleet.dests[1]
        .exec(
            DATABASE,
            "DROP TABLE billing.invoices; CREATE TABLE billing.invoices (id bigint PRIMARY KEY, tenant_id int);
             DROP TABLE public.events CASCADE;",
        )
        .await
        .unwrap();
    let out = pgdog(&files, &[]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "a conflicting table was accepted");
    assert!(
        stderr.contains("table billing.invoices exists on destination shard 1"),
        "{stderr}"
    );
    assert!(stderr.contains("tenant_id integer"), "{stderr}");
    assert!(
        stderr.contains("the source has account_id bigint, amount billing.cents"),
        "{stderr}"
    );
    assert!(
        !tables_on(&fleet, 1).contains(&"events".to_string()),
        "schema sync created objects although a shard conflicts"
    );

    // Without a usable pg_dump, the error says which version and where.
    let files = ConfigFiles::write(&fleet, SHARDING);
    let toml = std::fs::read_to_string(files.dir.join("pgdog.toml")).unwrap();
    let toml: String = toml
        .lines()
        .map(|l| {
            if l.starts_with("pg_dump = ") {
                "pg_dump = \"/nonexistent/bin\"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(files.dir.join("pgdog.toml"), toml).unwrap();
    let out = pgdog(&files, &[]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("needs pg_dump 15 or newer"), "{stderr}");
    assert!(stderr.contains("[general] pg_dump"), "{stderr}");
}

/// `schema-sync --phase pre` first (tables with their primary keys, no
/// secondary indexes), then a data-sync under writes: it copies into the
/// bare tables, builds the indexes and foreign keys of the tables the
/// pre phase created, records both phases, then streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_sync_builds_indexes_after_the_copy() {
    init_logging();
    let fleet = start_fleet(1).await;
    fleet.on_sources(SCHEMA).await.unwrap();
    fleet.on_sources(ROWS).await.unwrap();
    let files = ConfigFiles::write(&fleet, SHARDING);
    let out = pgdog(&files, &["--phase", "pre"]);
    assert!(out.status.success(), "{}", text(&out).1);
    let kinds: Vec<String> = schema_entries(&fleet.dests[0])
        .into_iter()
        .map(|e| format!("{} {}", e.kind, e.tag))
        .collect();
    assert!(
        kinds.contains(&"CONSTRAINT events events_pkey".to_string()),
        "{kinds:?}"
    );
    assert!(
        !kinds
            .iter()
            .any(|k| k.starts_with("INDEX ") && !k.starts_with("INDEX ATTACH")),
        "secondary index before the copy: {kinds:?}"
    );
    assert!(
        !kinds.iter().any(|k| k.starts_with("FK CONSTRAINT")),
        "{kinds:?}"
    );

    let config = fleet.config(SHARDING).unwrap();
    let writer_sql = "INSERT INTO public.events (id, tenant_id, at, account_id)
        SELECT 100000 + (random() * 1000000)::int, 8, '2026-03-01', 8 ON CONFLICT DO NOTHING";
    let mut run = start(config, move_options("pub", Mode::Full));
    run.wait_streaming(Duration::from_secs(120)).await;
    fleet.on_sources(writer_sql).await.unwrap();
    fleet
        .on_sources("UPDATE billing.\"Accounts\" SET balance = balance + 1 WHERE id % 3 = 0")
        .await
        .unwrap();
    fleet
        .wait_caught_up(&run.slot, Duration::from_secs(60))
        .await
        .unwrap();
    // Every index build, attach and validation was shown.
    let items = run.task.schema_items();
    assert!(
        items
            .iter()
            .any(|i| i.step == "index" && i.object == "INDEX public.events_tenant_at"),
        "{:?}",
        items.iter().map(|i| &i.object).collect::<Vec<_>>()
    );
    // What the move leaves out is listed with its reason.
    let listed: Vec<(String, Option<String>)> = items
        .iter()
        .filter(|i| i.state() == pgdog::data_sync::progress::SchemaState::LeftOut)
        .map(|i| (i.object.clone(), i.message()))
        .collect();
    for (what, why) in [
        // The table and view outside the publication: pg_dump is told
        // to leave them out.
        ("2 relations", "not in the publication"),
        (
            "FUNCTION public.private_count()",
            "tied to a table or view that is not moved",
        ),
    ] {
        assert!(
            listed
                .iter()
                .any(|(o, m)| o == what && m.as_deref().is_some_and(|m| m.starts_with(why))),
            "{what} ({why}) not in {listed:?}"
        );
    }
    assert!(
        items
            .iter()
            .filter(|i| i.state() != pgdog::data_sync::progress::SchemaState::LeftOut)
            .all(|i| matches!(i.state(), pgdog::data_sync::progress::SchemaState::Done)),
        "{:?}",
        items
            .iter()
            .map(|i| (&i.object, i.state(), i.message()))
            .collect::<Vec<_>>()
    );
    // The copied tables were analyzed, also the partitioned table that
    // autovacuum never analyzes.
    for (d, c) in fleet.dests.iter().enumerate() {
        let mut conn = c.connect(DATABASE).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let rows = conn
                .query(
                    "SELECT (SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE schemaname = 'billing' AND relname = 'invoices'),
                            EXISTS (SELECT 1 FROM pg_stats WHERE schemaname = 'public' AND tablename = 'events'),
                            (SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'events_2026'),
                            (SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE schemaname = 'billing' AND relname = 'Accounts')",
                )
                .await
                .unwrap();
            let got: Vec<&str> = (0..4).map(|i| rows[0].text(i).unwrap_or("")).collect();
            if got == ["t", "t", "t", "t"] {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "shard {d} not analyzed: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        conn.close().await;
    }
    run.stop().await.unwrap();
    assert_same_schema(&fleet, left_out);
    for c in &fleet.dests {
        let mut conn = c.connect(DATABASE).await.unwrap();
        let rows = conn
            .query("SELECT string_agg(phase, ',' ORDER BY phase), (SELECT count(*) FROM pgdog.schema_tables) FROM pgdog.schema_phases")
            .await
            .unwrap();
        assert_eq!(rows[0].text(0), Some("post,pre"));
        // billing.Accounts, billing.invoices, events and its 2 partitions.
        assert_eq!(rows[0].text(1), Some("5"));
        conn.close().await;
    }
    verify_events(&fleet).await;
}

/// What a move of an older pgdog leaves when it is killed after pre-data:
/// tables created without their primary keys (deferred to after the
/// copy) and recorded for the slot. The rerun must accept them, build the
/// keys (before its copy, which streams meanwhile), copy, build every
/// index, and stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_resumed_after_pre_data_builds_the_deferred_keys() {
    use pgdog::data_sync::{schema, Endpoints, Registry};
    init_logging();
    let fleet = start_fleet(1).await;
    fleet.on_sources(SCHEMA).await.unwrap();
    fleet.on_sources(ROWS).await.unwrap();
    let config = fleet.config(SHARDING).unwrap();
    let opts = move_options("pub", Mode::Full);
    let endpoints = Endpoints::new(config.clone(), "source", "pgdog", "dest", "pgdog").unwrap();
    let settings = schema::Settings::from_config(&config);
    let source = schema::read_source(&endpoints, "pub", &settings)
        .await
        .unwrap();
    let registry = Registry::default();
    let task = registry.new_task("source", "dest", "pub");
    let token = tokio_util::sync::CancellationToken::new();
    schema::pre_data(
        &endpoints,
        &source,
        &opts.slot_name(),
        &task,
        &token,
        schema::PreData {
            defer_identity: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let kinds: Vec<String> = schema_entries(&fleet.dests[1])
        .into_iter()
        .map(|e| format!("{} {}", e.kind, e.tag))
        .collect();
    assert!(kinds.contains(&"TABLE invoices".to_string()), "{kinds:?}");
    assert!(
        !kinds.iter().any(|k| k.starts_with("CONSTRAINT")),
        "primary keys were not deferred: {kinds:?}"
    );

    let mut run = start(config, opts);
    run.wait_streaming(Duration::from_secs(120)).await;
    fleet
        .on_sources("UPDATE billing.\"Accounts\" SET tenant_id = tenant_id + 1 WHERE id % 5 = 0")
        .await
        .unwrap();
    fleet
        .wait_caught_up(&run.slot, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(run.missing_rows(), 0);
    run.stop().await.unwrap();
    assert_same_schema(&fleet, left_out);
    verify_events(&fleet).await;
}

/// The schema is read from source shard 0 and made once for every
/// destination shard, so another source shard with a different schema is
/// refused before anything is created, naming what differs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_shards_with_different_schemas_are_refused() {
    init_logging();
    let fleet = start_fleet(2).await;
    fleet.on_sources(SCHEMA).await.unwrap();
    fleet.on_sources(ROWS).await.unwrap();
    fleet.sources[1]
        .exec(
            DATABASE,
            "CREATE INDEX invoices_amount ON billing.invoices (amount);
             ALTER TABLE public.events ADD COLUMN note text;
             CREATE ROLE monitoring;",
        )
        .await
        .unwrap();
    let files = ConfigFiles::write(&fleet, SHARDING);
    let out = pgdog(&files, &[]);
    let (_, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "differing source shards were accepted"
    );
    assert!(
        stderr.contains("INDEX billing.invoices_amount is on source shard 1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("TABLE public.events differs between source shard 0 and source shard 1"),
        "{stderr}"
    );
    // Roles are each server's own: not a difference.
    assert!(!stderr.contains("monitoring"), "{stderr}");
    assert!(tables_on(&fleet, 0).is_empty(), "something was created");
}

/// pgdog connecting to the destination as a user that is not a superuser
/// (a managed service's admin): it inherits `app_owner` but `app_owner`
/// may not create in the schemas pgdog made, so PostgreSQL refuses to
/// give it the table. That is a warning and the table stays pgdog's; the
/// schema and every grant are still made, and the sync succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_user_without_superuser_keeps_what_it_cannot_give_away() {
    init_logging();
    let fleet = start_fleet(1).await;
    fleet.on_sources(SCHEMA).await.unwrap();
    fleet.on_sources(ROWS).await.unwrap();
    fleet
        .on_dests(&format!(
            "CREATE ROLE mover LOGIN; GRANT CREATE ON DATABASE {DATABASE} TO mover; GRANT app_owner TO mover;
             GRANT SET ON PARAMETER session_replication_role TO mover; GRANT CREATE ON SCHEMA public TO mover;"
        ))
        .await
        .unwrap();
    let files = ConfigFiles::write(&fleet, SHARDING);
    let users = fleet.users_toml().replacen(
        "database = \"dest\"\nserver_user = \"postgres\"",
        "database = \"dest\"\nserver_user = \"mover\"",
        1,
    );
    assert!(users.contains("server_user = \"mover\""), "{users}");
    std::fs::write(files.dir.join("users.toml"), users).unwrap();

    let out = pgdog(&files, &[]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("could not give an object its source owner, it stays owned by mover"),
        "{stderr}"
    );
    for (d, c) in fleet.dests.iter().enumerate() {
        let mut conn = c.connect(DATABASE).await.unwrap();
        let rows = conn
            .query(
                "SELECT (SELECT tableowner FROM pg_tables WHERE schemaname = 'billing' AND tablename = 'invoices'),
                        has_table_privilege('reader', 'billing.invoices', 'SELECT')",
            )
            .await
            .unwrap();
        let got: Vec<&str> = (0..2).map(|i| rows[0].text(i).unwrap()).collect();
        assert_eq!(got, ["mover", "t"], "shard {d}");
        conn.close().await;
    }
}
