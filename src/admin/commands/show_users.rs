//! `SHOW USERS`: the logins of users.toml, without their passwords.

use super::{no_args, AdminCommand, Context, Usage};
use crate::admin::error::CommandError;
use crate::admin::format::text;
use crate::admin::reply::Reply;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShowUsers;

impl AdminCommand for ShowUsers {
    const USAGE: Usage = Usage {
        syntax: "SHOW USERS",
        description: "users.toml logins: name, cluster, role used on the servers (no passwords)",
    };

    fn parse(args: &[String]) -> Result<Self, CommandError> {
        no_args(Self::USAGE, args)?;
        Ok(ShowUsers)
    }

    async fn execute(&self, ctx: &Context) -> Result<Reply, CommandError> {
        let mut reply = Reply::new("SHOW", &["name", "database", "server_user"]);
        for u in &ctx.config.users {
            reply.push(vec![
                text(&u.name),
                text(&u.database),
                text(u.server_user()),
            ]);
        }
        Ok(reply)
    }
}
