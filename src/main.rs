//! The `deskbridge` command: parses arguments, sets up tracing, calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use deskbridge::audit::Format as AuditFormat;
use deskbridge::commands::audit::StoreArgs;
use deskbridge::report::drift::{Format as DriftFormat, Options as DriftOptions};

#[derive(Parser)]
#[command(
    name = "deskbridge",
    version,
    about = "Connects service desks to identity decision points. The ticket never grants access."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole path on embedded defaults: seeded ServiceNow simulator, shipped mapping
    /// and policy, SQLite in a temporary folder.
    Demo {
        /// Keep the SQLite file here instead (must not exist yet).
        #[arg(long)]
        store: Option<PathBuf>,
    },
    /// Run the pipeline continuously with the health/status API.
    Serve {
        /// Config file.
        #[arg(long, env = "DESKBRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Run the pipeline without the HTTP API.
    Sync {
        /// One pass, then exit (non-zero when a connector failed).
        #[arg(long, conflicts_with = "backfill")]
        once: bool,
        /// Read every ticket updated since `--since`, with progress; resumable: run the same
        /// command again after an interruption and it goes on after the last stored page.
        #[arg(long, requires = "since")]
        backfill: bool,
        /// Start of the backfill: a date (`2026-01-31`, UTC midnight) or an RFC 3339 time.
        #[arg(long, requires = "backfill", value_parser = parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Config file.
        #[arg(long, env = "DESKBRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Print the JSON Schema of the access-request and decision contract.
    Schema,
    /// Work with the entitlement catalog.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Work with mapping files.
    Mapping {
        #[command(subcommand)]
        command: MappingCommand,
    },
    /// Verify, export and sign the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// One ticket's timeline: raw → normalized → decision(s) → comment(s), with hashes.
    Trace {
        /// Ticket number (RITM0010001) or key.
        ticket: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Work with Rego policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Print the configured decision point's decision for one normalized request (the shipped
    /// embedded policy without --config).
    Decide {
        /// A normalized access request (JSON, as `deskbridge schema` describes).
        #[arg(long)]
        request: PathBuf,
        /// Config file whose [decision] to use.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Put parked work back to work: ticket versions and comments that failed for a reason a
    /// retry would not fix (a removed connector, a template error, refused credentials). With
    /// --connector it also lifts that connector's halt after its credentials were refused.
    Retry {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this connector instance's work.
        #[arg(long)]
        connector: Option<String>,
        /// Only this ticket (number or key).
        #[arg(long)]
        ticket: Option<String>,
    },
    /// Governance reports.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Validate a catalog (every problem with file:line:key; exit 1) and show what tickets
    /// resolve to.
    Check {
        /// The catalog file.
        file: PathBuf,
        /// A mapping to read the tickets with.
        #[arg(long, requires = "tickets")]
        mapping: Option<PathBuf>,
        /// Ticket files (fixtures) whose ask to resolve.
        tickets: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the store's hash chain and checkpoints, or an export with a public key; exits 1
    /// naming the first bad record.
    Verify {
        /// Config file (its [store]).
        #[arg(long, conflicts_with_all = ["db", "export"])]
        config: Option<PathBuf>,
        /// The SQLite file directly.
        #[arg(long, conflicts_with = "export")]
        db: Option<PathBuf>,
        /// An exported trail (jsonl or csv) to verify without database access.
        #[arg(long, requires = "public_key")]
        export: Option<PathBuf>,
        /// Hex Ed25519 public key, or a file holding it.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Export records since a date, with the signed checkpoints covering them.
    Export {
        #[command(flatten)]
        store: StoreArgs,
        /// YYYY-MM-DD or RFC 3339; everything when absent.
        #[arg(long)]
        since: Option<String>,
        /// jsonl or csv.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: AuditFormat,
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Sign the latest record now.
    Checkpoint {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Make a new audit signing key pair.
    Keygen,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run the `test_*` rules of `*_test.rego` files (default: examples/policies/*.rego); exits
    /// 1 when any fails.
    Test {
        /// Policy and test files.
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Parked work and halted connectors (exit 1 when there is any).
    Parked {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// How often the shadow decision point agrees with the primary, and where it does not.
    Shadow {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Tickets approved or closed in the ITSM without a policy approve, disagreements,
    /// requester = approver, late requests, repeated requests, NHIs without owner or expiry,
    /// approved access with no expiry.
    Drift {
        #[command(flatten)]
        store: StoreArgs,
        /// table, json or csv.
        #[arg(long, value_enum, default_value = "table")]
        format: DriftFormat,
        /// Hours a request may wait for its decision (or its comment) before it is late.
        #[arg(long, default_value_t = 24.0)]
        sla_hours: f64,
        /// Requests for the same entitlement by the same beneficiary that count as repeated.
        #[arg(long, default_value_t = 3)]
        repeat_threshold: usize,
    },
}

#[derive(Subcommand)]
enum MappingCommand {
    /// Normalize one ticket JSON file with a mapping; exits 1 when fields are missing.
    Test {
        /// Mapping file.
        mapping: PathBuf,
        /// Ticket JSON (a raw ITSM record, or a stored ticket).
        ticket: PathBuf,
        /// Config file: also show the facts its [catalog] and [directory] add.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// `--since`: a date (UTC midnight) or an RFC 3339 time.
fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
        .map_err(|_| format!("{text:?} is neither a date (2026-01-31) nor an RFC 3339 time (2026-01-31T08:00:00Z)"))
}

async fn audit(command: AuditCommand) -> anyhow::Result<(String, bool)> {
    use deskbridge::commands::audit as cmd;
    match command {
        AuditCommand::Verify {
            config,
            db,
            export,
            public_key,
        } => {
            let store = (config.is_some() || db.is_some()).then_some(StoreArgs { config, db });
            cmd::verify(store.as_ref(), export.as_deref(), public_key.as_deref()).await
        }
        AuditCommand::Export {
            store,
            since,
            format,
            output,
        } => cmd::export(&store, since.as_deref(), format, output.as_deref())
            .await
            .map(|o| (o, true)),
        AuditCommand::Checkpoint { store } => cmd::checkpoint(&store).await.map(|o| (o, true)),
        AuditCommand::Keygen => Ok((cmd::keygen(), true)),
    }
}

fn init_tracing(default: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("DESKBRIDGE_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = !matches!(cli.command, Command::Serve { .. } | Command::Sync { .. });
    init_tracing(if quiet { "warn" } else { "info" });
    let result: anyhow::Result<(String, bool)> = match cli.command {
        Command::Demo { store } => deskbridge::commands::demo::run(store.as_deref()).await.map(|out| (out, true)),
        Command::Serve { config } => deskbridge::commands::serve(&config).await.map(|()| (String::new(), true)),
        Command::Sync {
            since: Some(since),
            config,
            ..
        } => deskbridge::commands::backfill(&config, since).await.map(|out| (out, true)),
        Command::Sync { once, config, .. } => deskbridge::commands::sync(&config, once).await.map(|out| (out, true)),
        Command::Schema => deskbridge::commands::schema().map(|out| (out, true)),
        Command::Mapping {
            command: MappingCommand::Test { mapping, ticket, config },
        } => deskbridge::commands::mapping_test(&mapping, &ticket, config.as_deref()).await,
        Command::Catalog {
            command: CatalogCommand::Check { file, mapping, tickets },
        } => deskbridge::commands::catalog_check(&file, mapping.as_deref(), &tickets),
        Command::Audit { command } => audit(command).await,
        Command::Policy {
            command: PolicyCommand::Test { files },
        } => deskbridge::commands::policy_test(&files),
        Command::Decide { request, config } => deskbridge::commands::decide(&request, config.as_deref())
            .await
            .map(|out| (out, true)),
        Command::Report {
            command: ReportCommand::Shadow { store },
        } => deskbridge::commands::audit::shadow(&store).await.map(|out| (out, true)),
        Command::Retry { store, connector, ticket } => deskbridge::commands::audit::retry(&store, connector.as_deref(), ticket.as_deref())
            .await
            .map(|out| (out, true)),
        Command::Report {
            command: ReportCommand::Parked { store },
        } => deskbridge::commands::audit::parked(&store).await,
        Command::Trace { ticket, store } => deskbridge::commands::audit::trace(&store, &ticket).await.map(|out| (out, true)),
        Command::Report {
            command:
                ReportCommand::Drift {
                    store,
                    format,
                    sla_hours,
                    repeat_threshold,
                },
        } => {
            let sla = std::time::Duration::try_from_secs_f64(sla_hours * 3600.0).unwrap_or(std::time::Duration::MAX);
            let options = DriftOptions { sla, repeat_threshold };
            deskbridge::commands::audit::drift(&store, &options, format)
                .await
                .map(|out| (out, true))
        }
    };
    match result {
        Ok((out, ok)) => {
            // Reports quote ticket text: nothing in it may drive the terminal.
            print!("{}", deskbridge::text::for_terminal(&out));
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {}", deskbridge::text::for_terminal(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}
