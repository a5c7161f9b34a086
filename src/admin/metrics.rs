//! Metrics for Prometheus and friends: the tasks' progress counters
//! rendered as OpenMetrics text (or the Prometheus 0.0.4 text format when
//! the scraper does not ask for OpenMetrics), served over a minimal
//! HTTP/1.1 responder: one request per connection, any path.
//!
//! Formats: <https://github.com/prometheus/OpenMetrics/blob/main/specification/OpenMetrics.md>
//! and <https://prometheus.io/docs/instrumenting/exposition_formats/>.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::data_sync::Task;

use crate::data_sync::{Phase, Registry};

/// A scrape must send its request within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request head read; scrapers send a few hundred bytes.
const MAX_REQUEST: usize = 16 * 1024;
/// Scrapes served at once; more wait in the kernel's accept queue.
const MAX_SCRAPES: usize = 8;

const PHASES: [Phase; 10] = [
    Phase::Preflight,
    Phase::Schema,
    Phase::Copying,
    Phase::Indexing,
    Phase::Streaming,
    Phase::Verifying,
    Phase::CuttingOver,
    Phase::Stopped,
    Phase::Failed,
    Phase::Done,
];

/// What the metrics read.
#[derive(Debug, Clone)]
pub struct Gauges {
    pub registry: Arc<Registry>,
    /// The admin console's connection slots: in use = max - available.
    pub sessions: Arc<Semaphore>,
    pub max_sessions: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// One metric family and its samples.
#[derive(Debug)]
struct Family {
    /// Without the `_total` a counter's samples carry.
    name: &'static str,
    help: &'static str,
    kind: Kind,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    fn new(name: &'static str, kind: Kind, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        if value.is_finite() {
            self.samples.push((labels, value));
        }
    }
}

