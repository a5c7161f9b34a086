use std::path::Path;

use super::*;

fn load(pgdog: &str, users: &str) -> Result<Config, ConfigError> {
    Config::from_strs(
        Path::new("/etc/pgdog/pgdog.toml"),
        pgdog,
        Path::new("/etc/pgdog/users.toml"),
        users,
    )
}

const GOOD: &str = r#"
[general]
port = 6433
tls_verify = "disabled"

[[databases]]
name = "source"
host = "127.0.0.1"
port = 5432
database_name = "app"

[[databases]]
name = "dest"
host = "10.0.0.1"
shard = 0

[[databases]]
name = "dest"
host = "10.0.0.2"
shard = 1

[[databases]]
name = "dest"
host = "10.0.0.3"
shard = 1
role = "replica"
resharding_only = true

[[sharded_tables]]
database = "dest"
name = "users"
column = "id"

[[sharded_tables]]
database = "dest"
column = "tenant_id"
data_type = "integer"
mapping = [{ values = [1, 2], shard = 0 }, { start = 100, end = 200, shard = 1 }, { shard = 1 }]

[admin]
password = "admin-secret"
"#;

const USERS: &str = r#"
[[users]]
name = "pgdog"
database = "source"
password = "source-secret"

[[users]]
name = "pgdog"
database = "dest"
password = "dest-secret"
server_user = "writer"
"#;

#[test]
fn loads_a_good_config() {
    let c = load(GOOD, USERS).unwrap();
    assert_eq!(c.general.port, 6433);
    assert_eq!(c.tls_mode(), TlsMode::Disable);
    assert!(c.tls.is_none());
    assert_eq!(c.cluster_names(), ["source", "dest"]);
    let dest = c.cluster("dest").unwrap();
    assert_eq!(dest.shards.len(), 2);
    assert_eq!(dest.shards[1].primary.host, "10.0.0.2");
    assert_eq!(dest.shards[1].replicas.len(), 1);
    let src = c.cluster("source").unwrap();
    assert_eq!(src.shards[0].primary.database_name(), "app");
    assert_eq!(src.shards[0].primary.port, 5432);

    let u = c.user("pgdog", "dest").unwrap();
    let opts = c.connect_options(&dest.shards[0].primary, u);
    assert_eq!(opts.user, "writer");
    assert_eq!(opts.database, "dest");
    assert_eq!(opts.password.as_deref(), Some("dest-secret"));

    // Named rule, then the column rule, then nothing (omnisharded).
    let t = |name: &str| TableName {
        schema: "public".into(),
        name: name.into(),
    };
    let users = c
        .sharder_for("dest", &t("users"), &[], &["id", "name"], 2)
        .unwrap()
        .unwrap();
    assert_eq!(
        (users.sharder.table.as_str(), users.column.as_str()),
        ("public.users", "id")
    );
    assert_eq!(users.origin, RuleOrigin::Table);
    let orders = c
        .sharder_for("dest", &t("orders"), &[], &["id", "tenant_id"], 2)
        .unwrap()
        .unwrap();
    assert_eq!(
        (orders.column.as_str(), orders.origin),
        ("tenant_id", RuleOrigin::Column)
    );
    let s = orders.sharder;
    assert_eq!(
        s.shard(Some(b"2"), crate::sharding::Format::Text).unwrap(),
        0
    );
    assert_eq!(
        s.shard(Some(b"150"), crate::sharding::Format::Text)
            .unwrap(),
        1
    );
    assert!(c
        .sharder_for("dest", &t("countries"), &[], &["code"], 2)
        .unwrap()
        .is_none());
    // A partition of `users` (in another schema, two levels down) takes
    // its rule; a rule on the ancestor wins over the column rule; a rule
    // naming the partition itself wins over its ancestor's.
    let leaf = TableName {
        schema: "parts".into(),
        name: "users_2025_eu".into(),
    };
    let ancestors = [t("users_2025"), t("users")];
    let r = c
        .sharder_for("dest", &leaf, &ancestors, &["tenant_id", "id"], 2)
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.column.as_str(), r.origin),
        ("id", RuleOrigin::Ancestor(t("users")))
    );
    assert_eq!(r.sharder.table, "parts.users_2025_eu");
    let own = load(
        &format!("{GOOD}\n[[sharded_tables]]\ndatabase = \"dest\"\nname = \"users_2025_eu\"\ncolumn = \"tenant_id\"\n"),
        USERS,
    )
    .unwrap();
    let r = own
        .sharder_for("dest", &leaf, &ancestors, &["tenant_id", "id"], 2)
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.column.as_str(), r.origin),
        ("tenant_id", RuleOrigin::Table)
    );
}

#[test]
fn passwords_never_show() {
    let c = load(GOOD, USERS).unwrap();
    let shown = format!("{c:?}");
    for secret in ["admin-secret", "source-secret", "dest-secret"] {
        assert!(!shown.contains(secret), "{secret} leaked");
    }
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let text =
        "[general]\nport = 6432\n\n[[databases]]\nname = \"a\"\nhots = \"x\"\nhost = \"h\"\n";
    let err = load(text, "").unwrap_err().to_string();
    assert!(err.starts_with("/etc/pgdog/pgdog.toml:6:"), "{err}");
    assert!(err.contains("hots"), "{err}");
}

