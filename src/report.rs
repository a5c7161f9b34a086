//! What the operator sees while a move runs: live progress bars on a
//! terminal, plain periodic log lines otherwise. Reads the task's progress
//! counters; never touches the data path.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::data_sync::progress::{CopyState, Phase, SchemaItem, SchemaState, TableCopy, Task};

/// Bytes as a human reads them.
pub fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Seconds as `1h02m`, `3m05s` or `12s`.
pub fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// One line about a table copy.
pub fn copy_line(c: &TableCopy) -> String {
    let rows = c.rows.load(Ordering::Relaxed);
    let bytes = c.bytes.load(Ordering::Relaxed) as f64;
    let elapsed = c.elapsed().max(0.001);
    let mut line = format!(
        "{}.{} [source shard {} from {}] {} rows, {} ({}/s)",
        c.schema,
        c.table,
        c.source_shard,
        c.source_hosts.lock(),
        rows,
        human_bytes(bytes),
        human_bytes(bytes / elapsed)
    );
    if let Some(p) = c.percent() {
        line.push_str(&format!(", {p:.0}%"));
    }
    if let Some(eta) = c.eta() {
        line.push_str(&format!(", ETA {}", human_duration(eta)));
    }
    line
}

/// One line about the streams.
pub fn stream_line(task: &Task) -> String {
    let streams = task.streams();
    let parts: Vec<String> = streams
        .iter()
        .map(|s| {
            let lag = s
                .lag_seconds()
                .map(|l| format!(", {l:.2}s behind"))
                .unwrap_or_default();
            format!(
                "shard {}: lag {}{lag}, {} txns / {} changes applied",
                s.source_shard,
                human_bytes(s.lag_bytes() as f64),
                s.transactions.load(Ordering::Relaxed),
                s.changes.load(Ordering::Relaxed)
            )
        })
        .collect();
    format!("streaming: {}", parts.join("; "))
}

/// An overall line during the copy.
pub fn overall_line(task: &Task) -> String {
    let copies = task.copies();
    let done = copies
        .iter()
        .filter(|c| matches!(c.state(), CopyState::Done | CopyState::Skipped))
        .count();
    let rows: u64 = copies.iter().map(|c| c.rows.load(Ordering::Relaxed)).sum();
    let bytes: u64 = copies.iter().map(|c| c.bytes.load(Ordering::Relaxed)).sum();
    let elapsed = task.started_at.elapsed().as_secs_f64().max(0.001);
    let mut line = format!(
        "copy: {done}/{} tables done, {rows} rows, {} ({}/s overall), {}",
        copies.len(),
        human_bytes(bytes as f64),
        human_bytes(bytes as f64 / elapsed),
        human_duration(elapsed)
    );
    if let Some(w) = task.waiting() {
        line.push_str(&format!("; waiting: {w}"));
    }
    line
}

/// One line while `pgdog verify` reads: tables read on both sides, bytes
/// against the estimate, the ETA at the rate so far, and what differs.
pub fn verify_line(task: &Task) -> String {
    let items = task.verify_items();
    if items.is_empty() {
        let mut line = format!(
            "verify: holding the move at one LSN ({})",
            human_duration(task.started_at.elapsed().as_secs_f64())
        );
        if let Some(w) = task.waiting() {
            line.push_str(&format!("; waiting: {w}"));
        }
        return line;
    }
    let read = items.iter().filter(|i| i.state() == "read").count();
    let bytes: u64 = items.iter().map(|i| i.bytes.load(Ordering::Relaxed)).sum();
    let rows: u64 = items.iter().map(|i| i.rows.load(Ordering::Relaxed)).sum();
    let estimate: u64 = items.iter().map(|i| i.estimated_bytes).sum();
    let started = items
        .iter()
        .filter_map(|i| i.elapsed())
        .fold(0.0f64, f64::max)
        .max(0.001);
    let mut line = format!(
        "verify: {read}/{} table reads, {rows} rows, {} of about {}",
        items.len(),
        human_bytes(bytes as f64),
        human_bytes(estimate as f64)
    );
    if bytes > 0 && estimate > bytes && read < items.len() {
        let eta = (estimate - bytes) as f64 / (bytes as f64 / started);
        line.push_str(&format!(", ETA {}", human_duration(eta)));
    }
    let differ = items
        .iter()
        .filter(|i| i.result().is_some_and(|r| r != "equal"))
        .count();
    if differ > 0 {
        line.push_str(&format!("; {differ} shard(s) differ"));
    }
    line
}

/// One line about an index build or foreign key validation.
pub fn schema_item_line(i: &SchemaItem) -> String {
    let mut line = format!(
        "{} [destination shard {}] {}",
        i.object,
        i.dest_shard.map_or("every".to_string(), |d| d.to_string()),
        human_duration(i.elapsed().unwrap_or(0.0))
    );
    if let Some(p) = i.percent() {
        line.push_str(&format!(", {p:.0}%"));
    }
    if let Some(eta) = i.eta() {
        line.push_str(&format!(", ETA {}", human_duration(eta)));
    }
    line
}

