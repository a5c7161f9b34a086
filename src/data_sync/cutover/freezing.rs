//! Step 2 (and step 1 of a rollback): freeze the published tables for the
//! application's roles on every shard a move reads from.

use std::time::Instant;

use pgdog_protocol::Lsn;

use crate::net::Connection;

use super::super::catalog;
use super::super::endpoints::Endpoints;
use super::super::error::Result;
use super::super::lifecycle::Stage;
use super::super::plan::Plan;
use super::super::state::CutoverRecord;
use super::cut::{enter, fail_point, Cut};
use super::freeze;
use super::stream::mark_lsns;

/// Step 2 of a cutover: the source frozen for `record.roles` by
/// `deadline`; returns the LSN after the freeze on each source shard, past
/// every write committed before it. Leaves the record at
/// [`Stage::Draining`].
pub(super) async fn source(
    cut: &Cut<'_>,
    plan: &Plan,
    record: &mut CutoverRecord,
    dest0: &mut Connection,
    deadline: Instant,
) -> Result<Vec<Lsn>> {
    cut.step(
        2,
        &format!("freezing the source for {}", record.roles.join(", ")),
    );
    Side {
        endpoints: &cut.endpoints,
        plan,
        cluster: "source",
    }
    .freeze(cut, dest0, &record.roles, deadline)
    .await?;
    let frozen = mark_lsns(&cut.endpoints, "pgdog cutover: frozen").await?;
    enter(dest0, &cut.slot, record, Stage::Draining, None).await?;
    dest0
        .query_text(
            "UPDATE pgdog.cutovers SET frozen_lsns = $2::text[] WHERE slot_name = $1",
            &[
                &cut.slot,
                &catalog::text_array(frozen.iter().map(|l| l.to_string())),
            ],
        )
        .await?;
    fail_point("frozen");
    Ok(frozen)
}

/// The shards one move reads from, to freeze: the forward move's source,
/// or (for a rollback) the reverse move's, which is the destination.
pub(super) struct Side<'a> {
    pub endpoints: &'a Endpoints,
    pub plan: &'a Plan,
    /// Its name in `pgdog.cutover_freezes` and in errors.
    pub cluster: &'a str,
}

impl Side<'_> {
    /// Freeze `roles` on every shard. What is frozen is recorded on
    /// `dest0` before it is, so an unfreeze after a crash finds it.
    pub(super) async fn freeze(
        &self,
        cut: &Cut<'_>,
        dest0: &mut Connection,
        roles: &[String],
        deadline: Instant,
    ) -> Result<()> {
        let tables: Vec<_> = self
            .plan
            .tables
            .iter()
            .map(|t| t.table.name.clone())
            .collect();
        for s in 0..self.endpoints.source.shards.len() {
            let mut conn = self.endpoints.connect_source(s, false).await?;
            let relations = freeze::relations(&mut conn, &tables).await?;
            for r in &relations {
                dest0
                    .query_text(
                        "INSERT INTO pgdog.cutover_freezes (slot_name, cluster, shard, relation) VALUES ($1, $2, $3::int, $4)
                         ON CONFLICT DO NOTHING",
                        &[&cut.slot, self.cluster, &s.to_string(), r],
                    )
                    .await?;
            }
            let what = format!(
                "{} shard {s} ({})",
                self.cluster,
                self.endpoints.source(s).addr()
            );
            freeze::freeze(&mut conn, &relations, roles, deadline, &what, cut.shutdown).await?;
            conn.close().await;
        }
        Ok(())
    }
}
