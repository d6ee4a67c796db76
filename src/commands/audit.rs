//! `deskbridge audit …`, `deskbridge trace` and `deskbridge report drift`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};

use crate::audit::{self, AuditSigner, Format};
use crate::report::drift;
use crate::store::Store;

/// The environment variable holding the audit signing key when `--db` is used.
pub const KEY_ENV: &str = "DESKBRIDGE_AUDIT_KEY";

/// Where the store is: a config file, or the SQLite file itself.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct StoreArgs {
    /// Config file (its [store] and [audit]).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The SQLite file directly; the signing key then comes from DESKBRIDGE_AUDIT_KEY.
    #[arg(long)]
    pub db: Option<PathBuf>,
}

async fn open(args: &StoreArgs) -> anyhow::Result<(Store, Option<AuditSigner>)> {
    if let Some(db) = &args.db {
        if !db.exists() {
            anyhow::bail!("no store at {}", db.display());
        }
        let signer = std::env::var(KEY_ENV)
            .ok()
            .map(|k| AuditSigner::from_secret(&k.into()))
            .transpose()
            .context(KEY_ENV)?;
        return Ok((Store::open(db).await?, signer));
    }
    let path = args.config.as_deref().context("--config or --db is required")?;
    let config = crate::wiring::load(path)?;
    let signer = crate::wiring::signer(&config.audit)?;
    let store = Store::from_config(&config.store).await?;
    Ok((store, signer))
}

/// Parses `YYYY-MM-DD` (midnight UTC) or RFC 3339.
pub fn parse_since(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_hms_opt(0, 0, 0).context("midnight")?.and_utc());
    }
    Ok(DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("--since {text:?}: expected YYYY-MM-DD or an RFC 3339 time"))?
        .with_timezone(&Utc))
}

/// `audit verify`: the store's chain and checkpoints, or an export with a public key.
/// Returns the message and whether it verified.
pub async fn verify(args: Option<&StoreArgs>, export: Option<&Path>, public_key: Option<&str>) -> anyhow::Result<(String, bool)> {
    let result = match (export, public_key, args) {
        (Some(file), Some(key), _) => {
            let key = audit::signing::parse_public_key(key)?;
            audit::verify_export(file, &key)
        }
        (Some(_), None, _) => anyhow::bail!("--export needs --public-key"),
        (None, _, Some(args)) => audit::verify_store(&open(args).await?.0).await?,
        (None, _, None) => anyhow::bail!("give --config or --db, or --export with --public-key"),
    };
    Ok(match result {
        Ok(message) => (message + "\n", true),
        Err(problem) => (format!("audit verification FAILED: {problem}\n"), false),
    })
}

/// `audit export`.
pub async fn export(args: &StoreArgs, since: Option<&str>, format: Format, output: Option<&Path>) -> anyhow::Result<String> {
    let (store, signer) = open(args).await?;
    let since = since.map(parse_since).transpose()?;
    let count = match output {
        Some(path) => {
            let mut file = std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?);
            let n = audit::export(&store, since, format, signer.as_ref(), &mut file).await?;
            std::io::Write::flush(&mut file)?;
            n
        }
        None => {
            // Straight to stdout, a line at a time, each line made safe for a terminal.
            let stdout = std::io::stdout();
            let mut out = crate::text::TerminalLines::new(std::io::BufWriter::new(stdout.lock()));
            audit::export(&store, since, format, signer.as_ref(), &mut out).await?;
            std::io::Write::flush(&mut out)?;
            return Ok(String::new());
        }
    };
    let signed = if signer.is_some() {
        ", ending on a signed checkpoint"
    } else {
        ", unsigned (no audit.signing_key)"
    };
    Ok(format!("exported {count} records{signed}\n"))
}

/// `audit checkpoint`: sign the latest record now.
pub async fn checkpoint(args: &StoreArgs) -> anyhow::Result<String> {
    let (store, signer) = open(args).await?;
    let signer = signer.context("no signing key: set [audit] signing_key or DESKBRIDGE_AUDIT_KEY")?;
    Ok(match audit::checkpoint(&store, &signer).await? {
        Some(cp) => format!("signed checkpoint at seq {} ({})\n", cp.seq, cp.hash),
        None => "nothing new to sign\n".into(),
    })
}

/// `audit keygen`: a new signing key and its public key.
pub fn keygen() -> String {
    let (secret, public) = AuditSigner::generate();
    format!(
        "signing key (keep secret; set [audit] signing_key = \"${{DESKBRIDGE_AUDIT_KEY}}\"):\n{}\npublic key (give to auditors):\n{public}\n",
        secrecy::ExposeSecret::expose_secret(&secret)
    )
}

/// `trace TICKET`.
pub async fn trace(args: &StoreArgs, ticket: &str) -> anyhow::Result<String> {
    audit::trace(&open(args).await?.0, ticket).await
}

/// `report shadow`.
pub async fn shadow(args: &StoreArgs) -> anyhow::Result<String> {
    super::shadow_report(&open(args).await?.0).await
}

/// `report drift`.
pub async fn drift(args: &StoreArgs, options: &drift::Options, format: drift::Format) -> anyhow::Result<String> {
    let findings = drift::drift(&open(args).await?.0, options).await?;
    drift::render(&findings, format)
}

/// `report access`.
pub async fn access(args: &StoreArgs, all: bool, format: drift::Format) -> anyhow::Result<String> {
    let rows = crate::report::access::access(&open(args).await?.0, all).await?;
    crate::report::access::render(&rows, format)
}

/// `deskbridge retry`: puts parked ticket versions and comments back to work — all of them,
/// one connector's (which also lifts that connector's halt after refused credentials), or one
/// ticket's. Safe beside a running `serve`: it only requeues rows.
pub async fn retry(args: &StoreArgs, connector: Option<&str>, ticket: Option<&str>) -> anyhow::Result<String> {
    let (store, _) = open(args).await?;
    let r = store.retry_parked(connector, ticket, &cli_actor()).await?;
    Ok(format!(
        "queued again: {} comment(s), {} ticket version(s); {} connector halt(s) lifted\n",
        r.comments, r.tickets, r.halts
    ))
}

/// `deskbridge report parked`: work that failed for a reason a retry will not fix, and
/// connectors that post nothing until an admin acts.
pub async fn parked(args: &StoreArgs) -> anyhow::Result<(String, bool)> {
    let (store, _) = open(args).await?;
    let (parked, halts) = (store.parked().await?, store.halts().await?);
    let mut out = String::new();
    for h in &halts {
        out.push_str(&format!(
            "HALTED {}: {} (since {}); fix it, then `deskbridge retry --connector {}`\n",
            h.connector,
            crate::commands::table::terminal_safe(&h.reason),
            h.at,
            h.connector
        ));
    }
    if parked.is_empty() && halts.is_empty() {
        return Ok(("nothing parked, no connector halted\n".into(), true));
    }
    out.push_str(&format!("{:<8} {:<14} {:<14} ERROR\n", "WHAT", "CONNECTOR", "TICKET"));
    for p in &parked {
        let t = crate::commands::table::terminal_safe;
        out.push_str(&format!(
            "{:<8} {:<14} {:<14} {}\n",
            p.what,
            t(&p.connector),
            t(&p.ticket),
            t(&p.error)
        ));
    }
    Ok((out, false))
}

/// Who runs a command from the shell, for the audit log: `cli:<login name>`.
pub fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}