/// The exposition text: OpenMetrics (ends in `# EOF`) or Prometheus text.
pub fn render(gauges: &Gauges, openmetrics: bool) -> String {
    let families = collect(gauges);
    let mut out = String::with_capacity(4096);
    for f in &families {
        let (family_name, sample_name) = match (f.kind, openmetrics) {
            (Kind::Counter, true) => (f.name.to_string(), format!("{}_total", f.name)),
            (Kind::Counter, false) => (format!("{}_total", f.name), format!("{}_total", f.name)),
            (Kind::Gauge, _) => (f.name.to_string(), f.name.to_string()),
        };
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# TYPE {family_name} {kind}");
        let _ = writeln!(out, "# HELP {family_name} {}", f.help);
        for (labels, value) in &f.samples {
            out.push_str(&sample_name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {value}");
        }
    }
    if openmetrics {
        out.push_str("# EOF\n");
    }
    out
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn collect(gauges: &Gauges) -> Vec<Family> {
    use Kind::Gauge;
    let tasks = gauges.registry.tasks();
    let mut out = task_families(&tasks);
    out.extend(copy_families(&tasks));
    out.extend(stream_families(&tasks));
    let mut sessions = Family::new(
        "pgdog_admin_sessions",
        Gauge,
        "Admin console sessions open now.",
    );
    sessions.add(
        vec![],
        gauges
            .max_sessions
            .saturating_sub(gauges.sessions.available_permits()) as f64,
    );
    out.push(sessions);
    out
}

/// Each task's phase, time and errors.
fn task_families(tasks: &[Arc<Task>]) -> Vec<Family> {
    use Kind::{Counter, Gauge};
    let mut phase = Family::new(
        "pgdog_task_phase",
        Gauge,
        "1 for the phase a data-sync task is in, 0 for the others.",
    );
    let mut elapsed = Family::new(
        "pgdog_task_elapsed_seconds",
        Gauge,
        "Seconds a data-sync task has run (until it ended).",
    );
    let mut errors = Family::new(
        "pgdog_task_errors",
        Counter,
        "Errors a data-sync task met, by kind (retried ones included).",
    );
    for task in tasks {
        let id = task.id.to_string();
        let current = task.phase();
        for p in PHASES {
            phase.add(
                vec![("task", id.clone()), ("phase", p.as_str().to_string())],
                if p == current { 1.0 } else { 0.0 },
            );
        }
        elapsed.add(vec![("task", id.clone())], task.elapsed().as_secs_f64());
        let counted = task.errors();
        for (kind, n) in counted {
            errors.add(
                vec![("task", id.clone()), ("kind", kind.to_string())],
                n as f64,
            );
        }
    }
    vec![phase, elapsed, errors]
}

/// Each table copy's rows, bytes and rates.
fn copy_families(tasks: &[Arc<Task>]) -> Vec<Family> {
    use Kind::{Counter, Gauge};
    let mut rows = Family::new(
        "pgdog_copy_rows",
        Counter,
        "Rows copied from a table of a source shard.",
    );
    let mut bytes = Family::new(
        "pgdog_copy_bytes",
        Counter,
        "Bytes of COPY data read from a table of a source shard.",
    );
    let mut rows_rate = Family::new(
        "pgdog_copy_rows_per_second",
        Gauge,
        "Average rows per second of a table copy so far.",
    );
    let mut bytes_rate = Family::new(
        "pgdog_copy_bytes_per_second",
        Gauge,
        "Average bytes per second of a table copy so far.",
    );
    let mut estimated = Family::new(
        "pgdog_copy_estimated_rows",
        Gauge,
        "Rows the source's statistics expect in the table (pg_class.reltuples).",
    );
    for task in tasks {
        let id = task.id.to_string();
        for c in task.copies() {
            let labels = vec![
                ("task", id.clone()),
                ("schema", c.schema.clone()),
                ("table", c.table.clone()),
                ("source_shard", c.source_shard.to_string()),
            ];
            let r = c.rows.load(Ordering::Relaxed) as f64;
            let b = c.bytes.load(Ordering::Relaxed) as f64;
            rows.add(labels.clone(), r);
            bytes.add(labels.clone(), b);
            let secs = c.elapsed();
            if secs > 0.0 {
                rows_rate.add(labels.clone(), r / secs);
                bytes_rate.add(labels.clone(), b / secs);
            }
            if c.estimated_rows >= 0 {
                estimated.add(labels, c.estimated_rows as f64);
            }
        }
    }
    vec![rows, bytes, rows_rate, bytes_rate, estimated]
}

/// Each source shard's stream: lag and what it applied.
fn stream_families(tasks: &[Arc<Task>]) -> Vec<Family> {
    use Kind::{Counter, Gauge};
    let mut lag = Family::new(
        "pgdog_replication_lag_bytes",
        Gauge,
        "WAL bytes between the source's current position and what the destination confirmed.",
    );
    let mut lag_seconds = Family::new(
        "pgdog_replication_lag_seconds",
        Gauge,
        "Seconds between the last applied transaction's commit on the source and its apply.",
    );
    let mut transactions = Family::new(
        "pgdog_replication_transactions",
        Counter,
        "Transactions applied to the destination.",
    );
    let mut changes = Family::new(
        "pgdog_replication_changes",
        Counter,
        "Row changes (insert, update, delete, truncate) applied to the destination.",
    );
    let mut missing = Family::new(
        "pgdog_replication_missing_rows",
        Counter,
        "Updates and deletes that found no row on the destination (should stay 0).",
    );
    for task in tasks {
        let id = task.id.to_string();
        for s in task.streams() {
            let labels = vec![
                ("task", id.clone()),
                ("source_shard", s.source_shard.to_string()),
            ];
            lag.add(labels.clone(), s.lag_bytes() as f64);
            if let Some(l) = s.lag_seconds() {
                lag_seconds.add(labels.clone(), l);
            }
            transactions.add(
                labels.clone(),
                s.transactions.load(Ordering::Relaxed) as f64,
            );
            changes.add(labels.clone(), s.changes.load(Ordering::Relaxed) as f64);
            missing.add(labels, s.missing_rows.load(Ordering::Relaxed) as f64);
        }
    }
    vec![lag, lag_seconds, transactions, changes, missing]
}

/// Serve scrapes until `shutdown`.
pub async fn serve(listener: TcpListener, gauges: Gauges, shutdown: CancellationToken) {
    let scrapes = Arc::new(Semaphore::new(MAX_SCRAPES));
    let mut running = JoinSet::new();
    loop {
        while running.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = scrapes.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (socket, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    warn!("metrics endpoint: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let gauges = gauges.clone();
        running.spawn(async move {
            if let Err(e) = respond(socket, &gauges).await {
                debug!(%peer, "metrics scrape failed: {e}");
            }
            drop(permit);
        });
    }
    running.abort_all();
}

/// Read one request head, answer it, close.
async fn respond(mut socket: TcpStream, gauges: &Gauges) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
                return Ok(true);
            }
            if head.len() > MAX_REQUEST {
                return Ok(false);
            }
            let n = socket.read(&mut buf).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(!head.is_empty());
            }
            head.extend_from_slice(&buf[..n]);
        }
    };
    let complete = match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
        Ok(r) => r?,
        Err(_) => return Ok(()),
    };
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.lines();
    let request_line = lines.next().unwrap_or("");
    let method = request_line.split_whitespace().next().unwrap_or("");
    let response = if !complete {
        plain(
            431,
            "Request Header Fields Too Large",
            "request too large\n",
        )
    } else if method != "GET" && method != "HEAD" {
        plain(405, "Method Not Allowed", "use GET\n")
    } else {
        let openmetrics = lines.any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("accept:") && l.contains("application/openmetrics-text")
        });
        let body = render(gauges, openmetrics);
        let content_type = if openmetrics {
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        } else {
            "text/plain; version=0.0.4; charset=utf-8"
        };
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        if method == "GET" {
            r.extend_from_slice(body.as_bytes());
        }
        r
    };
    socket.write_all(&response).await?;
    socket.shutdown().await
}

