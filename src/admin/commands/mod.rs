//! The console's commands: one file each behind [`AdminCommand`], and the
//! explicit list ([`Command`], [`COMMANDS`]) that parsing and HELP go by.
//!
//! A query string is split into statements on `;` (outside quotes), each
//! statement into words; keywords are case-insensitive, names are taken as
//! written (quotes, single or double, keep spaces and case).

mod cutover;
mod data_sync;
mod help;
mod show_config;
mod show_databases;
mod show_replication_slots;
mod show_routing;
mod show_schema_sync;
mod show_table_copies;
mod show_tasks;
mod show_users;
mod show_verify;
mod show_version;
mod stop_task;
mod verify;

use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::error::CommandError;
use super::format::text;
use super::reply::Reply;
use crate::config::Config;
use crate::data_sync::{Phase, Registry};

pub use cutover::Cutover;
pub use data_sync::DataSync;
pub use help::Help;
pub use show_config::ShowConfig;
pub use show_databases::ShowDatabases;
pub use show_replication_slots::{ApplyRates, ShowReplicationSlots};
pub use show_routing::ShowRouting;
pub use show_schema_sync::ShowSchemaSync;
pub use show_table_copies::ShowTableCopies;
pub use show_tasks::ShowTasks;
pub use show_users::ShowUsers;
pub use show_verify::ShowVerify;
pub use show_version::ShowVersion;
pub use stop_task::StopTask;
pub use verify::Verify;

/// What every command can reach.
#[derive(Debug)]
pub struct Context {
    pub config: Arc<Config>,
    /// The tasks shown and stopped; DATA_SYNC adds to it.
    pub registry: Arc<Registry>,
    /// The console's shutdown: moves started here stop with it.
    pub shutdown: CancellationToken,
    /// Moves started by DATA_SYNC, so shutdown can wait for them to stop
    /// cleanly instead of cutting them off.
    pub moves: Mutex<JoinSet<()>>,
    /// Change counters seen at earlier SHOW REPLICATION_SLOTS, for rates.
    pub apply_rates: ApplyRates,
}

impl Context {
    pub fn new(config: Arc<Config>, registry: Arc<Registry>, shutdown: CancellationToken) -> Self {
        Context {
            config,
            registry,
            shutdown,
            moves: Mutex::new(JoinSet::new()),
            apply_rates: ApplyRates::default(),
        }
    }
}

/// Run `work` in the background for the console: the console's shutdown
/// cancels `stop` (so `work` ends cleanly), and shutdown waits for it.
pub fn spawn_task<F>(ctx: &Context, stop: CancellationToken, work: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let shutdown = ctx.shutdown.clone();
    let mut moves = ctx.moves.lock().unwrap_or_else(|e| e.into_inner());
    // Reap tasks that ended, so the set does not grow for ever.
    while moves.try_join_next().is_some() {}
    moves.spawn(async move {
        let watch = async move {
            shutdown.cancelled().await;
            stop.cancel();
        };
        tokio::pin!(work);
        tokio::select! {
            _ = &mut work => {}
            _ = watch => work.await,
        }
    });
}

/// The answer of a command that started task `id` to act on the move of
/// task `of`: both ids, so SHOW TASKS and STOP_TASK can find it.
pub fn started(tag: &'static str, id: u64, of: u64) -> Reply {
    let mut reply = Reply::new(tag, &["task_id", "of_task"]);
    reply.push(vec![text(id), text(of)]);
    reply
}

/// The options of the move DATA_SYNC started as task `id`, for `command`
/// (VERIFY, CUTOVER) to act on, or an error saying what `id` is instead.
pub fn move_options(
    ctx: &Context,
    id: u64,
    command: &str,
) -> Result<crate::data_sync::Options, CommandError> {
    let Some(of) = ctx.registry.get(id) else {
        return Err(
            CommandError::unknown(format!("no task with id {id}")).hint(format!(
                "SHOW TASKS lists the tasks; {command} takes a DATA_SYNC task's id"
            )),
        );
    };
    let opts = of.options();
    opts.ok_or_else(|| {
        CommandError::new(
            super::error::sqlstate::OBJECT_IN_USE,
            format!("task {id} is not a data-sync move"),
        )
        .hint(format!(
            "{command} takes the id of a task DATA_SYNC started"
        ))
    })
}

/// A task that has not ended.
pub fn is_running(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::Preflight
            | Phase::Schema
            | Phase::Copying
            | Phase::Indexing
            | Phase::Streaming
            | Phase::Verifying
            | Phase::CuttingOver
    )
}

/// One line of HELP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub syntax: &'static str,
    pub description: &'static str,
}

/// One command: how it parses its arguments and what it does.
pub trait AdminCommand: Sized {
    const USAGE: Usage;

    /// Parse the words after the command's keywords.
    fn parse(args: &[String]) -> Result<Self, CommandError>;

    /// Run it. Errors go to the client; the session goes on.
    async fn execute(&self, ctx: &Context) -> Result<Reply, CommandError>;
}

