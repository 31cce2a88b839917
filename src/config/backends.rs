//! `[index]` and `[storage]`: where the store keeps its rows and its bytes.
//! Absent, both are the embedded default (SQLite and files in `data_dir`).
//! The credentials may come from the AWS_* variables instead of the file;
//! the secret and the index URL (which may hold a password) are `Secret`s,
//! never printed.

use serde::Deserialize;

use super::Secret;
use crate::store::{IndexChoice, S3Settings, Storage};

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// A PostgreSQL URL; absent: SQLite in `data_dir`.
    pub url: Option<Secret>,
}

impl IndexConfig {
    pub fn choice(&self) -> IndexChoice {
        match &self.url {
            Some(url) => IndexChoice::Postgres(url.expose().to_owned()),
            None => IndexChoice::Sqlite,
        }
    }

    /// Whether other processes may share this index (and see its rows).
    pub fn is_shared(&self) -> bool {
        self.url.is_some()
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        match &self.url {
            Some(url)
                if !url.expose().starts_with("postgres://")
                    && !url.expose().starts_with("postgresql://") =>
            {
                Err("index.url must be a postgres:// or postgresql:// URL".to_owned())
            }
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// Files under `data_dir/blobs`.
    #[default]
    Fs,
    /// An S3-compatible bucket.
    S3,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default)]
    pub backend: StorageBackend,
    pub endpoint: Option<String>,
    pub bucket: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub path_style: bool,
    /// Else `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// Else `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<Secret>,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::Fs,
            endpoint: None,
            bucket: None,
            region: default_region(),
            path_style: false,
            access_key_id: None,
            secret_access_key: None,
        }
    }
}

impl StorageConfig {
    /// The backend's settings, credentials completed from `env` (the process
    /// environment, or a test's).
    pub fn storage(&self, env: impl Fn(&str) -> Option<String>) -> Result<Storage, String> {
        if self.backend == StorageBackend::Fs {
            return Ok(Storage::Files);
        }
        let access_key_id = self
            .access_key_id
            .clone()
            .or_else(|| env("AWS_ACCESS_KEY_ID"))
            .ok_or("storage.backend = \"s3\" needs storage.access_key_id or AWS_ACCESS_KEY_ID")?;
        let secret_access_key = self
            .secret_access_key
            .as_ref()
            .map(|secret| secret.expose().to_owned())
            .or_else(|| env("AWS_SECRET_ACCESS_KEY"))
            .ok_or(
                "storage.backend = \"s3\" needs storage.secret_access_key or AWS_SECRET_ACCESS_KEY",
            )?;
        Ok(Storage::S3(S3Settings {
            endpoint: self.endpoint.clone().unwrap_or_default(),
            bucket: self.bucket.clone().unwrap_or_default(),
            region: self.region.clone(),
            path_style: self.path_style,
            access_key_id,
            secret_access_key,
        }))
    }

    pub(super) fn validate(&self, index: &IndexConfig) -> Result<(), String> {
        match self.backend {
            StorageBackend::S3 => {
                for (key, value) in [("endpoint", &self.endpoint), ("bucket", &self.bucket)] {
                    if value.as_deref().is_none_or(str::is_empty) {
                        return Err(format!(
                            "storage.{key} is required when storage.backend = \"s3\""
                        ));
                    }
                }
                if !index.is_shared() {
                    // Every node's sweep would take the others' objects for
                    // orphans: rows in one node's SQLite are invisible to the rest.
                    return Err("storage.backend = \"s3\" needs index.url (a PostgreSQL index): \
                                a bucket holds what the index names, and a SQLite index is one node's"
                        .to_owned());
                }
                Ok(())
            }
            StorageBackend::Fs => {
                let set = [
                    ("endpoint", self.endpoint.is_some()),
                    ("bucket", self.bucket.is_some()),
                    ("access_key_id", self.access_key_id.is_some()),
                    ("secret_access_key", self.secret_access_key.is_some()),
                ];
                match set.into_iter().find(|(_, set)| *set) {
                    Some((key, _)) => Err(format!(
                        "storage.{key} is set but storage.backend is \"fs\" (set backend = \"s3\")"
                    )),
                    None => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;
    use crate::store::{IndexChoice, Storage};

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("."), "mirror.toml").map_err(|e| e.to_string())
    }

    const S3: &str = "[storage]\nbackend = \"s3\"\nendpoint = \"http://127.0.0.1:3900\"\n\
                      bucket = \"mirror\"\nregion = \"garage\"\npath_style = true\n";
    const PG: &str = "[index]\nurl = \"postgres://mirror:pw@127.0.0.1:55432/mirror\"\n";

    #[test]
    fn the_default_is_sqlite_and_files() {
        let config = parse("").unwrap();
        assert!(matches!(config.index.choice(), IndexChoice::Sqlite));
        assert!(matches!(
            config.storage.storage(|_| None),
            Ok(Storage::Files)
        ));
    }

    #[test]
    fn s3_storage_with_a_sqlite_index_is_refused_naming_both_keys() {
        let err = parse(S3).unwrap_err();
        assert!(
            err.contains("storage.backend") && err.contains("index.url"),
            "{err}"
        );
    }

    #[test]
    fn s3_storage_takes_credentials_from_the_file_or_the_aws_variables() {
        let config = parse(&format!("{PG}{S3}")).unwrap();
        let missing = config.storage.storage(|_| None).unwrap_err();
        assert!(missing.contains("AWS_ACCESS_KEY_ID"), "{missing}");
        let env = |name: &str| Some(format!("{name}-value"));
        let Ok(Storage::S3(settings)) = config.storage.storage(env) else {
            panic!("s3 settings");
        };
        assert_eq!(settings.access_key_id, "AWS_ACCESS_KEY_ID-value");
        assert_eq!(settings.secret_access_key, "AWS_SECRET_ACCESS_KEY-value");
        assert_eq!(
            (settings.region.as_str(), settings.path_style),
            ("garage", true)
        );
        let keyed = format!("{PG}{S3}access_key_id = \"GK1\"\nsecret_access_key = \"s3cr3t\"\n");
        let config = parse(&keyed).unwrap();
        let Ok(Storage::S3(settings)) = config.storage.storage(env) else {
            panic!("s3 settings");
        };
        assert_eq!(settings.access_key_id, "GK1");
        assert_eq!(settings.secret_access_key, "s3cr3t");
    }

    #[test]
    fn the_secret_and_the_index_url_are_never_printed() {
        let keyed = format!("{PG}{S3}secret_access_key = \"s3cr3t\"\n");
        let config = parse(&keyed).unwrap();
        let printed = format!("{config:?} {:?}", config.index.choice());
        assert!(
            !printed.contains("s3cr3t") && !printed.contains("pw@"),
            "{printed}"
        );
    }

    #[test]
    fn s3_needs_an_endpoint_and_a_bucket_and_fs_refuses_s3_keys() {
        let no_bucket = format!("{PG}[storage]\nbackend = \"s3\"\nendpoint = \"http://e\"\n");
        let err = parse(&no_bucket).unwrap_err();
        assert!(err.contains("storage.bucket"), "{err}");
        let err = parse("[storage]\nbucket = \"mirror\"\n").unwrap_err();
        assert!(
            err.contains("storage.bucket") && err.contains("\"fs\""),
            "{err}"
        );
        let err = parse("[index]\nurl = \"mysql://x\"\n").unwrap_err();
        assert!(err.contains("index.url"), "{err}");
        let err = parse("[storage]\nbackend = \"nfs\"\n").unwrap_err();
        assert!(err.contains("backend"), "{err}");
    }
}
