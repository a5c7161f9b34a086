//! `CUTOVER <task_id> <role> [<role> ...]`: cut over the move a data-sync
//! task runs (the roles are the application's, frozen on the source), as
//! a task of its own in the background; once switched, the same task
//! streams the destination's changes back until STOP_TASK.

use tracing::{info, warn};

use super::{AdminCommand, Context, Usage};
use crate::admin::error::CommandError;
use crate::admin::format::text;
use crate::admin::reply::Reply;
use crate::data_sync::cutover::{self, Done};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cutover {
    pub id: u64,
    pub roles: Vec<String>,
}

impl AdminCommand for Cutover {
    const USAGE: Usage = Usage {
        syntax: "CUTOVER <task_id> <role> [<role> ...]",
        description: "end a move: freeze the roles' writes on the source, drain, set sequences, verify, then stream the destination back to the source; returns the cutover task's id",
    };

    fn parse(args: &[String]) -> Result<Self, CommandError> {
        let hint = || {
            format!(
                "the syntax is: {}; SHOW TASKS lists the ids, the roles are the application's login roles",
                Self::USAGE.syntax
            )
        };
        let Some((id, roles)) = args.split_first() else {
            return Err(CommandError::syntax("CUTOVER needs a task id").hint(hint()));
        };
        let id = id
            .parse()
            .map_err(|_| CommandError::syntax(format!("\"{id}\" is not a task id")).hint(hint()))?;
        if roles.is_empty() {
            return Err(
                CommandError::syntax("CUTOVER needs the application's roles to freeze")
                    .hint(hint()),
            );
        }
        Ok(Cutover {
            id,
            roles: roles.to_vec(),
        })
    }

    async fn execute(&self, ctx: &Context) -> Result<Reply, CommandError> {
        let opts = super::move_options(ctx, self.id, "CUTOVER")?;
        let task = ctx
            .registry
            .new_task(&opts.from_database, &opts.to_database, &opts.publication);
        let (config, stop, registry) =
            (ctx.config.clone(), task.stop.clone(), ctx.registry.clone());
        let request = cutover::Request {
            freeze_roles: self.roles.clone(),
            ..Default::default()
        };
        let (id, of_id) = (task.id, self.id);
        super::spawn_task(ctx, stop.clone(), async move {
            match cutover::run(config.clone(), &opts, &request, &task, &stop).await {
                Ok(Done::CutOver { reverse, summary }) => {
                    info!(task = id, of = of_id, "{summary}");
                    let back = registry.new_task(
                        &reverse.from_database,
                        &reverse.to_database,
                        &reverse.publication,
                    );
                    let back_stop = back.stop.clone();
                    let watch = stop.clone();
                    tokio::spawn(async move {
                        watch.cancelled().await;
                        back_stop.cancel();
                    });
                    let stop = back.stop.clone();
                    if let Err(e) = cutover::stream_back(config, &opts, reverse, back, stop).await {
                        warn!(task = id, "streaming back after the cutover failed: {e}");
                    }
                }
                Ok(Done::RolledBack { summary } | Done::Completed { summary }) => {
                    info!(task = id, "{summary}")
                }
                Err(e) => warn!(task = id, of = of_id, "cutover failed: {e}"),
            }
        });
        let mut reply = Reply::new("CUTOVER", &["task_id", "of_task"]);
        reply.push(vec![text(id), text(self.id)]);
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let one = |a: &[&str]| Cutover::parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            one(&["3", "app", "worker"]).unwrap(),
            Cutover {
                id: 3,
                roles: vec!["app".into(), "worker".into()]
            }
        );
        assert_eq!(one(&[]).unwrap_err().code, "42601");
        assert_eq!(one(&["3"]).unwrap_err().code, "42601");
        assert_eq!(one(&["x", "app"]).unwrap_err().code, "42601");
    }
}