/// Every command the console knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    ShowVersion(ShowVersion),
    ShowConfig(ShowConfig),
    ShowDatabases(ShowDatabases),
    ShowUsers(ShowUsers),
    ShowTasks(ShowTasks),
    ShowTableCopies(ShowTableCopies),
    ShowReplicationSlots(ShowReplicationSlots),
    ShowRouting(ShowRouting),
    ShowSchemaSync(ShowSchemaSync),
    ShowVerify(ShowVerify),
    DataSync(DataSync),
    Verify(Verify),
    Cutover(Cutover),
    StopTask(StopTask),
    Help(Help),
}

/// Every command's usage, in the order HELP lists them.
pub const COMMANDS: &[Usage] = &[
    ShowVersion::USAGE,
    ShowConfig::USAGE,
    ShowDatabases::USAGE,
    ShowUsers::USAGE,
    ShowTasks::USAGE,
    ShowTableCopies::USAGE,
    ShowReplicationSlots::USAGE,
    ShowRouting::USAGE,
    ShowSchemaSync::USAGE,
    ShowVerify::USAGE,
    DataSync::USAGE,
    Verify::USAGE,
    Cutover::USAGE,
    StopTask::USAGE,
    Help::USAGE,
];

/// What SHOW can show, for hints.
const SHOW_TARGETS: &str =
    "VERSION, CONFIG, DATABASES, USERS, TASKS, TABLE_COPIES, REPLICATION_SLOTS, ROUTING, SCHEMA_SYNC, VERIFY";

impl Command {
    /// Parse one statement (no `;` inside, see [`statements`]).
    pub fn parse(statement: &str) -> Result<Command, CommandError> {
        let words = words(statement)?;
        let Some(first) = words.first() else {
            return Err(CommandError::syntax("empty command").hint("HELP lists the commands"));
        };
        let keyword = first.to_ascii_uppercase();
        let rest = &words[1..];
        match keyword.as_str() {
            "SHOW" => {
                let Some(target) = rest.first() else {
                    return Err(CommandError::syntax("SHOW needs something to show")
                        .hint(format!("SHOW one of {SHOW_TARGETS}")));
                };
                let args = &rest[1..];
                match target.to_ascii_uppercase().as_str() {
                    "VERSION" => ShowVersion::parse(args).map(Command::ShowVersion),
                    "CONFIG" => ShowConfig::parse(args).map(Command::ShowConfig),
                    "DATABASES" => ShowDatabases::parse(args).map(Command::ShowDatabases),
                    "USERS" => ShowUsers::parse(args).map(Command::ShowUsers),
                    "TASKS" => ShowTasks::parse(args).map(Command::ShowTasks),
                    "TABLE_COPIES" => ShowTableCopies::parse(args).map(Command::ShowTableCopies),
                    "REPLICATION_SLOTS" => {
                        ShowReplicationSlots::parse(args).map(Command::ShowReplicationSlots)
                    }
                    "ROUTING" => ShowRouting::parse(args).map(Command::ShowRouting),
                    "SCHEMA_SYNC" => ShowSchemaSync::parse(args).map(Command::ShowSchemaSync),
                    "VERIFY" => ShowVerify::parse(args).map(Command::ShowVerify),
                    _ => Err(CommandError::unknown(format!(
                        "unknown SHOW target \"{target}\" in \"{}\"",
                        statement.trim()
                    ))
                    .hint(format!("SHOW one of {SHOW_TARGETS}; HELP lists every command"))),
                }
            }
            "DATA_SYNC" => DataSync::parse(rest).map(Command::DataSync),
            "STOP_TASK" => StopTask::parse(rest).map(Command::StopTask),
            "VERIFY" => Verify::parse(rest).map(Command::Verify),
            "CUTOVER" => Cutover::parse(rest).map(Command::Cutover),
            "HELP" => Help::parse(rest).map(Command::Help),
            _ => Err(CommandError::unknown(format!(
                "unknown admin command \"{}\"",
                statement.trim()
            ))
            .detail("this is the pgdog admin console, not a PostgreSQL database: it runs its own commands, not SQL")
            .hint("try HELP")),
        }
    }

    pub async fn execute(&self, ctx: &Context) -> Result<Reply, CommandError> {
        match self {
            Command::ShowVersion(c) => c.execute(ctx).await,
            Command::ShowConfig(c) => c.execute(ctx).await,
            Command::ShowDatabases(c) => c.execute(ctx).await,
            Command::ShowUsers(c) => c.execute(ctx).await,
            Command::ShowTasks(c) => c.execute(ctx).await,
            Command::ShowTableCopies(c) => c.execute(ctx).await,
            Command::ShowReplicationSlots(c) => c.execute(ctx).await,
            Command::ShowRouting(c) => c.execute(ctx).await,
            Command::ShowSchemaSync(c) => c.execute(ctx).await,
            Command::ShowVerify(c) => c.execute(ctx).await,
            Command::Verify(c) => c.execute(ctx).await,
            Command::Cutover(c) => c.execute(ctx).await,
            Command::DataSync(c) => c.execute(ctx).await,
            Command::StopTask(c) => c.execute(ctx).await,
            Command::Help(c) => c.execute(ctx).await,
        }
    }
}

