//! `mirror audit`: who read or wrote what, from the index (a cluster's
//! database when the config names one).

use anyhow::Context;

use super::DataDirArgs;
use crate::escape::escape_owned;
use crate::store::AuditRecord;

#[derive(clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    location: DataDirArgs,
    /// Certificate CN or user name.
    #[arg(long)]
    who: Option<String>,
    /// Part of an artifact: a module path, a repository, `module@version`.
    #[arg(long)]
    artifact: Option<String>,
    /// An exact digest: "who pulled this?".
    #[arg(long)]
    digest: Option<String>,
    /// Only records newer than this: a duration back from now (`24h`) or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Only records older than this (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// `24h` (that long ago) or `2026-11-25T10:00:00Z`, as unix milliseconds.
fn parse_when(flag: &str, text: &str) -> anyhow::Result<i64> {
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(crate::store::audit::now_ms() - ago.as_millis() as i64);
    }
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| {
            format!("{flag}: {text:?} is neither a duration (24h) nor an RFC 3339 time")
        })?;
    Ok((at.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// A record with every text escaped for the terminal. Rows this version writes
/// are escaped already (and escaping is idempotent); older rows, or rows
/// another tool wrote into the index, may not be.
fn inert(record: AuditRecord) -> AuditRecord {
    let text = escape_owned;
    AuditRecord {
        identity: text(record.identity),
        subject: text(record.subject),
        serial: record.serial.map(text),
        peer: text(record.peer),
        protocol: text(record.protocol),
        action: text(record.action),
        artifact: text(record.artifact),
        digest: record.digest.map(text),
        outcome: text(record.outcome),
        replica: record.replica.map(text),
        ..record
    }
}

pub fn run(args: AuditArgs) -> anyhow::Result<()> {
    use crate::store::AuditQuery;
    let config = args.location.load()?;
    let query = AuditQuery {
        subject: args.who,
        artifact: args.artifact,
        digest: args.digest,
        since_ms: args
            .since
            .as_deref()
            .map(|t| parse_when("--since", t))
            .transpose()?,
        until_ms: args
            .until
            .as_deref()
            .map(|t| parse_when("--until", t))
            .transpose()?,
        limit: args.limit,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let records = runtime.block_on(async {
        let store = super::open_store(&config).await?;
        let records = store.audit().query(&query).await;
        store.close().await;
        anyhow::Ok(records?)
    })?;
    let records: Vec<_> = records.into_iter().map(inert).collect();
    if args.json {
        for record in &records {
            println!("{}", serde_json::to_string(record)?);
        }
        return Ok(());
    }
    // A cluster's trail names the replica that served each request.
    let replicas = config.cluster.is_some() || records.iter().any(|r| r.replica.is_some());
    let replica_width = records
        .iter()
        .filter_map(|r| r.replica.as_deref().map(str::len))
        .chain(["REPLICA".len()])
        .max()
        .unwrap_or(0);
    let replica = |name: Option<&str>| {
        if replicas {
            format!("{:<replica_width$} ", name.unwrap_or("-"))
        } else {
            String::new()
        }
    };
    println!(
        "{:<24} {}{:<28} {:<21} {:<6} {:<9} {:<4} {:>5} ARTIFACT",
        "TIME",
        replica(Some("REPLICA")),
        "WHO",
        "PEER",
        "ACTION",
        "OUTCOME",
        "CODE",
        "COUNT"
    );
    for r in &records {
        let when = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(r.at_ms) * 1_000_000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        let who = match &r.serial {
            Some(serial) => format!(
                "{}:{} #{}",
                r.identity,
                r.subject,
                serial.chars().take(8).collect::<String>()
            ),
            None => format!("{}:{}", r.identity, r.subject),
        };
        let artifact = match &r.digest {
            Some(digest) if !r.artifact.contains(digest.as_str()) => {
                format!("{} ({digest})", r.artifact)
            }
            _ => r.artifact.clone(),
        };
        println!(
            "{:<24} {}{:<28} {:<21} {:<6} {:<9} {:<4} {:>5} {}",
            when,
            replica(r.replica.as_deref()),
            who,
            r.peer,
            r.action,
            r.outcome,
            r.status,
            r.count,
            artifact
        );
    }
    Ok(())
}
