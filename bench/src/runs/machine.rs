//! The report's header: the machine, the servers and the dataset.

use super::Bench;
use crate::report::Report;
use crate::Result;

impl Bench {
    pub async fn machine(&self, report: &mut Report) -> Result<()> {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
            })
            .unwrap_or_default();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| {
                t.lines().next().map(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .unwrap_or("0")
                        .parse::<u64>()
                        .unwrap_or(0)
                })
            })
            .unwrap_or(0);
        report.note(format!(
            "machine: {cores} cores ({cpu}), {:.0} GiB; all servers and pgdog share it",
            mem as f64 / 1048576.0
        ));
        report.note(format!(
            "PostgreSQL {}, fsync on, synchronous_commit on; {} runs per figure, median shown",
            self.install.major, self.runs
        ));
        let (a, e, d) = self.split;
        report.note(format!(
            "dataset: {a} accounts, {e} events, {d} TOASTed documents of ~20 kB; {:.0} MB of heap and TOAST",
            self.heap_bytes as f64 / 1e6
        ));
        Ok(())
    }
}