#[test]
fn wrong_type_and_missing_key() {
    let err = load("[general]\nport = \"six\"\n", "")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("/etc/pgdog/pgdog.toml:2:"), "{err}");
    assert!(err.contains("port = \"six\""), "{err}");

    let err = load("[[databases]]\nname = \"a\"\n", "")
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing field `host`"), "{err}");

    let err = load("", "[[users]]\nname = \"u\"\ndatabase = 1\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("/etc/pgdog/users.toml:3:"), "{err}");
}

#[test]
fn cluster_shape_checks() {
    let gap =
        "[[databases]]\nname=\"d\"\nhost=\"a\"\n[[databases]]\nname=\"d\"\nhost=\"b\"\nshard=2\n";
    let err = load(gap, "").unwrap_err().to_string();
    assert!(err.contains("none numbered 1"), "{err}");

    let two = "[[databases]]\nname=\"d\"\nhost=\"a\"\n[[databases]]\nname=\"d\"\nhost=\"b\"\n";
    let err = load(two, "").unwrap_err().to_string();
    assert!(
        err.contains("2 primaries") && err.contains("databases[1]"),
        "{err}"
    );

    let none = "[[databases]]\nname=\"d\"\nhost=\"a\"\nrole=\"replica\"\n";
    let err = load(none, "").unwrap_err().to_string();
    assert!(err.contains("no primary"), "{err}");
}

#[test]
fn reference_checks() {
    let t = "[[databases]]\nname=\"d\"\nhost=\"a\"\n[[sharded_tables]]\ndatabase=\"x\"\ncolumn=\"id\"\n";
    let err = load(t, "").unwrap_err().to_string();
    assert!(
        err.contains("sharded_tables[0].database") && err.contains("\"x\""),
        "{err}"
    );

    let u = "[[users]]\nname=\"u\"\ndatabase=\"nope\"\n";
    let err = load("[[databases]]\nname=\"d\"\nhost=\"a\"\n", u)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("users.toml") && err.contains("users[0].database"),
        "{err}"
    );

    let c = load(GOOD, USERS).unwrap();
    let err = c.user("nobody", "dest").unwrap_err().to_string();
    assert!(err.contains("\"pgdog\""), "{err}");
    let err = c.cluster("nope").unwrap_err().to_string();
    assert!(err.contains("\"source\", \"dest\""), "{err}");
}

#[test]
fn mapping_checks() {
    let bad = "[[databases]]\nname=\"d\"\nhost=\"a\"\n[[sharded_tables]]\ndatabase=\"d\"\ncolumn=\"id\"\nmapping=[{values=[1], shard=3}]\n";
    let err = load(bad, "").unwrap_err().to_string();
    assert!(err.contains("sharded_tables[0]"), "{err}");
    let both = "[[databases]]\nname=\"d\"\nhost=\"a\"\n[[sharded_tables]]\ndatabase=\"d\"\ncolumn=\"id\"\nmapping=[{values=[1], start=1, shard=0}]\n";
    let err = load(both, "").unwrap_err().to_string();
    assert!(err.contains("not both"), "{err}");
    let word = "[[databases]]\nname=\"d\"\nhost=\"a\"\n[[sharded_tables]]\ndatabase=\"d\"\ncolumn=\"id\"\nmapping=[{values=[\"x\"], shard=0}]\n";
    let err = load(word, "").unwrap_err().to_string();
    assert!(err.contains("mapping[0]"), "{err}");
}

#[test]
fn tls_checks() {
    let err = load("[general]\ntls_verify = \"sometimes\"\n", "")
        .unwrap_err()
        .to_string();
    assert!(err.contains("general.tls_verify"), "{err}");
    let err = load("[general]\ntls_verify = \"verify_full\"\n", "")
        .unwrap_err()
        .to_string();
    assert!(err.contains("tls_server_ca_certificate"), "{err}");
    let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
    let ok = format!(
        "[general]\ntls_verify = \"verify_full\"\ntls_server_ca_certificate = \"{0}/ca.pem\"\ntls_certificate = \"{0}/server.pem\"\ntls_private_key = \"{0}/server.key\"\n",
        certs.display()
    );
    let c = load(&ok, "").unwrap();
    assert_eq!(c.tls_mode(), TlsMode::VerifyFull);
    let mismatched = ok.replace("server.key", "client.key");
    let err = load(&mismatched, "").unwrap_err().to_string();
    assert!(err.contains("general.tls_certificate"), "{err}");
    let missing = ok.replace("ca.pem", "nope.pem");
    let err = load(&missing, "").unwrap_err().to_string();
    assert!(err.contains("nope.pem"), "{err}");
    let half = format!(
        "[general]\ntls_certificate = \"{}/server.pem\"\n",
        certs.display()
    );
    let err = load(&half, "").unwrap_err().to_string();
    assert!(err.contains("tls_private_key"), "{err}");
}
