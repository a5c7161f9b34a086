//! `CUTOVER <task_id> <role> [<role> ...] [options]`: cut over the move a
//! data-sync task runs (the roles are the application's, frozen on the
//! source), as a task of its own in the background; once switched, one
//! more task streams the destination's changes back until STOP_TASK.

use tracing::warn;

use super::{AdminCommand, Context, Usage};
use crate::admin::error::CommandError;
use crate::admin::reply::Reply;
use crate::data_sync::cutover::{
    self,
    runner::{Ended, Runner, Voice},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cutover {
    pub id: u64,
    pub roles: Vec<String>,
    /// `MAX_LAG`, `TIMEOUT`, `MARGIN` and `SKIP_VERIFY`, over the defaults
    /// of `pgdog cutover`.
    pub max_lag: u64,
    pub timeout_secs: u64,
    pub margin: i64,
    pub skip_verify: bool,
}

impl AdminCommand for Cutover {
    const USAGE: Usage = Usage {
        syntax: "CUTOVER <task_id> <role> [<role> ...] [MAX_LAG <bytes>] [TIMEOUT <seconds>] [MARGIN <n>] [SKIP_VERIFY]",
        description: "end a move: freeze the roles' writes on the source, drain, set sequences, verify, then stream the destination back to the source as one more task; returns the cutover task's id",
    };

    fn parse(args: &[String]) -> Result<Self, CommandError> {
        let hint = || {
            format!(
                "the syntax is: {}; SHOW TASKS lists the ids, the roles are the application's login roles",
                Self::USAGE.syntax
            )
        };
        let Some((id, rest)) = args.split_first() else {
            return Err(CommandError::syntax("CUTOVER needs a task id").hint(hint()));
        };
        let id = id
            .parse()
            .map_err(|_| CommandError::syntax(format!("\"{id}\" is not a task id")).hint(hint()))?;
        let defaults = cutover::Request::default();
        let mut cmd = Cutover {
            id,
            roles: Vec::new(),
            max_lag: defaults.max_lag,
            timeout_secs: defaults.timeout.as_secs(),
            margin: defaults.margin,
            skip_verify: defaults.skip_verify,
        };
        let mut words = rest.iter();
        let mut options = false;
        while let Some(word) = words.next() {
            let key = word.to_ascii_uppercase();
            let mut value = |what: &str| -> Result<String, CommandError> {
                words
                    .next()
                    .cloned()
                    .ok_or_else(|| CommandError::syntax(format!("{key} needs {what}")).hint(hint()))
            };
            let number = |v: String, what: &str| -> Result<u64, CommandError> {
                v.parse::<u64>().map_err(|_| {
                    CommandError::syntax(format!("{key} takes {what}, not \"{v}\"")).hint(hint())
                })
            };
            match key.as_str() {
                "MAX_LAG" => cmd.max_lag = number(value("a byte count")?, "a byte count")?,
                "TIMEOUT" => {
                    cmd.timeout_secs = number(value("seconds")?, "a number of seconds")?;
                    if cmd.timeout_secs == 0 {
                        return Err(CommandError::syntax("TIMEOUT must be at least 1 second")
                            .hint(hint()));
                    }
                }
                "MARGIN" => {
                    let n = number(value("a number")?, "a positive number")?;
                    cmd.margin = i64::try_from(n).map_err(|_| {
                        CommandError::syntax(format!("MARGIN {n} is too large")).hint(hint())
                    })?;
                }
                "SKIP_VERIFY" => cmd.skip_verify = true,
                _ if options => {
                    return Err(CommandError::syntax(format!(
                        "\"{word}\" after the options: the roles come before MAX_LAG, TIMEOUT, MARGIN and SKIP_VERIFY"
                    ))
                    .hint(hint()))
                }
                _ => {
                    cmd.roles.push(word.clone());
                    continue;
                }
            }
            options = true;
        }
        if cmd.roles.is_empty() {
            return Err(
                CommandError::syntax("CUTOVER needs the application's roles to freeze")
                    .hint(hint()),
            );
        }
        Ok(cmd)
    }

    async fn execute(&self, ctx: &Context) -> Result<Reply, CommandError> {
        let opts = super::move_options(ctx, self.id, "CUTOVER")?;
        let runner = Runner {
            config: ctx.config.clone(),
            registry: ctx.registry.clone(),
            reporter: None,
            voice: Voice::Log,
        };
        let task = runner.new_task(&opts);
        let stop = task.stop.clone();
        let request = cutover::Request {
            freeze_roles: self.roles.clone(),
            max_lag: self.max_lag,
            timeout: std::time::Duration::from_secs(self.timeout_secs),
            margin: self.margin,
            skip_verify: self.skip_verify,
            ..Default::default()
        };
        let (id, of_id) = (task.id, self.id);
        super::spawn_task(ctx, stop.clone(), async move {
            match runner.run(&opts, &request, task, stop).await {
                Ok(Ended::CutOver {
                    back,
                    streamed: Err(e),
                }) => warn!(
                    task = back.id,
                    "streaming back after the cutover of task {id} failed: {e}"
                ),
                Ok(_) => {}
                Err(e) => warn!(task = id, of = of_id, "cutover failed: {e}"),
            }
        });
        Ok(super::started("CUTOVER", id, self.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let one = |a: &[&str]| Cutover::parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let defaults = cutover::Request::default();
        assert_eq!(
            one(&["3", "app", "worker"]).unwrap(),
            Cutover {
                id: 3,
                roles: vec!["app".into(), "worker".into()],
                max_lag: defaults.max_lag,
                timeout_secs: defaults.timeout.as_secs(),
                margin: defaults.margin,
                skip_verify: false,
            }
        );
        assert_eq!(
            one(&[
                "3",
                "app",
                "timeout",
                "5",
                "SKIP_VERIFY",
                "Max_Lag",
                "0",
                "margin",
                "10"
            ])
            .unwrap(),
            Cutover {
                id: 3,
                roles: vec!["app".into()],
                max_lag: 0,
                timeout_secs: 5,
                margin: 10,
                skip_verify: true,
            }
        );
        assert_eq!(one(&[]).unwrap_err().code, "42601");
        assert_eq!(one(&["3"]).unwrap_err().code, "42601");
        assert_eq!(one(&["x", "app"]).unwrap_err().code, "42601");
        assert_eq!(one(&["3", "TIMEOUT", "5"]).unwrap_err().code, "42601");
        assert_eq!(one(&["3", "app", "TIMEOUT"]).unwrap_err().code, "42601");
        assert_eq!(
            one(&["3", "app", "TIMEOUT", "0"]).unwrap_err().code,
            "42601"
        );
        assert_eq!(
            one(&["3", "app", "MAX_LAG", "-1"]).unwrap_err().code,
            "42601"
        );
        let late = one(&["3", "app", "SKIP_VERIFY", "worker"]).unwrap_err();
        assert!(late.message.contains("after the options"), "{late:?}");
    }
}
