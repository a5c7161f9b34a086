//! A move's lifecycle: copying, streaming, then the stages of its
//! cutover as persisted on destination shard 0 (`pgdog.cutovers.state`,
//! written and read back typed by [`super::state`]), and what a rerun of
//! each cutover command does from there. A leaf: it imports nothing of
//! the engine.
//!
//! Each stage is written before the step it names starts, so a crash
//! leaves the stage of the step that did not finish. The text of each
//! stage is what earlier versions wrote, so a record they left is read
//! back the same way.

use std::fmt;

/// What a `pgdog cutover` command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Cutover,
    /// Make the source the primary again.
    Rollback,
    /// Drop the reverse stream's slots and publications (and the forward
    /// slot): the operator is done with the source.
    Complete,
}

/// The lifecycle of a move once `pgdog cutover` has touched it. Before
/// that a move is copying or streaming, which its task's
/// [`super::progress::Phase`] shows and the copy records persist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Step 2: the source is being frozen for the application's roles.
    Freezing,
    /// Step 3: frozen; the move drains up to the freeze.
    Draining,
    /// Step 4: drained; the destination's sequences are being set.
    Sequences,
    /// Step 5: sequences set; verify runs (or was skipped).
    Verifying,
    /// Verified (or skipped): the switch comes next.
    Verified,
    /// Step 6: the forward stream ends for good and the reverse stream is
    /// created. No way back to an unfreeze from here on.
    Reversing,
    /// Step 7 done: the destination takes the writes and streams back.
    Switched,
    /// A failure before step 6 unfroze the source; the move streams on.
    Aborted,
    /// `--rollback` started.
    RollingBack,
    /// `--rollback` finished: the source takes the writes again.
    RolledBack,
    /// `--complete` started. It ends by forgetting the move, record and
    /// all, so no record ever says it completed.
    Completing,
}

impl Stage {
    pub const ALL: [Stage; 11] = [
        Stage::Freezing,
        Stage::Draining,
        Stage::Sequences,
        Stage::Verifying,
        Stage::Verified,
        Stage::Reversing,
        Stage::Switched,
        Stage::Aborted,
        Stage::RollingBack,
        Stage::RolledBack,
        Stage::Completing,
    ];

    /// The persisted text.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Freezing => "freezing",
            Stage::Draining => "frozen",
            Stage::Sequences => "drained",
            Stage::Verifying => "sequences",
            Stage::Verified => "verified",
            Stage::Reversing => "switching",
            Stage::Switched => "cut_over",
            Stage::Aborted => "aborted",
            Stage::RollingBack => "rolling_back",
            Stage::RolledBack => "rolled_back",
            Stage::Completing => "completing",
        }
    }

    pub fn parse(text: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The stage that follows a finished step of a cutover, a rollback or
    /// a completion; `None` at the end of each.
    pub fn next(self) -> Option<Stage> {
        Some(match self {
            Stage::Freezing => Stage::Draining,
            Stage::Draining => Stage::Sequences,
            Stage::Sequences => Stage::Verifying,
            Stage::Verifying => Stage::Verified,
            Stage::Verified => Stage::Reversing,
            Stage::Reversing => Stage::Switched,
            Stage::RollingBack => Stage::RolledBack,
            Stage::Switched | Stage::Aborted | Stage::RolledBack | Stage::Completing => {
                return None
            }
        })
    }

    /// Whether a command may record `self` over the stage `from` an earlier
    /// step or run left: each step follows the one before it, a cutover
    /// starts over from wherever [`rerun`] lets it, a failure before the
    /// switch aborts, and a rerun of `--rollback` or `--complete` records
    /// its stage again.
    pub fn may_follow(self, from: Option<Stage>) -> bool {
        match self {
            Stage::Freezing => from.is_none_or(|f| {
                f.before_switch() || matches!(f, Stage::Aborted | Stage::RolledBack)
            }),
            Stage::Aborted => from.is_some_and(Stage::before_switch),
            // A rerun finishing a switch records it again.
            Stage::Switched => matches!(from, Some(Stage::Reversing | Stage::Switched)),
            Stage::RollingBack => matches!(from, Some(Stage::Switched | Stage::RollingBack)),
            Stage::Completing => matches!(from, Some(Stage::Switched | Stage::Completing)),
            _ => from.and_then(Stage::next) == Some(self),
        }
    }

    /// Before step 6: a failure here unfreezes the source.
    pub fn before_switch(self) -> bool {
        matches!(
            self,
            Stage::Freezing
                | Stage::Draining
                | Stage::Sequences
                | Stage::Verifying
                | Stage::Verified
        )
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Freezing => "freezing",
            Stage::Draining => "draining",
            Stage::Sequences => "setting sequences",
            Stage::Verifying => "verifying",
            Stage::Verified => "verified",
            Stage::Reversing => "reversing",
            Stage::Switched => "switched",
            Stage::Aborted => "aborted",
            Stage::RollingBack => "rolling back",
            Stage::RolledBack => "rolled back",
            Stage::Completing => "completing",
        })
    }
}

