//! `mirror`: a TLS-terminating, mutually authenticated caching mirror for Go
//! modules (GOPROXY) and container images (OCI distribution), with a bundled PKI.
//!
//! Layering: `server` accepts connections and hands requests to `http`, which
//! identifies and authorizes the caller and dispatches to `goproxy` or `oci`;
//! those call `store` (the only code that touches `data_dir`) and `upstream`.
//! Leaves every layer may use: `escape` makes outside text safe to log,
//! `file_mode` refuses trusted files that other users could read or change.

// No unwrap or expect outside tests, except beside a comment proving the
// invariant (`unsafe_code` is forbidden workspace-wide in Cargo.toml).
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod escape;
pub mod file_mode;
pub mod goproxy;
pub mod http;
pub mod instance;
pub mod metrics;
pub mod oci;
pub mod prefetch;
pub mod server;
pub mod store;
mod sync;
pub mod upstream;
pub mod wire;

pub use config::Config;
pub use instance::Mirror;
