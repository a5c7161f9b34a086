//! A move's command line and how a run of it ends: plain values every
//! part of the engine reads. A leaf: it imports nothing of the engine.

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Copy what is not copied yet, then stream until stopped.
    Full,
    /// Copy, then stop (the slot stays for a later `--replicate-only`).
    SyncOnly,
    /// Stream from an existing slot without copying.
    ReplicateOnly,
    /// Drop the slot(s) and pgdog's state, then stop.
    Cleanup,
}

/// The command line of a move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub from_database: String,
    pub from_user: String,
    pub to_database: String,
    pub to_user: String,
    pub publication: String,
    /// The permanent slot's name; by default derived from the publication
    /// and destination, so rerunning the same command resumes.
    pub slot: Option<String>,
    pub mode: Mode,
    /// Create the schema on the destinations (pre-data before the copy,
    /// post-data after it); off: the schema was made by hand.
    pub schema_sync: bool,
}

impl Options {
    pub fn slot_name(&self) -> String {
        self.slot
            .clone()
            .unwrap_or_else(|| default_slot_name(&self.publication, &self.to_database))
    }
}

/// `pgdog_<publication>_<destination>`, lower-cased and reduced to what a
/// slot name allows; long names keep a hash suffix so they stay unique.
pub fn default_slot_name(publication: &str, to_database: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_lowercase() || c.is_ascii_digit() {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let name = format!("pgdog_{}_{}", clean(publication), clean(to_database));
    if name.len() <= 63 {
        return name;
    }
    let hash = format!("{publication}\u{0}{to_database}")
        .bytes()
        .fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
    format!("{}_{:08x}", &name[..54], hash as u32)
}

/// How a run ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `--sync-only` finished copying.
    Copied,
    /// Stopped by a signal or STOP_TASK.
    Stopped,
    /// `--cleanup` finished.
    CleanedUp,
    /// `pgdog cutover` ended the stream: the destination takes the writes.
    CutOver,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::replication::valid_slot_name;

    #[test]
    fn slot_names_are_valid_and_stable() {
        let n = default_slot_name("My-Pub", "dest");
        assert_eq!(n, "pgdog_my_pub_dest");
        assert!(valid_slot_name(&n));
        let long = default_slot_name(&"p".repeat(80), "d");
        assert!(long.len() <= 63 && valid_slot_name(&long));
        assert_eq!(long, default_slot_name(&"p".repeat(80), "d"));
        assert_ne!(long, default_slot_name(&"p".repeat(81), "d"));
    }
}