/// What a command does given the stage an earlier run left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rerun {
    /// From the first step (nothing recorded, or stopped before the
    /// switch, where every step can be repeated).
    FromStart,
    /// Past the point of no return: finish the switch (steps 6 and 7).
    FinishSwitch,
    /// `--rollback` or `--complete` from the record of a switched move
    /// (or its own unfinished run).
    Finish,
    /// Refused: what happened, and what to run instead.
    Refuse { problem: String, fix: String },
}

/// The one decision a rerun makes: `action` after `earlier` (for the move
/// of `slot`, named in the refusals).
pub fn rerun(action: Action, earlier: Option<Stage>, slot: &str) -> Rerun {
    let refuse = |problem: String, fix: &str| Rerun::Refuse {
        problem,
        fix: fix.to_string(),
    };
    match (action, earlier) {
        (
            Action::Cutover,
            None
            | Some(
                Stage::Freezing
                | Stage::Draining
                | Stage::Sequences
                | Stage::Verifying
                | Stage::Verified
                | Stage::Aborted
                | Stage::RolledBack,
            ),
        ) => Rerun::FromStart,
        (Action::Cutover, Some(Stage::Reversing | Stage::Switched)) => Rerun::FinishSwitch,
        (Action::Cutover, Some(Stage::RollingBack)) => refuse(
            format!("a rollback of the cutover of slot \"{slot}\" did not finish"),
            "run pgdog cutover --rollback again to finish it",
        ),
        (Action::Cutover, Some(Stage::Completing)) => refuse(
            format!("the cutover of slot \"{slot}\" is being completed"),
            "run pgdog cutover --complete again to finish it",
        ),
        (Action::Rollback, Some(Stage::Switched | Stage::RollingBack))
        | (Action::Complete, Some(Stage::Switched | Stage::Completing)) => Rerun::Finish,
        (Action::Rollback | Action::Complete, Some(s)) => refuse(
            format!("the cutover of slot \"{slot}\" is at \"{}\", not cut over", s.as_str()),
            "run pgdog cutover (the same command without --rollback or --complete) to finish it first",
        ),
        (Action::Rollback | Action::Complete, None) => refuse(
            format!("no cutover of the move of slot \"{slot}\" is recorded on destination shard 0"),
            "run pgdog cutover first",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_reads_back_as_written() {
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.as_str()), Some(s), "{s:?}");
        }
        assert_eq!(Stage::parse("cut over"), None);
        assert_eq!(Stage::parse(""), None);
        // The texts earlier versions persisted.
        assert_eq!(Stage::parse("frozen"), Some(Stage::Draining));
        assert_eq!(Stage::parse("cut_over"), Some(Stage::Switched));
        assert_eq!(Stage::parse("switching"), Some(Stage::Reversing));
    }

    #[test]
    fn a_cutover_walks_every_stage_once_in_order() {
        let mut s = Stage::Freezing;
        let mut seen = vec![s];
        while let Some(n) = s.next() {
            assert!(!seen.contains(&n), "{n:?} twice");
            seen.push(n);
            s = n;
        }
        // As the record on destination shard 0 reads, step by step.
        let texts: Vec<&str> = seen.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            texts.join(" > "),
            "freezing > frozen > drained > sequences > verified > switching > cut_over"
        );
        assert_eq!(Stage::RollingBack.next(), Some(Stage::RolledBack));
        for end in [
            Stage::Switched,
            Stage::Aborted,
            Stage::RolledBack,
            Stage::Completing,
        ] {
            assert_eq!(end.next(), None, "{end:?}");
        }
    }

    #[test]
    fn only_the_steps_before_the_switch_unfreeze_on_failure() {
        let before: Vec<Stage> = Stage::ALL
            .into_iter()
            .filter(|s| s.before_switch())
            .collect();
        assert_eq!(
            before,
            [
                Stage::Freezing,
                Stage::Draining,
                Stage::Sequences,
                Stage::Verifying,
                Stage::Verified
            ]
        );
    }

    #[test]
    fn transitions_a_command_may_record() {
        use Stage::*;
        // Every legal transition, and nothing else.
        let legal = |to: Stage, from: Option<Stage>| -> bool {
            matches!(
                (from, to),
                (None, Freezing)
                    | (
                        Some(
                            Freezing
                                | Draining
                                | Sequences
                                | Verifying
                                | Verified
                                | Aborted
                                | RolledBack
                        ),
                        Freezing
                    )
                    | (Some(Freezing), Draining)
                    | (Some(Draining), Sequences)
                    | (Some(Sequences), Verifying)
                    | (Some(Verifying), Verified)
                    | (Some(Verified), Reversing)
                    | (Some(Reversing | Switched), Switched)
                    | (Some(RollingBack), RolledBack)
                    | (
                        Some(Freezing | Draining | Sequences | Verifying | Verified),
                        Aborted
                    )
                    | (Some(Switched | RollingBack), RollingBack)
                    | (Some(Switched | Completing), Completing)
            )
        };
        let froms = std::iter::once(None).chain(Stage::ALL.into_iter().map(Some));
        for from in froms {
            for to in Stage::ALL {
                assert_eq!(to.may_follow(from), legal(to, from), "{from:?} -> {to:?}");
            }
        }
    }

    /// A crash at any stage, then the same command again.
    #[test]
    fn a_rerun_after_a_crash_at_each_stage() {
        use Action::*;
        let slot = "pgdog_s";
        let refused = |r: &Rerun, fix: &str| match r {
            Rerun::Refuse { fix: f, .. } => f.contains(fix),
            _ => false,
        };
        // A cutover run again, by the text of the record it finds.
        let cutover_again = [
            ("freezing", "from the start"),
            ("frozen", "from the start"),
            ("drained", "from the start"),
            ("sequences", "from the start"),
            ("verified", "from the start"),
            ("aborted", "from the start"),
            ("rolled_back", "from the start"),
            ("switching", "finishes the switch"),
            ("cut_over", "finishes the switch"),
            ("rolling_back", "--rollback again"),
            ("completing", "--complete again"),
        ];
        assert_eq!(cutover_again.len(), Stage::ALL.len());
        for (text, expected) in cutover_again {
            let s = Stage::parse(text).unwrap();
            let c = rerun(Cutover, Some(s), slot);
            match expected {
                "from the start" => assert_eq!(c, Rerun::FromStart, "{text}"),
                "finishes the switch" => assert_eq!(c, Rerun::FinishSwitch, "{text}"),
                fix => assert!(refused(&c, fix), "{text}: {c:?}"),
            }
        }
        for s in Stage::ALL {
            let r = rerun(Rollback, Some(s), slot);
            if matches!(s, Stage::Switched | Stage::RollingBack) {
                assert_eq!(r, Rerun::Finish, "{s:?}");
            } else {
                assert!(refused(&r, "to finish it first"), "{s:?}: {r:?}");
            }
            let k = rerun(Complete, Some(s), slot);
            if matches!(s, Stage::Switched | Stage::Completing) {
                assert_eq!(k, Rerun::Finish, "{s:?}");
            } else {
                assert!(refused(&k, "to finish it first"), "{s:?}: {k:?}");
            }
        }
        assert_eq!(rerun(Cutover, None, slot), Rerun::FromStart);
        assert!(refused(&rerun(Rollback, None, slot), "pgdog cutover first"));
        assert!(refused(&rerun(Complete, None, slot), "pgdog cutover first"));
    }
}
