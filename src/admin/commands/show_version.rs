//! `SHOW VERSION`: which pgdog this is.

use super::{no_args, AdminCommand, Context, Usage};
use crate::admin::error::CommandError;
use crate::admin::format::text;
use crate::admin::reply::Reply;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShowVersion;

impl AdminCommand for ShowVersion {
    const USAGE: Usage = Usage {
        syntax: "SHOW VERSION",
        description: "pgdog's version",
    };

    fn parse(args: &[String]) -> Result<Self, CommandError> {
        no_args(Self::USAGE, args)?;
        Ok(ShowVersion)
    }

    async fn execute(&self, _ctx: &Context) -> Result<Reply, CommandError> {
        let mut reply = Reply::new("SHOW", &["version"]);
        reply.push(vec![text(format!("pgdog {}", env!("CARGO_PKG_VERSION")))]);
        Ok(reply)
    }
}
