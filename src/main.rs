//! The `pgdog` binary: the command line in front of the library.

#![warn(clippy::too_many_lines)]

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use pgdog::config::Config;
use pgdog::data_sync::{self, Mode, Outcome, Registry};
use pgdog::sharding::{shards_of_values, DataType};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "pgdog",
    version,
    about = "Move data online between PostgreSQL clusters, resharding it in flight"
)]
struct Cli {
    /// Path to pgdog.toml.
    #[arg(
        long,
        global = true,
        default_value = "pgdog.toml",
        env = "PGDOG_CONFIG"
    )]
    config: PathBuf,
    /// Path to users.toml.
    #[arg(long, global = true, default_value = "users.toml", env = "PGDOG_USERS")]
    users: PathBuf,
    /// Log lines as text (coloured on a terminal) or one JSON object per
    /// line.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "PGDOG_LOG_FORMAT"
    )]
    log_format: pgdog::logging::LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the admin console (what bare `pgdog` does).
    Run,
    /// Copy a publication's tables to another cluster, resharding rows, then
    /// stream changes until stopped.
    DataSync(DataSyncArgs),
    /// Create the publication's schema on every destination shard with
    /// pg_dump: pre-data (tables, types, functions, sequences, primary
    /// keys), post-data (indexes, constraints, foreign keys, triggers).
    SchemaSync(SchemaSyncArgs),
    /// Compare the source and the destination of a move at one consistent
    /// point while it keeps streaming: row counts and checksums per table
    /// and destination shard. Exit status 0: equal, 1: something differs,
    /// 2: error.
    Verify(VerifyArgs),
    /// Set every sequence the published tables use on every destination
    /// shard above the highest value handed out, plus a margin: interleaved
    /// across shards for sharded tables. Run it once the source stopped
    /// writing, before the application writes to the destination.
    SequenceSync(SequenceSyncArgs),
    /// End a move: freeze the application's writes on the source, drain,
    /// set the sequences, verify, then stream the destination's changes
    /// back to the source (for a rollback) until stopped.
    Cutover(CutoverArgs),
    /// Check pgdog.toml and users.toml and print a summary.
    Configcheck,
    /// Print the shard of each value, as PostgreSQL hash partitioning would.
    Hash {
        /// bigint, integer, smallint, uuid, varchar or text.
        #[arg(long, value_parser = parse_data_type)]
        data_type: DataType,
        /// Number of shards.
        #[arg(long)]
        shards: NonZeroUsize,
        /// Values in text form.
        #[arg(required = true)]
        values: Vec<String>,
    },
    /// Run a move on throwaway local clusters: a source and two
    /// destination shards, with writes during the copy and the stream.
    Demo(pgdog::demo::DemoArgs),
}

/// Which clusters, as whom, and which publication: every command that
/// moves something takes these.
#[derive(Debug, Args)]
struct MoveArgs {
    /// Source cluster (a [[databases]] name in pgdog.toml).
    #[arg(long)]
    from_database: String,
    /// Source user (in users.toml).
    #[arg(long)]
    from_user: String,
    /// Destination cluster.
    #[arg(long)]
    to_database: String,
    /// Destination user.
    #[arg(long)]
    to_user: String,
    /// Publication on the source shards.
    #[arg(long)]
    publication: String,
    /// Permanent replication slot (same name on every source shard);
    /// default pgdog_<publication>_<to-database>.
    #[arg(long)]
    replication_slot: Option<String>,
}

impl MoveArgs {
    fn options(&self, mode: Mode, schema_sync: bool) -> data_sync::Options {
        data_sync::Options {
            from_database: self.from_database.clone(),
            from_user: self.from_user.clone(),
            to_database: self.to_database.clone(),
            to_user: self.to_user.clone(),
            publication: self.publication.clone(),
            slot: self.replication_slot.clone(),
            mode,
            schema_sync,
        }
    }
}

#[derive(Debug, Args)]
struct DataSyncArgs {
    #[command(flatten)]
    target: MoveArgs,
    /// Copy the tables, then exit; the slot stays for --replicate-only.
    #[arg(long, conflicts_with_all = ["replicate_only", "cleanup"])]
    sync_only: bool,
    /// Stream from an existing slot without copying.
    #[arg(long, conflicts_with = "cleanup")]
    replicate_only: bool,
    /// Drop the replication slot(s) and pgdog's state, then exit.
    #[arg(long)]
    cleanup: bool,
    /// Serve the admin console on this port while the move runs
    /// (default: [general] port; 0 to disable).
    #[arg(long)]
    admin_port: Option<u16>,
    /// Do not create the schema on the destinations: every table must be
    /// there already, with whatever indexes it should have.
    #[arg(long)]
    skip_schema_sync: bool,
}

