//! `DATA_SYNC <from_database> <from_user> <to_database> <to_user>
//! <publication> [<slot>]`: start a move (copy, then stream) as a
//! background task and answer with its id at once; SHOW TASKS follows it,
//! STOP_TASK stops it.

use tracing::{info, warn};

use super::{is_running, AdminCommand, Context, Usage};
use crate::admin::error::{sqlstate, CommandError};
use crate::admin::format::text;
use crate::admin::reply::Reply;
use crate::data_sync::{self, Mode, Options, Outcome};
use crate::net::replication::valid_slot_name;

/// A full move (copy, then stream) with schema sync, as the CLI's
/// `data-sync` with its defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSync {
    pub opts: Options,
}

impl AdminCommand for DataSync {
    const USAGE: Usage = Usage {
        syntax: "DATA_SYNC <from_database> <from_user> <to_database> <to_user> <publication> [<slot>]",
        description: "start copying a publication's tables to another cluster, then stream changes; returns the task id",
    };

    fn parse(args: &[String]) -> Result<Self, CommandError> {
        if !(5..=6).contains(&args.len()) {
            return Err(CommandError::syntax(format!(
                "DATA_SYNC takes 5 or 6 arguments, got {}",
                args.len()
            ))
            .hint(format!("the syntax is: {}", Self::USAGE.syntax)));
        }
        Ok(DataSync {
            opts: Options {
                from_database: args[0].clone(),
                from_user: args[1].clone(),
                to_database: args[2].clone(),
                to_user: args[3].clone(),
                publication: args[4].clone(),
                slot: args.get(5).cloned(),
                mode: Mode::Full,
                schema_sync: true,
            },
        })
    }

    async fn execute(&self, ctx: &Context) -> Result<Reply, CommandError> {
        let opts = self.opts.clone();
        self.check(ctx, &opts)?;
        let slot = opts.slot_name();

        let task = ctx
            .registry
            .new_task(&opts.from_database, &opts.to_database, &opts.publication);
        // The console's shutdown stops the move too (cleanly: the slot
        // stays, a rerun resumes).
        let stop = task.stop.clone();
        let config = ctx.config.clone();
        let id = task.id;
        super::spawn_task(ctx, stop.clone(), async move {
            match data_sync::run(config, opts, task, stop).await {
                Ok(Outcome::Stopped) => {
                    info!(task = id, "data-sync task stopped; its slot is kept")
                }
                Ok(outcome) => info!(task = id, ?outcome, "data-sync task ended"),
                Err(e) => warn!(task = id, "data-sync task failed: {e}"),
            }
        });
        info!(task = id, slot = %slot, "data-sync task started from the admin console");

        let mut reply = Reply::new(
            "DATA_SYNC",
            &["task_id", "source", "destination", "publication", "slot"],
        );
        reply.push(vec![
            text(id),
            text(&self.opts.from_database),
            text(&self.opts.to_database),
            text(&self.opts.publication),
            text(slot),
        ]);
        Ok(reply)
    }
}

impl DataSync {
    /// What can be known before starting: the clusters and users exist,
    /// the slot name is valid, no running task of this process uses the
    /// same slot on the same source. The rest (publication, tables,
    /// server settings) is the task's own preflight, shown in SHOW TASKS.
    fn check(&self, ctx: &Context, opts: &Options) -> Result<(), CommandError> {
        let config_error = |e: crate::config::ConfigError| {
            CommandError::new(sqlstate::CONFIG_FILE_ERROR, e.to_string())
                .hint("SHOW CONFIG lists the clusters, SHOW USERS the logins")
        };
        let config = &ctx.config;
        config
            .cluster(&self.opts.from_database)
            .map_err(config_error)?;
        config
            .cluster(&self.opts.to_database)
            .map_err(config_error)?;
        config
            .user(&self.opts.from_user, &self.opts.from_database)
            .map_err(config_error)?;
        config
            .user(&self.opts.to_user, &self.opts.to_database)
            .map_err(config_error)?;
        if self.opts.from_database == self.opts.to_database {
            return Err(CommandError::syntax(format!(
                "source and destination are the same cluster \"{}\"",
                self.opts.from_database
            ))
            .hint("name two different [[databases]] clusters"));
        }
        let slot = opts.slot_name();
        if !valid_slot_name(&slot) {
            return Err(CommandError::syntax(format!(
                "\"{slot}\" is not a valid replication slot name"
            ))
            .hint("use lower-case letters, digits and underscores, at most 63 characters"));
        }
        let busy = ctx.registry.tasks().into_iter().find(|t| {
            is_running(t.phase())
                && t.source == self.opts.from_database
                && (t.slot() == slot
                    || (t.slot().is_empty()
                        && t.dest == self.opts.to_database
                        && t.publication == self.opts.publication))
        });
        if let Some(t) = busy {
            return Err(CommandError::new(
                sqlstate::OBJECT_IN_USE,
                format!(
                    "task {} already moves \"{}\" with replication slot \"{slot}\"",
                    t.id, self.opts.from_database
                ),
            )
            .hint(format!(
                "SHOW TASKS follows it; STOP_TASK {} stops it, or name another slot",
                t.id
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::data_sync::Registry;

    #[test]
    fn parses_five_or_six() {
        let args: Vec<String> = ["a", "u", "b", "v", "pub"].map(String::from).to_vec();
        let c = DataSync::parse(&args).unwrap();
        assert_eq!(c.opts.slot, None);
        let mut six = args.clone();
        six.push("my_slot".into());
        assert_eq!(
            DataSync::parse(&six).unwrap().opts.slot.as_deref(),
            Some("my_slot")
        );
        assert_eq!(DataSync::parse(&args[..4]).unwrap_err().code, "42601");
    }

    #[tokio::test]
    async fn unknown_cluster_is_an_error_before_any_task() {
        let registry = Arc::new(Registry::default());
        let ctx = super::super::test_context(registry.clone());
        let args: Vec<String> = ["nope", "u", "b", "v", "pub"].map(String::from).to_vec();
        let err = DataSync::parse(&args)
            .unwrap()
            .execute(&ctx)
            .await
            .unwrap_err();
        assert_eq!(err.code, "F0000");
        assert!(err.message.contains("\"nope\""), "{err:?}");
        assert!(registry.tasks().is_empty());
    }
}
