//! `[cluster]`: this process is one replica of several sharing one
//! PostgreSQL index and one bucket. Absent, the process is alone.

use std::net::SocketAddr;

use serde::Deserialize;

use super::{IndexConfig, StorageBackend, StorageConfig};

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Unique per replica: it owns fill leases and is named in audit rows and metrics.
    pub replica: String,
    /// The internal endpoint other replicas stream fills in progress from.
    pub peer_listen: SocketAddr,
    /// How the other replicas reach `peer_listen` (https; the server
    /// certificate must name its host).
    pub peer_url: String,
}

impl ClusterConfig {
    pub(super) fn validate(
        &self,
        index: &IndexConfig,
        storage: &StorageConfig,
    ) -> Result<(), String> {
        if !index.is_shared() {
            return Err(
                "[cluster] needs index.url (a PostgreSQL index): replicas share \
                        their rows and leases there"
                    .to_owned(),
            );
        }
        if storage.backend != StorageBackend::S3 {
            return Err(
                "[cluster] needs storage.backend = \"s3\": replicas share their \
                        bytes through the bucket, and one replica's files are invisible \
                        to the others"
                    .to_owned(),
            );
        }
        let name_ok = !self.replica.is_empty()
            && self.replica.len() <= 64
            && self
                .replica
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !name_ok {
            return Err(
                "cluster.replica must be 1-64 characters of letters, digits, '.', '_' or '-'"
                    .to_owned(),
            );
        }
        match reqwest::Url::parse(&self.peer_url) {
            Ok(url) if url.scheme() == "https" && url.host().is_some() => Ok(()),
            _ => Err("cluster.peer_url must be an https:// URL with a host".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("."), "mirror.toml").map_err(|e| e.to_string())
    }

    const PG: &str = "[index]\nurl = \"postgres://mirror@127.0.0.1:55432/mirror\"\n";
    const S3: &str = "[storage]\nbackend = \"s3\"\nendpoint = \"http://127.0.0.1:3900\"\n\
                      bucket = \"mirror\"\n";
    const CLUSTER: &str = "[cluster]\nreplica = \"m1\"\npeer_listen = \"127.0.0.1:5441\"\n\
                           peer_url = \"https://127.0.0.1:5441\"\n";

    #[test]
    fn a_cluster_on_postgres_and_s3_is_accepted() {
        let config = parse(&format!("{PG}{S3}{CLUSTER}")).unwrap();
        let cluster = config.cluster.unwrap();
        assert_eq!(cluster.replica, "m1");
        assert_eq!(cluster.peer_listen.port(), 5441);
    }

    #[test]
    fn a_cluster_without_postgres_or_without_s3_is_refused_naming_the_keys() {
        let err = parse(CLUSTER).unwrap_err();
        assert!(
            err.contains("[cluster]") && err.contains("index.url"),
            "{err}"
        );
        let err = parse(&format!("{PG}{CLUSTER}")).unwrap_err();
        assert!(
            err.contains("[cluster]") && err.contains("storage.backend"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_replica_name_or_peer_url_is_refused_naming_the_key() {
        let bad_name = CLUSTER.replace("\"m1\"", "\"m 1\\n\"");
        let err = parse(&format!("{PG}{S3}{bad_name}")).unwrap_err();
        assert!(err.contains("cluster.replica"), "{err}");
        let plain = CLUSTER.replace("https://", "http://");
        let err = parse(&format!("{PG}{S3}{plain}")).unwrap_err();
        assert!(err.contains("cluster.peer_url"), "{err}");
        let err = parse(&format!("{PG}{S3}[cluster]\nreplica = \"m1\"\n")).unwrap_err();
        assert!(err.contains("peer_listen"), "{err}");
    }
}
