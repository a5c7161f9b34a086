//! Steps 6 (once the forward stream ended) and 7: the reverse stream's
//! publication and slots, the destination writable, the swapped config.
//! A rerun after a crash anywhere here finishes the same way.

use tracing::warn;

use super::super::catalog;
use super::super::error::Result;
use super::super::lifecycle::Stage;
use super::super::plan::Plan;
use super::super::progress::Phase;
use super::super::state::CutoverRecord;
use super::cut::{enter, fail_point, reverse_options, Cut};
use super::request::Done;
use super::reverse;
use super::stream::{active_pids, OwnStream, STOP_TIMEOUT};
use crate::data_sync::endpoints::Endpoints;

pub(super) async fn switch(cut: &Cut<'_>, plan: &Plan, mut record: CutoverRecord) -> Result<Done> {
    cut.task.set_phase(Phase::CuttingOver);
    let (opts, endpoints, slot) = (cut.opts, &cut.endpoints, &cut.slot);
    // A rerun that finds the forward stream still running ends it first.
    if active_pids(endpoints, slot)
        .await?
        .iter()
        .any(Option::is_some)
    {
        cut.holder("cutover", endpoints, slot)
            .end_stream(
                &format!("cut over to {} by pgdog cutover", opts.to_database),
                true,
                STOP_TIMEOUT,
                OwnStream::none(),
            )
            .await?;
    }
    fail_point("switching");
    let late_note = late_writes(cut).await;
    cut.step(6, "creating the reverse stream");
    let rev = reverse_options(opts, &record.reverse_publication, &record.reverse_slot);
    let rev_endpoints = Endpoints::of_move(cut.config.clone(), &rev)?;
    reverse::prepare(
        endpoints,
        &rev_endpoints,
        plan,
        &record.reverse_publication,
        &record.reverse_slot,
        cut.task,
    )
    .await?;
    fail_point("reversed");

    cut.step(7, "writing the swapped configuration");
    let written =
        reverse::write_swapped_config(cut.config, &opts.from_database, &opts.to_database)?;
    let mut dest0 = endpoints.connect_dest(0).await?;
    enter(&mut dest0, slot, &mut record, Stage::Switched, None).await?;
    dest0.close().await;
    cut.task
        .set_step("cut over; the stream back is a task of its own");
    let mut summary = format!(
        "cut over: every write committed on the source before the freeze is on {to}, its sequences are set, and the source is frozen for {roles}.\n\
         The application now writes to {to}: ",
        to = opts.to_database,
        roles = record.roles.join(", "),
    );
    let hosts: Vec<String> = (0..plan.dest_shards())
        .map(|d| format!("shard {d} at {}", endpoints.dest(d).addr()))
        .collect();
    summary.push_str(&hosts.join(", "));
    summary.push('\n');
    match written {
        Some((pgdog, users)) => summary.push_str(&format!(
            "{} and {} have the two clusters exchanged: start the proxy with them and the application's database name \"{}\" reaches the new cluster.\n",
            pgdog.display(),
            users.display(),
            opts.from_database
        )),
        None => summary.push_str("(no configuration file on disk to write a swapped copy of)\n"),
    }
    if let Some(note) = &late_note {
        summary.push_str(&format!("WARNING: {note}\n"));
    }
    summary.push_str(&format!(
        "Changes on {to} stream back to {from} (slot \"{rs}\" on every shard of {to}, publication \"{rp}\"), so pgdog cutover --rollback loses nothing; pgdog cutover --complete drops them when you are done.",
        to = opts.to_database,
        from = opts.from_database,
        rs = record.reverse_slot,
        rp = record.reverse_publication
    ));
    Ok(Done::CutOver {
        reverse: rev,
        summary,
    })
}

/// Nothing streams the source any more and nothing streams back yet: what
/// the forward slot still holds was written by a role that was not frozen,
/// and is not on the destination. The warning to give, if any.
async fn late_writes(cut: &Cut<'_>) -> Option<String> {
    let (opts, slot) = (cut.opts, &cut.slot);
    let late = match reverse::late_changes(&cut.endpoints, slot, &opts.publication).await {
        Ok(late) => late,
        Err(e) => {
            warn!("could not check the source for writes after the forward stream ended: {e}");
            return None;
        }
    };
    if late.tables.is_empty() {
        return None;
    }
    let tables: Vec<String> = late
        .tables
        .iter()
        .map(|(t, n)| format!("{t} ({n})"))
        .collect();
    let note = format!(
        "{}{} changes were committed on {from} after the forward stream ended, by roles that were not frozen (a superuser, a job); {to} does not have them: {}. Look at them on {from} (SELECT * FROM pg_logical_slot_peek_binary_changes('{slot}', NULL, NULL, 'proto_version', '1', 'publication_names', '{publication}') shows them, in pgoutput's format, until the slot moves on) and apply them by hand, or roll back.",
        if late.more { "at least " } else { "" },
        late.tables.values().sum::<u64>(),
        tables.join(", "),
        from = opts.from_database,
        to = opts.to_database,
        publication = catalog::quote_ident(&opts.publication),
    );
    warn!("{note}");
    Some(note)
}
