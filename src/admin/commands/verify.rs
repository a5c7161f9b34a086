//! `VERIFY <task_id> [DETAIL]`: verify the move a data-sync task runs, as
//! a task of its own in the background (its id is the answer); SHOW VERIFY
//! follows it, STOP_TASK stops it.

use tracing::{info, warn};

use super::{AdminCommand, Context, Usage};
use crate::admin::error::CommandError;
use crate::admin::reply::Reply;
use crate::data_sync::verify;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verify {
    pub id: u64,
    pub detail: bool,
}

impl AdminCommand for Verify {
    const USAGE: Usage = Usage {
        syntax: "VERIFY <task_id> [DETAIL]",
        description: "compare a move's source and destination at one consistent point while it streams; returns the verify task's id",
    };

    fn parse(args: &[String]) -> Result<Self, CommandError> {
        let hint = || {
            format!(
                "the syntax is: {}; SHOW TASKS lists the ids",
                Self::USAGE.syntax
            )
        };
        let (id, detail) = match args {
            [id] => (id, false),
            [id, d] if d.eq_ignore_ascii_case("detail") => (id, true),
            [] => return Err(CommandError::syntax("VERIFY needs a task id").hint(hint())),
            [_, extra, ..] => {
                return Err(CommandError::syntax(format!(
                    "unexpected \"{extra}\" after the task id"
                ))
                .hint(hint()))
            }
        };
        let id = id
            .parse()
            .map_err(|_| CommandError::syntax(format!("\"{id}\" is not a task id")).hint(hint()))?;
        Ok(Verify { id, detail })
    }

    async fn execute(&self, ctx: &Context) -> Result<Reply, CommandError> {
        let opts = super::move_options(ctx, self.id, "VERIFY")?;
        let task = ctx
            .registry
            .new_task(&opts.from_database, &opts.to_database, &opts.publication);
        let (config, stop) = (ctx.config.clone(), task.stop.clone());
        let request = verify::Request {
            tables: Vec::new(),
            detail: self.detail,
        };
        let (id, of_id) = (task.id, self.id);
        super::spawn_task(ctx, stop.clone(), async move {
            match verify::run(config, &opts, &request, &task, &stop).await {
                Ok(report) if report.equal() => {
                    info!(task = id, of = of_id, "verify: every table equal")
                }
                Ok(report) => warn!(
                    task = id,
                    of = of_id,
                    "verify: {} tables differ (SHOW VERIFY)",
                    report.tables.iter().filter(|t| !t.equal()).count()
                ),
                Err(e) => warn!(task = id, of = of_id, "verify failed: {e}"),
            }
        });
        Ok(super::started("VERIFY", id, self.id))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::data_sync::Registry;

    #[test]
    fn parses() {
        let one = |a: &[&str]| Verify::parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            one(&["3"]).unwrap(),
            Verify {
                id: 3,
                detail: false
            }
        );
        assert_eq!(
            one(&["3", "detail"]).unwrap(),
            Verify {
                id: 3,
                detail: true
            }
        );
        assert_eq!(one(&[]).unwrap_err().code, "42601");
        assert_eq!(one(&["x"]).unwrap_err().code, "42601");
        assert_eq!(one(&["3", "now"]).unwrap_err().code, "42601");
    }

    #[tokio::test]
    async fn only_moves_are_verified() {
        let registry = Arc::new(Registry::default());
        let ctx = super::super::test_context(registry.clone());
        let err = Verify {
            id: 9,
            detail: false,
        }
        .execute(&ctx)
        .await
        .unwrap_err();
        assert!(err.message.contains("no task with id 9"), "{err:?}");
        let t = registry.new_task("a", "b", "p");
        let err = Verify {
            id: t.id,
            detail: false,
        }
        .execute(&ctx)
        .await
        .unwrap_err();
        assert!(err.message.contains("not a data-sync move"), "{err:?}");
        assert_eq!(registry.tasks().len(), 1);
    }
}
