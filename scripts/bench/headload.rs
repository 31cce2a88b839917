//! A keep-alive HTTP/1.1 HEAD load generator for `scripts/bench` only: wrk 4.1
//! (and h2load) wait for a body after a HEAD answer that carries a
//! Content-Length, so they cannot measure manifest HEADs. N connections on one
//! thread, TLS 1.3 AES-128-GCM (the suite every server is measured with), each
//! sending its next request when the previous answer's headers end. Prints
//! wrk's summary lines so the scripts parse both tools alike.
//!
//!     headload --ca CA.crt [-c 16] [-d 10] [-H 'Name: value']... https://HOST:PORT/PATH

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Parser)]
struct Args {
    /// CA certificate that signed the server's certificate.
    #[arg(long)]
    ca: std::path::PathBuf,
    /// Open connections.
    #[arg(short, default_value_t = 16)]
    connections: usize,
    /// Seconds to run.
    #[arg(short, default_value_t = 10)]
    duration: u64,
    /// Extra request headers.
    #[arg(short = 'H')]
    header: Vec<String>,
    url: String,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    non_2xx: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rest = args
        .url
        .strip_prefix("https://")
        .ok_or_else(|| anyhow::anyhow!("only https:// URLs"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let mut request = format!("HEAD {path} HTTP/1.1\r\nHost: {authority}\r\n");
    for header in &args.header {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&args.ca)? {
        roots.add(cert?)?;
    }
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites =
        vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256];
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let server_name = ServerName::try_from(host.to_owned())?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let tallies = runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..args.connections {
            let connector = connector.clone();
            let server_name = server_name.clone();
            let authority = authority.to_owned();
            let request = request.clone();
            tasks.push(tokio::spawn(async move {
                let tcp = TcpStream::connect(&authority).await?;
                tcp.set_nodelay(true)?;
                let mut tls = connector.connect(server_name, tcp).await?;
                let mut tally = Tally::default();
                let mut buf = Vec::with_capacity(4096);
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    tls.write_all(request.as_bytes()).await?;
                    buf.clear();
                    loop {
                        if tls.read_buf(&mut buf).await? == 0 {
                            anyhow::bail!("server closed the connection");
                        }
                        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    tally
                        .latencies_us
                        .push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    if !buf.starts_with(b"HTTP/1.1 2") {
                        tally.non_2xx += 1;
                    }
                }
                Ok::<_, anyhow::Error>(tally)
            }));
        }
        let mut all = Tally::default();
        for task in tasks {
            let tally = task.await??;
            all.latencies_us.extend(tally.latencies_us);
            all.non_2xx += tally.non_2xx;
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = tallies.latencies_us;
    latencies.sort_unstable();
    let at = |q: f64| {
        let index = ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(index).copied().unwrap_or(0)
    };
    let shown = |us: u32| {
        if us < 1000 {
            format!("{us}.00us")
        } else {
            format!("{:.2}ms", f64::from(us) / 1000.0)
        }
    };
    println!("  Latency Distribution");
    println!("     50%  {}", shown(at(0.5)));
    println!("     99%  {}", shown(at(0.99)));
    println!("  {} requests in {elapsed:.2}s", latencies.len());
    if tallies.non_2xx > 0 {
        println!("  Non-2xx or 3xx responses: {}", tallies.non_2xx);
    }
    println!("Requests/sec: {:.2}", latencies.len() as f64 / elapsed);
    Ok(())
}