/// An overall line while indexes are built after the copy.
pub fn schema_line(task: &Task) -> String {
    let items = task.schema_items();
    let post: Vec<_> = items
        .iter()
        .filter(|i| i.step != "pre-data" && i.state() != SchemaState::LeftOut)
        .collect();
    let finished = post
        .iter()
        .filter(|i| !matches!(i.state(), SchemaState::Pending | SchemaState::Running))
        .count();
    let running = post
        .iter()
        .filter(|i| i.state() == SchemaState::Running)
        .count();
    format!(
        "building indexes and constraints: {finished}/{} done, {running} running, {}",
        post.len(),
        human_duration(task.started_at.elapsed().as_secs_f64())
    )
}

/// Start reporting until `stop`.
pub fn spawn(task: Arc<Task>, stop: CancellationToken) -> JoinHandle<()> {
    if std::io::stderr().is_terminal() {
        tokio::spawn(live(task, stop))
    } else {
        tokio::spawn(plain(task, stop))
    }
}

async fn plain(task: Arc<Task>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        match task.phase() {
            Phase::Copying => {
                tracing::info!("{}", overall_line(&task));
                for c in task
                    .copies()
                    .iter()
                    .filter(|c| c.state() == CopyState::Copying)
                {
                    tracing::info!("  {}", copy_line(c));
                }
            }
            Phase::Indexing => {
                tracing::info!("{}", schema_line(&task));
                for i in task
                    .schema_items()
                    .iter()
                    .filter(|i| i.state() == SchemaState::Running)
                {
                    tracing::info!("  {}", schema_item_line(i));
                }
            }
            Phase::Streaming => tracing::info!("{}", stream_line(&task)),
            Phase::Verifying => tracing::info!("{}", verify_line(&task)),
            _ => {}
        }
    }
}

async fn live(task: Arc<Task>, stop: CancellationToken) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4));
    // Log lines go above the bars while they are drawn.
    crate::logging::attach(&multi);
    let style = ProgressStyle::with_template("{spinner} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let overall = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
    let mut bars: HashMap<usize, ProgressBar> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let started = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        match task.phase() {
            Phase::Copying => {
                overall.set_message(overall_line(&task));
                for (i, c) in task.copies().iter().enumerate() {
                    match c.state() {
                        CopyState::Copying => {
                            let bar = bars.entry(i).or_insert_with(|| {
                                multi.add(ProgressBar::new_spinner().with_style(style.clone()))
                            });
                            bar.set_message(copy_line(c));
                            bar.tick();
                        }
                        CopyState::Done | CopyState::Failed => {
                            if let Some(bar) = bars.remove(&i) {
                                bar.finish_and_clear();
                                let _ = multi.println(format!(
                                    "{} {}",
                                    c.state().as_str(),
                                    copy_line(c)
                                ));
                            }
                        }
                        _ => {}
                    }
                }
            }
            Phase::Indexing => {
                overall.set_message(schema_line(&task));
                // Keys above the copies' so the two kinds of bars never meet.
                for (i, item) in task.schema_items().iter().enumerate() {
                    let key = usize::MAX / 2 + i;
                    match item.state() {
                        SchemaState::Running => {
                            let bar = bars.entry(key).or_insert_with(|| {
                                multi.add(ProgressBar::new_spinner().with_style(style.clone()))
                            });
                            bar.set_message(schema_item_line(item));
                            bar.tick();
                        }
                        SchemaState::Pending => {}
                        state => {
                            if let Some(bar) = bars.remove(&key) {
                                bar.finish_and_clear();
                                let _ = multi.println(format!(
                                    "{} {}",
                                    state.as_str(),
                                    schema_item_line(item)
                                ));
                            }
                        }
                    }
                }
            }
            Phase::Streaming => {
                for (_, bar) in bars.drain() {
                    bar.finish_and_clear();
                }
                overall.set_message(stream_line(&task));
            }
            Phase::Verifying => overall.set_message(verify_line(&task)),
            _ => overall.set_message(format!(
                "{}{} ({}){}",
                task.phase().as_str(),
                task.step().map(|s| format!(": {s}")).unwrap_or_default(),
                human_duration(started.elapsed().as_secs_f64()),
                task.waiting()
                    .map(|w| format!("; waiting: {w}"))
                    .unwrap_or_default()
            )),
        }
        overall.tick();
    }
    for (_, bar) in bars.drain() {
        bar.finish_and_clear();
    }
    overall.finish_and_clear();
    crate::logging::detach();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humans() {
        assert_eq!(human_bytes(999.0), "999 B");
        assert_eq!(human_bytes(1_500_000.0), "1.5 MB");
        assert_eq!(human_duration(5.2), "5s");
        assert_eq!(human_duration(125.0), "2m05s");
        assert_eq!(human_duration(7300.0), "2h01m");
    }
}