/// Refuse arguments for a command that takes none.
pub fn no_args(usage: Usage, args: &[String]) -> Result<(), CommandError> {
    match args.first() {
        None => Ok(()),
        Some(extra) => Err(CommandError::syntax(format!(
            "unexpected \"{extra}\" after {}",
            usage.syntax
        ))
        .hint(format!("the syntax is: {}", usage.syntax))),
    }
}

/// Split a query string into statements on `;` outside quotes; empty
/// statements (a trailing `;`, `;;`) are dropped.
pub fn statements(query: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quote: Option<char> = None;
    let mut start = 0;
    for (i, c) in query.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ';') => {
                out.push(&query[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&query[start..]);
    out.retain(|s| !s.trim().is_empty());
    out
}

/// Split a statement into words on whitespace; quoted words keep what is
/// inside the quotes (a doubled quote is one quote character).
fn words(statement: &str) -> Result<Vec<String>, CommandError> {
    let mut out = Vec::new();
    let mut chars = statement.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '\'' || c == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some(x) if x == c => {
                        if chars.peek() == Some(&c) {
                            chars.next();
                            word.push(c);
                        } else {
                            break;
                        }
                    }
                    Some(x) => word.push(x),
                    None => {
                        return Err(CommandError::syntax(format!(
                            "unterminated quoted name in \"{}\"",
                            statement.trim()
                        ))
                        .hint(format!("close the {c} quote")))
                    }
                }
            }
        } else {
            while let Some(&x) = chars.peek() {
                if x.is_whitespace() {
                    break;
                }
                word.push(x);
                chars.next();
            }
        }
        out.push(word);
    }
    Ok(out)
}

/// A context over an empty config, for the commands' unit tests.
#[cfg(test)]
pub fn test_context(registry: Arc<Registry>) -> Context {
    let config = Config::from_strs(
        std::path::Path::new("pgdog.toml"),
        "[general]\ntls_verify = \"disabled\"\n",
        std::path::Path::new("users.toml"),
        "",
    )
    .expect("an empty config is valid");
    Context::new(Arc::new(config), registry, CancellationToken::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements() {
        assert_eq!(statements("SHOW TASKS;"), ["SHOW TASKS"]);
        assert_eq!(
            statements("show tasks; SHOW VERSION ;;"),
            ["show tasks", " SHOW VERSION "]
        );
        assert_eq!(statements("DATA_SYNC 'a;b' x"), ["DATA_SYNC 'a;b' x"]);
        assert!(statements(" ; ").is_empty());
    }

    #[test]
    fn splits_words() {
        assert_eq!(
            words("  DATA_SYNC \"My Db\" 'it''s'  x ").unwrap(),
            ["DATA_SYNC", "My Db", "it's", "x"]
        );
        let err = words("DATA_SYNC 'open").unwrap_err();
        assert_eq!(err.code, "42601");
    }

    #[test]
    fn parses_case_insensitively() {
        assert_eq!(
            Command::parse("show Version").unwrap(),
            Command::ShowVersion(ShowVersion)
        );
        assert_eq!(
            Command::parse("SHOW table_copies").unwrap(),
            Command::ShowTableCopies(ShowTableCopies)
        );
        assert_eq!(Command::parse("help").unwrap(), Command::Help(Help));
        assert_eq!(
            Command::parse("stop_task 12").unwrap(),
            Command::StopTask(StopTask { id: 12 })
        );
    }

    #[test]
    fn unknown_and_malformed() {
        let e = Command::parse("SELECT 1").unwrap_err();
        assert_eq!(e.code, "42704");
        assert!(e.message.contains("SELECT 1"), "{e:?}");
        assert_eq!(e.hint.as_deref(), Some("try HELP"));

        let e = Command::parse("SHOW NOTHING").unwrap_err();
        assert_eq!(e.code, "42704");
        assert!(e.message.contains("NOTHING"), "{e:?}");

        let e = Command::parse("SHOW").unwrap_err();
        assert_eq!(e.code, "42601");

        let e = Command::parse("SHOW TASKS please").unwrap_err();
        assert_eq!(e.code, "42601");
        assert!(e.message.contains("please"), "{e:?}");

        let e = Command::parse("STOP_TASK x").unwrap_err();
        assert_eq!(e.code, "42601");
        let e = Command::parse("STOP_TASK").unwrap_err();
        assert_eq!(e.code, "42601");
        let e = Command::parse("DATA_SYNC a b c").unwrap_err();
        assert_eq!(e.code, "42601");
        assert!(e.hint.unwrap().contains("DATA_SYNC <from_database>"));
    }

    #[test]
    fn every_listed_command_is_known() {
        for (i, usage) in COMMANDS.iter().enumerate() {
            assert!(
                COMMANDS[..i].iter().all(|u| u.syntax != usage.syntax),
                "{} listed twice",
                usage.syntax
            );
            // The keywords alone parse, or miss only their arguments.
            let keywords = usage.syntax.split(" <").next().unwrap_or(usage.syntax);
            if let Err(e) = Command::parse(keywords) {
                assert_eq!(e.code, "42601", "{keywords}: {e:?}");
            }
        }
    }
}
