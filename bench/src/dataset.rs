//! The benchmark's data: accounts, events, TOASTed documents, and the
//! write load (pgbench scripts) for the catch-up and steady-state figures.

pub const TABLES: &[&str] = &["accounts", "events", "documents", "pings"];

pub const SCHEMA: &str = "
CREATE TABLE accounts (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    email text,
    balance numeric(14,2) NOT NULL DEFAULT 0,
    created timestamptz NOT NULL,
    meta jsonb
);
CREATE TABLE events (
    id bigint PRIMARY KEY,
    account_id bigint NOT NULL,
    kind text NOT NULL,
    amount numeric(12,2),
    at timestamptz NOT NULL,
    payload jsonb
);
CREATE TABLE documents (
    id bigint PRIMARY KEY,
    account_id bigint,
    title text,
    body text
);
CREATE TABLE pings (id bigint PRIMARY KEY, sent timestamptz NOT NULL);
";

/// pgdog's sharding for the 2-shard destination.
pub const SHARDING: &str = "
[[sharded_tables]]
database = \"dest2\"
column = \"id\"
data_type = \"bigint\"
";

/// Rows per table for `rows` in all: 40% accounts, 60% events, and one
/// ~20 kB document per 700 rows.
pub fn split(rows: u64) -> (u64, u64, u64) {
    let accounts = rows * 2 / 5;
    let events = rows - accounts;
    (accounts.max(1), events.max(1), (rows / 700).max(1))
}

pub fn load_sql(rows: u64) -> String {
    let (a, e, d) = split(rows);
    format!(
        "INSERT INTO accounts
           SELECT g, 'Account ' || g, 'user' || g || '@example.com', (g % 100000) / 100.0,
                  '2024-01-01'::timestamptz + g * interval '1 second',
                  jsonb_build_object('plan', (ARRAY['free', 'pro', 'team'])[g % 3 + 1], 'score', g % 1000, 'tags', jsonb_build_array('a', 'b'))
           FROM generate_series(1, {a}) g;
         INSERT INTO events
           SELECT g, (g % {a}) + 1, (ARRAY['login', 'purchase', 'refund', 'view'])[g % 4 + 1], (g % 10000) / 100.0,
                  '2024-01-01'::timestamptz + g * interval '1 second',
                  jsonb_build_object('ip', '10.0.' || (g % 255) || '.' || (g % 253), 'agent', 'Mozilla/5.0 ' || md5(g::text))
           FROM generate_series(1, {e}) g;
         INSERT INTO documents
           SELECT g, (g % {a}) + 1, 'Document ' || g,
                  (SELECT string_agg(md5(g::text || '-' || i::text), ' ') FROM generate_series(1, 600) i)
           FROM generate_series(1, {d}) g;
         CREATE SEQUENCE event_ids START {next};
         CREATE PUBLICATION bench FOR TABLE accounts, events, documents, pings;",
        next = e + 1
    )
}

/// One backlog transaction: a single-row update or a single-row insert.
pub fn pgbench_script(accounts: u64) -> String {
    format!(
        "\\set id random(1, {accounts})\n\
         \\set coin random(0, 1)\n\
         \\if :coin\n\
         UPDATE accounts SET balance = balance + 1 WHERE id = :id;\n\
         \\else\n\
         INSERT INTO events (id, account_id, kind, amount, at) VALUES (nextval('event_ids'), :id, 'purchase', 9.99, now());\n\
         \\endif\n"
    )
}

/// The schema-sync figure: one table with a primary key and three
/// secondary indexes (customer, time, text), in a database of its own so
/// `pgcopydb clone` copies just it.
pub const INDEXED_DATABASE: &str = "indexed";

pub const INDEXED_SCHEMA: &str = "
CREATE TABLE orders_indexed (
    id bigint PRIMARY KEY,
    customer_id bigint NOT NULL,
    created_at timestamptz NOT NULL,
    note text NOT NULL,
    amount numeric(12,2) NOT NULL
);
CREATE INDEX orders_indexed_customer ON orders_indexed (customer_id);
CREATE INDEX orders_indexed_created ON orders_indexed (created_at);
CREATE INDEX orders_indexed_note ON orders_indexed (note);
";

pub fn indexed_load_sql(rows: u64) -> String {
    format!(
        "INSERT INTO orders_indexed
           SELECT g, (g::bigint * 7919) % 100000, '2024-01-01'::timestamptz + g * interval '13 seconds',
                  md5(g::text), (g % 10000) / 100.0
           FROM generate_series(1, {rows}) g;
         CREATE PUBLICATION indexed FOR TABLE orders_indexed;"
    )
}

/// The 2-shard destination of that figure shards on the customer.
pub const INDEXED_SHARDING: &str = "
[[sharded_tables]]
database = \"idx2\"
column = \"customer_id\"
data_type = \"bigint\"
";
