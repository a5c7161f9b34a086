//! `HELP`: every command with one line about it.

use super::{no_args, AdminCommand, Context, Usage, COMMANDS};
use crate::admin::error::CommandError;
use crate::admin::format::text;
use crate::admin::reply::Reply;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Help;

impl AdminCommand for Help {
    const USAGE: Usage = Usage {
        syntax: "HELP",
        description: "this list",
    };

    fn parse(args: &[String]) -> Result<Self, CommandError> {
        no_args(Self::USAGE, args)?;
        Ok(Help)
    }

    async fn execute(&self, _ctx: &Context) -> Result<Reply, CommandError> {
        let mut reply = Reply::new("HELP", &["command", "description"]);
        for usage in COMMANDS {
            reply.push(vec![text(usage.syntax), text(usage.description)]);
        }
        Ok(reply)
    }
}