fn plain(code: u16, reason: &str, body: &str) -> Vec<u8> {
    let mut extra = String::new();
    if code == 405 {
        extra.push_str("Allow: GET, HEAD\r\n");
    }
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data_sync::progress::{Stream, TableCopy};

    fn gauges() -> Gauges {
        let registry = Arc::new(Registry::default());
        let task = registry.new_task("src", "dst", "pub");
        task.set_phase(Phase::Copying);
        task.count_error("connection");
        task.count_error("connection");
        let copy = TableCopy::new(
            &crate::data_sync::catalog::TableName {
                schema: "public".into(),
                name: "we\"ird".into(),
            },
            0,
            String::new(),
            10,
            100,
        );
        copy.rows.store(5, std::sync::atomic::Ordering::Relaxed);
        copy.bytes.store(50, std::sync::atomic::Ordering::Relaxed);
        task.add_copy(copy);
        let stream = Stream {
            source_shard: 1,
            ..Default::default()
        };
        stream.current_wal.store(300, Ordering::Relaxed);
        stream.confirmed_flush.store(100, Ordering::Relaxed);
        stream.changes.store(42, Ordering::Relaxed);
        task.add_stream(Arc::new(stream));
        Gauges {
            registry,
            sessions: Arc::new(Semaphore::new(2)),
            max_sessions: 3,
        }
    }

    #[test]
    fn openmetrics_text() {
        let text = render(&gauges(), true);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE pgdog_copy_rows counter\n"), "{text}");
        assert!(
            text.contains(
                "pgdog_copy_rows_total{task=\"1\",schema=\"public\",table=\"we\\\"ird\",source_shard=\"0\"} 5\n"
            ),
            "{text}"
        );
        assert!(text.contains("pgdog_task_phase{task=\"1\",phase=\"copying\"} 1\n"));
        assert!(text.contains("pgdog_task_phase{task=\"1\",phase=\"streaming\"} 0\n"));
        assert!(text.contains("pgdog_task_errors_total{task=\"1\",kind=\"connection\"} 2\n"));
        assert!(text.contains("pgdog_replication_lag_bytes{task=\"1\",source_shard=\"1\"} 200\n"));
        assert!(
            text.contains("pgdog_replication_changes_total{task=\"1\",source_shard=\"1\"} 42\n")
        );
        assert!(text.contains("pgdog_admin_sessions 1\n"));
        // A copy not started has no rate.
        assert!(!text.contains("pgdog_copy_rows_per_second{"));
    }

    #[test]
    fn prometheus_text() {
        let text = render(&gauges(), false);
        assert!(!text.contains("# EOF"));
        assert!(
            text.contains("# TYPE pgdog_copy_rows_total counter\n"),
            "{text}"
        );
        // Every sample line names a declared family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} undeclared"
            );
        }
    }

    #[tokio::test]
    async fn http_answers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = CancellationToken::new();
        let server = tokio::spawn(serve(listener, gauges(), token.clone()));
        let get = |req: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("text/plain; version=0.0.4"));
        assert!(ok.contains("pgdog_copy_rows_total{"));
        let om =
            get("GET / HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n")
                .await;
        assert!(om.contains("application/openmetrics-text"), "{om}");
        assert!(om.ends_with("# EOF\n"));
        let post = get("POST / HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        token.cancel();
        server.await.unwrap();
    }
}
