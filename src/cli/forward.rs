//! `mirror forward`: runs the local forwarder until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use crate::config::Config;
use crate::forward::{Forwarder, Options, notify_ready};

#[derive(clap::Args)]
pub struct ForwardArgs {
    /// Where local clients connect (plain HTTP), e.g. GOPROXY=http://127.0.0.1:5080.
    #[arg(long, default_value = "127.0.0.1:5080")]
    listen: SocketAddr,
    /// The mirror, https://HOST:PORT.
    #[arg(long)]
    to: String,
    /// The certs.d folder of that mirror: ca.crt, client.cert, client.key.
    #[arg(long)]
    cert_dir: PathBuf,
    /// Listen on a non-loopback address too: anyone who can reach it acts with the
    /// certificate's identity.
    #[arg(long)]
    allow_non_loopback: bool,
}

pub fn run(args: ForwardArgs) -> anyhow::Result<()> {
    super::init_logging(&Config::default())?;
    let options = Options {
        listen: args.listen,
        to: args.to,
        cert_dir: args.cert_dir,
        allow_non_loopback: args.allow_non_loopback,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mirror-forward")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let stop = super::termination()?;
        let forwarder = Forwarder::bind(&options).await?;
        let addr = forwarder.local_addr().context("the listener's address")?;
        announce(&forwarder, addr, &options);
        forwarder.run(stop).await;
        Ok(())
    })
}

fn announce(forwarder: &Forwarder, addr: SocketAddr, options: &Options) {
    let identity = forwarder.identity();
    if identity.expired {
        tracing::warn!(
            certificate = %identity,
            "the client certificate is not valid now: the mirror will refuse it"
        );
    }
    if options.allow_non_loopback && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "listening off loopback: anyone who can reach this address acts with the \
             certificate's identity"
        );
    }
    let status = format!(
        "forwarding http://{addr} to {} as {identity}",
        forwarder.origin()
    );
    eprintln!("mirror forward: {status}\nexport GOPROXY=http://{addr}");
    notify_ready(&status);
}
