//! `pgdog cutover`: end a move by switching the application to the
//! destination without losing a write, and keep a way back.
//!
//! 1. Wait until the move's lag is at most `--max-lag` on every source
//!    shard (the move streams: a `data-sync` somewhere, else this command)
//!    ([`lag`]).
//! 2. Freeze the published tables on every source shard for the
//!    application's roles ([`freezing`], with the triggers of [`freeze`]);
//!    what is frozen is recorded on destination shard 0
//!    (`pgdog.cutover_freezes`).
//! 3. Drain: hold the move's apply at the LSN after the freeze on every
//!    source shard ([`drain`], through [`super::barrier`]): every write
//!    committed before it is on the destination.
//! 4. Set the destination's sequences ([`set_sequences`]).
//! 5. Verify at that point ([`verifying`]), unless skipped.
//! 6. End the forward stream for good, then create a publication and a
//!    permanent slot on every destination shard and stream the
//!    destination's changes back to the source with the same engine
//!    ([`switch`], [`reverse`]): the source stays frozen for the
//!    application and keeps up, so a rollback loses nothing.
//! 7. Write the configuration with the two clusters exchanged beside the
//!    old one.
//!
//! Each step records its [`Stage`] on destination shard 0
//! (`pgdog.cutovers`, through [`super::state`]) before it starts; the
//! stages and what a rerun does from each are in [`super::lifecycle`]. A
//! failure before step 6 unfreezes the source and lets the move stream on
//! ([`forward`]); a crash leaves the record, and rerunning the command
//! picks it up. `--rollback` ([`rollback`]) and `--complete` ([`complete`])
//! read the same record. [`runner`] runs a command and the stream back
//! for the CLI and the admin console alike.

mod command;
mod complete;
mod cut;
mod drain;
mod forward;
pub mod freeze;
mod freezing;
mod lag;
mod precheck;
pub mod privileges;
mod request;
pub mod reverse;
mod rollback;
pub mod runner;
mod set_sequences;
mod stream;
mod switch;
mod verifying;

pub use super::lifecycle::Action;
pub use command::run;
pub use cut::reverse_options;
pub use request::{Done, Request, DEFAULT_MAX_LAG, DEFAULT_REVERSE_PUBLICATION, DEFAULT_TIMEOUT};
pub use runner::stream_back;
