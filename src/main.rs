//! The `deskbridge` command: parses arguments, sets up tracing, calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Demo,
    /// Run the pipeline continuously with the health/status API.
    Serve {
        /// Config file.
        #[arg(long, env = "DESKBRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Run the pipeline without the HTTP API.
    Sync {
        /// One pass, then exit (non-zero when a connector failed).
        #[arg(long)]
        once: bool,
        /// Config file.
        #[arg(long, env = "DESKBRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Print the JSON Schema of the access-request and decision contract.
    Schema,
    /// Work with mapping files.
    Mapping {
        #[command(subcommand)]
        command: MappingCommand,
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
    },
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
    let quiet = matches!(cli.command, Command::Demo | Command::Schema | Command::Mapping { .. });
    init_tracing(if quiet { "warn" } else { "info" });
    let result: anyhow::Result<(String, bool)> = match cli.command {
        Command::Demo => deskbridge::commands::demo::run().await.map(|out| (out, true)),
        Command::Serve { config } => deskbridge::commands::serve(&config).await.map(|()| (String::new(), true)),
        Command::Sync { once, config } => deskbridge::commands::sync(&config, once).await.map(|out| (out, true)),
        Command::Schema => deskbridge::commands::schema().map(|out| (out, true)),
        Command::Mapping {
            command: MappingCommand::Test { mapping, ticket },
        } => deskbridge::commands::mapping_test(&mapping, &ticket),
    };
    match result {
        Ok((out, ok)) => {
            print!("{out}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
