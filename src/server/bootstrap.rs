//! First start without a PKI: creates a CA and a server certificate in
//! `data_dir/pki` so `mirror serve` works with no config at all, and tells the
//! operator how to trust it.

use std::path::Path;

use mirror_pki::{CaOptions, Pki, Validity, layout};

use super::tls::TlsFiles;
use crate::config::Config;

/// The TLS files to serve with, and a message for the operator if they were
/// just generated.
pub fn tls_files(config: &Config) -> anyhow::Result<(TlsFiles, Option<String>)> {
    use anyhow::Context;
    if let Some(files) = TlsFiles::from_config(&config.tls) {
        return Ok((files, None));
    }
    let dir = config.data_dir.join("pki");
    // The CA key signs whatever the server trusts; the server key is checked
    // where it is loaded, like a configured one.
    crate::file_mode::check(
        &dir.join(layout::CA_KEY),
        crate::file_mode::Holds::PrivateKey,
    )
    .with_context(|| format!("the generated PKI's {}", layout::CA_KEY))?;
    let host = hostname();
    let options = CaOptions {
        common_name: format!("mirror CA ({})", host.as_deref().unwrap_or("localhost")),
        ..CaOptions::default()
    };
    let (pki, created_ca) = Pki::open_or_init(&dir, &options)
        .with_context(|| format!("creating a PKI in {}", dir.display()))?;
    let created_server =
        !pki.path(layout::SERVER_CERT).exists() || !pki.path(layout::SERVER_KEY).exists();
    if created_server {
        let mut sans = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        sans.extend(host.filter(|h| h != "localhost"));
        pki.issue_server(&sans, Validity::Days(825))
            .context("issuing the server certificate")?;
    }
    let files = TlsFiles {
        cert: pki.path(layout::SERVER_CERT),
        key: pki.path(layout::SERVER_KEY),
        client_ca: Some(pki.path(layout::CA_CERT)),
        crl: Some(pki.path(layout::CRL)).filter(|p| p.exists()),
        client_auth: config.tls.client_auth,
    };
    let message = (created_ca || created_server).then(|| trust_instructions(pki.dir(), config));
    Ok((files, message))
}

/// The machine's host name, if it is usable as a DNS SAN.
fn hostname() -> Option<String> {
    let name = hostname::get()
        .ok()?
        .into_string()
        .ok()?
        .to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    valid.then_some(name)
}

fn trust_instructions(dir: &Path, config: &Config) -> String {
    let port = config.listen.port();
    let ca = dir.join(layout::CA_CERT);
    let exe = "mirror";
    format!(
        "Created a private CA and a server certificate in {dir}/ (localhost, 127.0.0.1, this host's name).\n\
         \n\
         Trust it:\n\
         \x20 curl:    curl --cacert {ca} https://localhost:{port}/healthz\n\
         \x20 go:      export SSL_CERT_FILE={ca}\n\
         \x20 docker:  sudo mkdir -p /etc/docker/certs.d/localhost:{port} && sudo cp {ca} /etc/docker/certs.d/localhost:{port}/\n\
         \n\
         Every read needs a client certificate or a password (auth.read = \"authenticated\"). Issue a certificate:\n\
         \x20 {exe} pki issue-client alice --dir {dir} --registry localhost:{port} --out certs.d\n\
         or add users with `htpasswd -B -c htpasswd alice` and a config file with [auth] htpasswd = \"htpasswd\".",
        dir = dir.display(),
        ca = ca.display(),
    )
}
