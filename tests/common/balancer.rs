//! A TCP load balancer on loopback, as an operator puts in front of the
//! replicas: each new connection goes to the next backend in turn, TLS
//! passed through untouched, no stickiness.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct RoundRobin {
    pub port: u16,
    /// Connections handed to each backend, in the order given.
    pub connections: Arc<Vec<AtomicUsize>>,
    accept: JoinHandle<()>,
}

impl RoundRobin {
    pub async fn start(backends: Vec<u16>) -> RoundRobin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections: Arc<Vec<AtomicUsize>> =
            Arc::new(backends.iter().map(|_| AtomicUsize::new(0)).collect());
        let counts = connections.clone();
        let accept = tokio::spawn(async move {
            let mut next = 0;
            while let Ok((mut client, _)) = listener.accept().await {
                let turn = next % backends.len();
                next += 1;
                counts[turn].fetch_add(1, Ordering::Relaxed);
                let backend = backends[turn];
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", backend)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        RoundRobin {
            port,
            connections,
            accept,
        }
    }

    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many backends got at least one connection.
    pub fn backends_used(&self) -> usize {
        self.connections
            .iter()
            .filter(|n| n.load(Ordering::Relaxed) > 0)
            .count()
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