#[derive(Debug, Args)]
struct SchemaSyncArgs {
    // The slot's name is the move's: created tables are recorded under it,
    // so a later data-sync builds their indexes after its copy.
    #[command(flatten)]
    target: MoveArgs,
    /// Print the SQL each shard would run, and what is left out; change
    /// nothing.
    #[arg(long)]
    dry_run: bool,
    /// pre: before a copy; post: indexes, constraints, foreign keys and
    /// triggers after it; all: both.
    #[arg(long, value_enum, default_value = "all")]
    phase: pgdog::data_sync::schema::Phases,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    #[command(flatten)]
    target: MoveArgs,
    /// Only this table (name or schema.name); repeat for more.
    #[arg(long = "table")]
    tables: Vec<String>,
    /// Narrow each differing table down to the keys that differ (at most
    /// 20 missing, extra and changed each).
    #[arg(long)]
    detail: bool,
}

#[derive(Debug, Args)]
struct SequenceSyncArgs {
    #[command(flatten)]
    target: MoveArgs,
    /// How far above the highest value handed out to start.
    #[arg(long, default_value_t = data_sync::sequences::DEFAULT_MARGIN)]
    margin: i64,
    /// Print what would be set, change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
struct CutoverArgs {
    #[command(flatten)]
    target: MoveArgs,
    /// A login role the application writes with: frozen on the source
    /// (on the destination for --rollback). Repeat for more.
    #[arg(long = "freeze-role")]
    freeze_roles: Vec<String>,
    /// Freeze only once every source shard's lag is at most this many
    /// bytes.
    #[arg(long, default_value_t = data_sync::cutover::DEFAULT_MAX_LAG)]
    max_lag: u64,
    /// Seconds the freeze and the drain may take before the cutover
    /// gives up and unfreezes.
    #[arg(long, default_value_t = data_sync::cutover::DEFAULT_TIMEOUT.as_secs())]
    timeout: u64,
    /// The publication (and slot name) of the reverse stream on the
    /// destination shards.
    #[arg(long, default_value = data_sync::cutover::DEFAULT_REVERSE_PUBLICATION)]
    reverse_publication: String,
    /// Do not verify before switching.
    #[arg(long)]
    skip_verify: bool,
    /// How far above the highest value handed out sequences start.
    #[arg(long, default_value_t = data_sync::sequences::DEFAULT_MARGIN)]
    margin: i64,
    /// Make the source the primary again: freeze the destination, drain
    /// the reverse stream, set the source's sequences, unfreeze the source.
    #[arg(long, conflicts_with = "complete")]
    rollback: bool,
    /// Drop the reverse stream's slots and publications and the move's
    /// slot: the source is left frozen.
    #[arg(long)]
    complete: bool,
    /// Serve the admin console on this port while streaming back
    /// (default: [general] port; 0 to disable).
    #[arg(long)]
    admin_port: Option<u16>,
}

fn parse_data_type(s: &str) -> Result<DataType, String> {
    DataType::from_type_name(s).ok_or_else(|| {
        format!("unknown data type \"{s}\"; use bigint, integer, smallint, uuid, varchar or text")
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    pgdog::logging::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async_main(cli))
}

fn load(cli: &Cli) -> Result<Arc<Config>, ExitCode> {
    Config::load(&cli.config, &cli.users)
        .map(Arc::new)
        .map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        })
}

/// Cancel `token` on Ctrl-C or SIGTERM.
fn stop_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("\nstopping (signal received)...");
        token.cancel();
    });
}

