//! The `deskbridge` command: parses arguments, sets up tracing, calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use deskbridge::audit::Format as AuditFormat;
use deskbridge::commands::audit::StoreArgs;
use deskbridge::report::drift::{Format as DriftFormat, Options as DriftOptions};

/// mimalloc instead of glibc's allocator: deskbridge allocates many short-lived values per
/// ticket across the runtime's and the policy's threads (see the README's throughput figures).
/// Built with `override`, it also serves the C code's `malloc` (SQLite's page caches), so one
/// heap holds everything and gives freed pages back (see `Cargo.toml`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "deskbridge",
    version,
    about = "Connects service desks to identity decision points. The ticket never grants access."
)]
struct Cli {
    /// Log format on standard error: `text` (plain, no colour codes) or `json` (one object
    /// per line, for log shippers). The level comes from DESKBRIDGE_LOG, else RUST_LOG
    /// (`info`, `deskbridge=debug,warn`, …).
    #[arg(long, global = true, value_enum, env = "DESKBRIDGE_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
    /// Check a config file without running it.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Admin API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Start the ServiceNow, Jira and SCIM simulators on loopback, seeded, and print their URLs,
    /// credentials and a ready config file; runs until Ctrl-C.
    Simulate {
        /// Where to write the config, catalog and store (a new temporary folder when absent).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Add this many access requests to ServiceNow and to Jira (for load runs; the
        /// simulators then keep no request log).
        #[arg(long, default_value_t = 0)]
        tickets: usize,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Every validation and start-up check (credentials, permissions, catalog, directory,
    /// decision point), posting nothing; exits 1 when any fails.
    Check {
        /// Config file.
        #[arg(long, env = "DESKBRIDGE_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a new admin API token: prints the token once and the `[[server.tokens]]` entry (its
    /// SHA-256) to add to the config.
    New {
        /// Who will hold it (written to the audit log with every operator action).
        #[arg(long)]
        name: String,
        /// viewer or operator.
        #[arg(long, value_parser = parse_role)]
        role: deskbridge::config::Role,
    },
}

fn parse_role(text: &str) -> Result<deskbridge::config::Role, String> {
    match text {
        "viewer" => Ok(deskbridge::config::Role::Viewer),
        "operator" => Ok(deskbridge::config::Role::Operator),
        other => Err(format!("{other:?} is not a role: viewer or operator")),
    }
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
    /// Access granted through deskbridge's decisions and held now: who, which entitlement,
    /// when it was granted (evidence), when it expires, and the decision.
    Access {
        #[command(flatten)]
        store: StoreArgs,
        /// Every lifecycle: also approved and not yet granted, revoked and superseded.
        #[arg(long)]
        all: bool,
        /// table, json or csv.
        #[arg(long, value_enum, default_value = "table")]
        format: DriftFormat,
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

/// Logs go to standard error. The level is DESKBRIDGE_LOG, else RUST_LOG, else `default`; a
/// variable that does not parse is reported, not silently ignored.
fn init_tracing(default: &str, format: LogFormat) {
    let mut problem = None;
    let filter = ["DESKBRIDGE_LOG", "RUST_LOG"]
        .iter()
        .find_map(|var| {
            let value = std::env::var(var).ok().filter(|v| !v.trim().is_empty())?;
            match tracing_subscriber::EnvFilter::try_new(&value) {
                Ok(filter) => Some(filter),
                Err(e) => {
                    problem = Some(format!("{var}={value:?} is not a log filter ({e}); using {default:?}"));
                    None
                }
            }
        })
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default));
    // Log lines quote ticket text: each passes through the same filter as everything else
    // printed, so no control, bidi or zero-width character reaches a terminal or a log file
    // (JSON lines stay valid: they become \uXXXX escapes). That rules colour out, too.
    let writer = || deskbridge::text::TerminalLines::new(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false);
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Text => builder.init(),
    }
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = !matches!(cli.command, Command::Serve { .. } | Command::Sync { .. } | Command::Simulate { .. });
    init_tracing(if quiet { "warn" } else { "info" }, cli.log_format);
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
        Command::Config {
            command: ConfigCommand::Check { config },
        } => deskbridge::commands::config_check(&config).await,
        Command::Token {
            command: TokenCommand::New { name, role },
        } => {
            let (token, entry) = deskbridge::server::auth::new_token(&name, role);
            Ok((
                format!("token (shown once; give it to {name} and keep it out of files):\n  {token}\n\nadd to the config:\n\n{entry}"),
                true,
            ))
        }
        Command::Simulate { dir, tickets } => deskbridge::commands::simulate(dir.as_deref(), tickets).await.map(|out| (out, true)),
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
        Command::Report {
            command: ReportCommand::Access { store, all, format },
        } => deskbridge::commands::audit::access(&store, all, format)
            .await
            .map(|out| (out, true)),
    };
    match result {
        Ok((out, ok)) => {
            // Reports quote ticket text: nothing in it may drive the terminal.
            // A closed standard output (`| head`, a reader that went away) is not an error.
            let mut stdout = std::io::stdout();
            let _ = std::io::Write::write_all(&mut stdout, deskbridge::text::for_terminal(&out).as_bytes());
            let _ = std::io::Write::flush(&mut stdout);
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
