//! The tests' own check of a finished (or caught-up) move, independent of
//! `pgdog verify`: row counts per shard, every row on the shard
//! PostgreSQL's hash partitioning would pick, and the same
//! order-independent checksum (computed by the servers, from md5) on both
//! sides.

use pgdog::net::{ConnectOptions, Connection};

use pgdog::data_sync::catalog::{quote_ident, TableName};
use pgdog::data_sync::{DataSyncError, Result};
use pgdog::sharding::Sharder;

/// What to compare for one table.
#[derive(Debug, Clone)]
pub struct TableCheck {
    pub table: TableName,
    /// Columns to compare, in order.
    pub columns: Vec<String>,
    /// The destination sharder and key column; `None`: every destination
    /// shard must hold every source row.
    pub routing: Option<(Sharder, String)>,
    /// Rows are split across the source shards (else every source shard
    /// holds the whole table and shard 0 is counted).
    pub source_sharded: bool,
}

/// The result for one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    pub table: TableName,
    pub source_rows: u64,
    pub dest_rows: Vec<u64>,
    /// Rows found on a shard the sharding function does not pick.
    pub misplaced: u64,
    pub source_checksum: String,
    pub dest_checksum: String,
    pub ok: bool,
}

/// A sum of 64-bit slices of each row's md5: equal multisets of rows give
/// equal sums, whatever the order.
fn checksum_sql(t: &TableCheck) -> String {
    let cols: Vec<String> = t.columns.iter().map(|c| quote_ident(c)).collect();
    format!(
        "SELECT count(*), coalesce(sum(('x' || substr(md5(ROW({})::text), 1, 16))::bit(64)::bigint), 0)::text FROM {}",
        cols.join(", "),
        t.table.quoted()
    )
}

/// The count and checksum a verification query returns; anything else is
/// an error (an unreadable checksum must never compare as equal).
async fn one_row(conn: &mut Connection, sql: &str) -> Result<(u64, String)> {
    let rows = conn.query(sql).await?;
    let bad = |what: &str| {
        DataSyncError::State(format!(
            "verification on {}: {what}, from: {sql}",
            conn.addr()
        ))
    };
    let r = rows.first().ok_or_else(|| bad("no row"))?;
    let count = r
        .text(0)
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| bad(&format!("an unreadable count {:?}", r.text(0))))?;
    Ok((count, r.text(1).unwrap_or("").to_string()))
}

fn checksum(text: &str, table: &TableName) -> Result<i128> {
    text.parse().map_err(|_| {
        DataSyncError::State(format!(
            "verification of {table}: the checksum {text:?} is not a number"
        ))
    })
}

/// Compare `tables` between source shards and destination shards.
pub async fn compare(
    sources: &[ConnectOptions],
    dests: &[ConnectOptions],
    tables: &[TableCheck],
) -> Result<Vec<TableReport>> {
    let mut src = Vec::new();
    for o in sources {
        src.push(Connection::connect(o).await?);
    }
    let mut dst = Vec::new();
    for o in dests {
        dst.push(Connection::connect(o).await?);
    }
    let m = dst.len();
    let mut reports = Vec::new();
    for t in tables {
        let sql = checksum_sql(t);
        let sharded = t.routing.is_some() && m > 1;
        // Omnisharded tables are the same on every source shard: count one.
        let source_conns = if t.source_sharded { src.len() } else { 1 };
        let mut source_rows = 0;
        let mut source_sum: i128 = 0;
        for c in src.iter_mut().take(source_conns.max(1)) {
            let (n, s) = one_row(c, &sql).await?;
            source_rows += n;
            source_sum += checksum(&s, &t.table)?;
        }
        let mut dest_rows = Vec::with_capacity(m);
        let mut dest_sum: i128 = 0;
        let mut misplaced = 0;
        let mut ok = true;
        for (d, c) in dst.iter_mut().enumerate() {
            let (n, s) = one_row(c, &sql).await?;
            dest_rows.push(n);
            let sum = checksum(&s, &t.table)?;
            if sharded {
                dest_sum += sum;
                if let Some((sharder, column)) = &t.routing {
                    {
                        let pred = pgdog::data_sync::plan::shard_predicate(sharder, column, d, m);
                        let (bad, _) = one_row(
                            c,
                            &format!(
                                "SELECT count(*), '' FROM {} WHERE NOT ({pred})",
                                t.table.quoted()
                            ),
                        )
                        .await?;
                        misplaced += bad;
                    }
                }
            } else {
                // Every shard holds the whole table.
                dest_sum = sum;
                ok &= n == source_rows && sum == source_sum;
            }
        }
        let dest_total: u64 = if sharded {
            dest_rows.iter().sum()
        } else {
            source_rows
        };
        ok &= misplaced == 0 && dest_total == source_rows && dest_sum == source_sum;
        reports.push(TableReport {
            table: t.table.clone(),
            source_rows,
            dest_rows,
            misplaced,
            source_checksum: source_sum.to_string(),
            dest_checksum: dest_sum.to_string(),
            ok,
        });
    }
    Ok(reports)
}

/// A table of the reports, for people.
pub fn render(reports: &[TableReport]) -> String {
    let mut out = String::new();
    let shards = reports.iter().map(|r| r.dest_rows.len()).max().unwrap_or(0);
    out.push_str(&format!("{:<24} {:>10}", "table", "source"));
    for d in 0..shards {
        out.push_str(&format!(" {:>10}", format!("shard {d}")));
    }
    out.push_str(&format!(" {:>10} {:>8}\n", "misplaced", "checksum"));
    for r in reports {
        out.push_str(&format!(
            "{:<24} {:>10}",
            r.table.to_string(),
            r.source_rows
        ));
        for n in &r.dest_rows {
            out.push_str(&format!(" {n:>10}"));
        }
        out.push_str(&format!(
            " {:>10} {:>8}\n",
            r.misplaced,
            if r.ok { "equal" } else { "DIFFERS" }
        ));
    }
    out
}