async fn async_main(cli: Cli) -> ExitCode {
    match &cli.command {
        None | Some(Command::Run) => {
            let config = match load(&cli) {
                Ok(c) => c,
                Err(code) => return code,
            };
            serve_command(config).await
        }
        Some(Command::Configcheck) => match Config::load(&cli.config, &cli.users) {
            Ok(c) => {
                print!("{}", pgdog::admin::config_summary(&c));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Hash {
            data_type,
            shards,
            values,
        }) => match shards_of_values(*data_type, *shards, values) {
            Ok(found) => {
                for (v, s) in values.iter().zip(found) {
                    println!("{v}\t{s}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Demo(args)) => match pgdog::demo::run(args.clone()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::DataSync(args)) => {
            let config = match load(&cli) {
                Ok(c) => c,
                Err(code) => return code,
            };
            data_sync_command(config, args).await
        }
        Some(Command::Verify(args)) => {
            let config = match load(&cli) {
                Ok(c) => c,
                Err(_) => return ExitCode::from(2),
            };
            verify_command(config, args).await
        }
        Some(Command::SequenceSync(args)) => {
            let config = match load(&cli) {
                Ok(c) => c,
                Err(code) => return code,
            };
            sequence_sync_command(config, args).await
        }
        Some(Command::Cutover(args)) => {
            let config = match load(&cli) {
                Ok(c) => c,
                Err(code) => return code,
            };
            cutover_command(config, args).await
        }
        Some(Command::SchemaSync(args)) => {
            let config = match load(&cli) {
                Ok(c) => c,
                Err(code) => return code,
            };
            schema_sync_command(config, args).await
        }
    }
}

/// The proxy's admin console, until a signal.
async fn serve_command(config: Arc<Config>) -> ExitCode {
    let token = CancellationToken::new();
    stop_on_signals(token.clone());
    let registry = Arc::new(Registry::default());
    match pgdog::admin::serve(config, registry, None, token).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn sequence_sync_command(config: Arc<Config>, args: &SequenceSyncArgs) -> ExitCode {
    let opts = args.target.options(Mode::ReplicateOnly, false);
    match data_sync::sequences::command(config, &opts, args.margin, args.dry_run).await {
        Ok(plans) => {
            print!("{}", data_sync::sequences::render(&plans));
            if args.dry_run {
                eprintln!("dry run: nothing was changed.");
            } else {
                eprintln!("{} sequences set on every destination shard.", plans.len());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn schema_sync_command(config: Arc<Config>, args: &SchemaSyncArgs) -> ExitCode {
    let opts = args.target.options(Mode::Full, true);
    let token = CancellationToken::new();
    stop_on_signals(token.clone());
    let registry = Arc::new(Registry::default());
    let task = registry.new_task(&opts.from_database, &opts.to_database, &opts.publication);
    let reporter = (!args.dry_run).then(|| pgdog::report::spawn(task.clone(), token.clone()));
    let result =
        data_sync::schema::command(config, &opts, args.phase, args.dry_run, &task, &token).await;
    token.cancel();
    if let Some(r) = reporter {
        let _ = r.await;
    }
    match result {
        Ok(report) if args.dry_run => {
            eprintln!(
                "dry run: nothing was changed ({} objects exist already).",
                report.existed
            );
            ExitCode::SUCCESS
        }
        Ok(report) => {
            eprintln!(
                "schema sync done: {} statements run, {} objects existed already.",
                report.created, report.existed
            );
            for n in &report.not_valid {
                eprintln!("  foreign key left NOT VALID: {n}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn verify_command(config: Arc<Config>, args: &VerifyArgs) -> ExitCode {
    let opts = args.target.options(Mode::ReplicateOnly, false);
    let token = CancellationToken::new();
    stop_on_signals(token.clone());
    let registry = Arc::new(Registry::default());
    let task = registry.new_task(&opts.from_database, &opts.to_database, &opts.publication);
    let reporter = pgdog::report::spawn(task.clone(), token.clone());
    let request = data_sync::verify::Request {
        tables: args.tables.clone(),
        detail: args.detail,
    };
    let result = data_sync::verify::run(config, &opts, &request, &task, &token).await;
    token.cancel();
    let _ = reporter.await;
    match result {
        Ok(report) => {
            print!("{}", data_sync::verify::render(&report));
            if report.equal() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn cutover_command(config: Arc<Config>, args: &CutoverArgs) -> ExitCode {
    use data_sync::cutover::{self, runner::Ended, Action};
    let opts = args.target.options(Mode::ReplicateOnly, false);
    let request = cutover::Request {
        action: if args.rollback {
            Action::Rollback
        } else if args.complete {
            Action::Complete
        } else {
            Action::Cutover
        },
        freeze_roles: args.freeze_roles.clone(),
        max_lag: args.max_lag,
        timeout: std::time::Duration::from_secs(args.timeout),
        reverse_publication: args.reverse_publication.clone(),
        skip_verify: args.skip_verify,
        margin: args.margin,
    };
    let token = CancellationToken::new();
    stop_on_signals(token.clone());
    let runner = cutover::runner::Runner {
        config: config.clone(),
        registry: Arc::new(Registry::default()),
        reporter: Some(pgdog::report::spawn),
        voice: cutover::runner::Voice::Terminal,
    };
    let task = runner.new_task(&opts);
    let admin_port = args.admin_port.unwrap_or(config.general.port);
    if admin_port != 0 && request.action == Action::Cutover {
        let (config, registry, token) = (config, runner.registry.clone(), token.clone());
        tokio::spawn(async move {
            if let Err(e) = pgdog::admin::serve(config, registry, Some(admin_port), token).await {
                tracing::warn!("admin console not available: {e}");
            }
        });
    }
    let result = runner.run(&opts, &request, task, token.clone()).await;
    token.cancel();
    let same = std::env::args().collect::<Vec<_>>().join(" ");
    match result {
        Ok(Ended::RolledBack | Ended::Completed) => ExitCode::SUCCESS,
        Ok(Ended::CutOver { streamed, .. }) => match streamed {
            Ok(data_sync::Outcome::CutOver) => {
                eprintln!(
                    "the reverse stream was ended (by pgdog cutover --rollback or --complete)."
                );
                ExitCode::SUCCESS
            }
            Ok(_) => {
                eprintln!("stopped. The reverse slot keeps every change on the destination; resume streaming it back with: {same}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                eprintln!("the destination still takes the writes, and the reverse slot keeps them: rerun {same} to stream them back");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn data_sync_command(config: Arc<Config>, args: &DataSyncArgs) -> ExitCode {
    let mode = if args.cleanup {
        Mode::Cleanup
    } else if args.sync_only {
        Mode::SyncOnly
    } else if args.replicate_only {
        Mode::ReplicateOnly
    } else {
        Mode::Full
    };
    let opts = args.target.options(mode, !args.skip_schema_sync);
    let slot = opts.slot_name();
    if args.target.replication_slot.is_none() && mode != Mode::Cleanup {
        eprintln!("replication slot: {slot}");
    }
    // `shutdown` ends the process (signals); the task's own token stops the
    // move, from a signal or from STOP_TASK on the admin console.
    let token = CancellationToken::new();
    stop_on_signals(token.clone());
    let registry = Arc::new(Registry::default());
    let task = registry.new_task(&opts.from_database, &opts.to_database, &opts.publication);
    let stop = task.stop.clone();
    {
        let (token, stop) = (token.clone(), stop.clone());
        tokio::spawn(async move {
            token.cancelled().await;
            stop.cancel();
        });
    }

    // The admin console and metrics, while the move runs.
    let admin_port = args.admin_port.unwrap_or(config.general.port);
    if admin_port != 0 && mode != Mode::Cleanup {
        let (config, registry, token) = (config.clone(), registry.clone(), token.clone());
        tokio::spawn(async move {
            if let Err(e) = pgdog::admin::serve(config, registry, Some(admin_port), token).await {
                tracing::warn!("admin console not available: {e}");
            }
        });
    }
    let reporter = pgdog::report::spawn(task.clone(), token.clone());
    let result = data_sync::run(config, opts.clone(), task, stop).await;
    token.cancel();
    let _ = reporter.await;
    let same = std::env::args().collect::<Vec<_>>().join(" ");
    match result {
        Ok(Outcome::Copied) => {
            eprintln!("copy complete. The slot \"{slot}\" keeps the changes since; stream them with the same command and --replicate-only instead of --sync-only.");
            ExitCode::SUCCESS
        }
        Ok(Outcome::CutOver) => {
            eprintln!("the move was cut over (pgdog cutover): the destination takes the writes, and this stream ended for good.");
            ExitCode::SUCCESS
        }
        Ok(Outcome::CleanedUp) => {
            eprintln!("cleaned up: slot \"{slot}\" and pgdog's state are gone.");
            ExitCode::SUCCESS
        }
        Ok(Outcome::Stopped) => {
            eprintln!("stopped. The slot \"{slot}\" keeps every change since.");
            eprintln!("  resume:  {same}");
            eprintln!(
                "  abandon: {} --cleanup   (drops the slot so the source stops keeping WAL for it)",
                same.replace(" --replicate-only", "")
                    .replace(" --sync-only", "")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            if !matches!(
                e,
                data_sync::DataSyncError::Preflight { .. } | data_sync::DataSyncError::Config(_)
            ) {
                eprintln!("the slot \"{slot}\" was kept: rerun the same command to resume, or add --cleanup to abandon the move.");
            }
            ExitCode::FAILURE
        }
    }
}
