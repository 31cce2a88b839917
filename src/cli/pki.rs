//! `mirror pki …`: thin calls into the mirror-pki crate, and what they print.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use mirror_pki::{CaOptions, CertsDir, Pki, RegistryHost, Validity};

#[derive(Subcommand)]
pub enum PkiCommand {
    /// Create a CA: DIR/ca.crt and DIR/ca.key (0600).
    Init {
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        #[arg(long, default_value = "mirror CA")]
        cn: String,
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Replace an existing CA (every certificate it issued stops working).
        #[arg(long)]
        force: bool,
    },
    /// Issue the server certificate: DIR/server.crt and DIR/server.key.
    IssueServer {
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// DNS names and IP addresses clients use to reach the server.
        #[arg(long = "san", required = true, num_args = 1..)]
        sans: Vec<String>,
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
    /// Issue a client certificate into CERTS_D/HOST:PORT/{ca.crt,client.cert,client.key}.
    IssueClient {
        /// The user's name; becomes the certificate's CN and their identity in logs and audit.
        name: String,
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// The mirror as clients address it, e.g. mirror.example.com:5000.
        #[arg(long)]
        registry: String,
        /// The certs.d folder to write into.
        #[arg(long, default_value = "certs.d")]
        out: PathBuf,
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Also write the containerd hosts.toml of the first upstream to this file.
        #[arg(long)]
        hosts_toml: Option<PathBuf>,
        /// An upstream name of the mirror (as in `[[registry.upstream]] name`) that
        /// containerd and podman are told to reach through it; repeatable.
        #[arg(long = "upstream", default_value = "docker.io")]
        upstreams: Vec<String>,
    },
    /// List issued certificates.
    List {
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
    },
    /// Revoke every certificate of a name, or one serial, and rewrite DIR/ca.crl.
    Revoke {
        /// A name given to issue-client, or a serial from `list`.
        target: String,
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
    },
    /// Show what a certificate file, or a revocation list (ca.crl), says.
    Inspect { file: PathBuf },
}

pub fn run(command: PkiCommand) -> anyhow::Result<()> {
    match command {
        PkiCommand::Init {
            dir,
            cn,
            days,
            force,
        } => init(&dir, cn, days, force),
        PkiCommand::IssueServer { dir, sans, days } => issue_server(&dir, &sans, days),
        PkiCommand::IssueClient {
            name,
            dir,
            registry,
            out,
            days,
            hosts_toml,
            upstreams,
        } => issue_client(
            &name,
            &dir,
            &registry,
            &out,
            days,
            hosts_toml.as_deref(),
            &upstreams,
        ),
        PkiCommand::List { dir } => {
            let pki = Pki::open(&dir)?;
            print!("{}", list_table(&pki.list()?));
            Ok(())
        }
        PkiCommand::Revoke { target, dir } => revoke(&dir, &target),
        PkiCommand::Inspect { file } => inspect(&file),
    }
}

fn init(dir: &Path, cn: String, days: u32, force: bool) -> anyhow::Result<()> {
    let options = CaOptions {
        common_name: cn,
        days,
        force,
    };
    let pki = Pki::init(dir, &options)?;
    println!(
        "CA created: {}",
        pki.path(mirror_pki::layout::CA_CERT).display()
    );
    println!(
        "key (keep it secret): {}",
        pki.path(mirror_pki::layout::CA_KEY).display()
    );
    println!(
        "next: mirror pki issue-server --dir {} --san mirror.example.com",
        dir.display()
    );
    Ok(())
}

fn issue_server(dir: &Path, sans: &[String], days: u32) -> anyhow::Result<()> {
    let pki = Pki::open(dir)?;
    let issued = pki.issue_server(sans, Validity::Days(days))?;
    println!(
        "server certificate for {} (serial {}): {}",
        sans.join(", "),
        issued.serial,
        pki.path(mirror_pki::layout::SERVER_CERT).display()
    );
    Ok(())
}

fn issue_client(
    name: &str,
    dir: &Path,
    registry: &str,
    out: &Path,
    days: u32,
    hosts_toml: Option<&Path>,
    upstreams: &[String],
) -> anyhow::Result<()> {
    let registry: RegistryHost = registry.parse()?;
    let upstreams = upstreams
        .iter()
        .map(|u| u.parse())
        .collect::<Result<Vec<RegistryHost>, _>>()?;
    let pki = Pki::open(dir)?;
    let issued = pki.issue_client(name, Validity::Days(days))?;
    let written = CertsDir::write(out, &registry, pki.ca_cert_pem(), &issued)?;
    let usage = written.usage(name).with_upstreams(upstreams.clone());
    println!("serial {}", issued.serial);
    print!("{usage}");
    if let Some(path) = hosts_toml {
        let first = upstreams
            .first()
            .cloned()
            .unwrap_or_else(RegistryHost::docker_hub);
        write_text(path, &usage.containerd_hosts_toml_for(&first))?;
        println!("\ncontainerd hosts.toml written to {}", path.display());
    }
    Ok(())
}

fn revoke(dir: &Path, target: &str) -> anyhow::Result<()> {
    let pki = Pki::open(dir)?;
    for record in pki.revoke(target)? {
        println!("revoked {} (serial {})", record.name, record.serial);
    }
    println!(
        "CRL written to {}; a running mirror picks it up on SIGHUP or within its reload poll",
        pki.path(mirror_pki::layout::CRL).display()
    );
    Ok(())
}

/// A certificate file (every certificate in it) or a revocation list.
fn inspect(file: &Path) -> anyhow::Result<()> {
    let pem = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    if mirror_pki::holds_crl(&pem) {
        println!("{}", mirror_pki::inspect_crl_file(file)?);
        return Ok(());
    }
    let infos = mirror_pki::inspect_file(file)?;
    for (i, info) in infos.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("{info}");
    }
    Ok(())
}

fn write_text(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// `pki list` as columns as wide as their widest entry, so long names and
/// serials do not push a row out of line.
fn list_table(records: &[mirror_pki::Record]) -> String {
    use std::fmt::Write;
    let rfc3339 = |at: time::OffsetDateTime| {
        at.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let rows: Vec<[String; 5]> = records
        .iter()
        .map(|record| {
            [
                record.name.clone(),
                record.serial.clone(),
                record.kind.to_string(),
                rfc3339(record.not_after),
                record.revoked_at.map_or_else(|| "-".to_owned(), rfc3339),
            ]
        })
        .collect();
    let header = ["NAME", "SERIAL", "KIND", "NOT AFTER", "REVOKED"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
