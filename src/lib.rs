//! `mirror`: a TLS-terminating, mutually authenticated caching mirror for Go
//! modules (GOPROXY) and container images (OCI distribution), with a bundled PKI.
//!
//! Layering, top to bottom; a module uses only modules of the layers below it:
//! `cli → prefetch → instance → server → http → {goproxy, oci} → metrics → config → {store, upstream, auth, forward} → {wire, sync, escape, file_mode}`.
//! `tests/layering.rs` holds this order and fails on any `crate::` path against it.
//!
//! - `cli`: the command line, thin over the library.
//! - `prefetch`: `mirror cache prefetch`, through a private instance's own request path.
//! - `instance`: assembles a running mirror from a config.
//! - `server`: accepts connections, TLS and their limits; hands requests to `http`.
//! - `http`: identifies and authorizes the caller, dispatches to `goproxy` or
//!   `oci`, logs, counts and audits what the request touched.
//! - `goproxy`, `oci`: the two protocols; they call `store` and `upstream`.
//! - `metrics`: counters and their Prometheus page.
//! - `config`: the TOML file's shape, defaults and checks.
//! - `store`: the only code that touches `data_dir`; protocols use its typed
//!   parts (`blobs()`, `oci()`, `go()`, `uploads()`, `audit()`); below them, the
//!   index (rows; SQLite, which holds every SQL string) and the blob store (files or S3).
//! - `upstream`: outbound HTTP, redirects and single flights.
//! - `auth`: who is asking and whether they may.
//! - `forward`: `mirror forward`, the client side: a loopback relay to a mirror
//!   with a certificate; it uses none of the server, only the leaves.
//! - `wire`: the request vocabulary the protocols and the dispatcher share.
//! - `sync`: lock acquisition that ignores poisoning.
//! - `escape`: makes outside text safe to log.
//! - `file_mode`: refuses trusted files that other users could read or change.

// No unwrap or expect outside tests, except beside a comment proving the
// invariant (`unsafe_code` is forbidden workspace-wide in Cargo.toml).
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub(crate) mod auth;
pub mod cli;
pub mod config;
pub(crate) mod escape;
pub(crate) mod file_mode;
pub(crate) mod forward;
pub(crate) mod goproxy;
pub(crate) mod http;
pub mod instance;
pub(crate) mod metrics;
pub(crate) mod oci;
pub(crate) mod prefetch;
pub(crate) mod server;
pub mod store;
mod sync;
pub(crate) mod upstream;
pub(crate) mod wire;

pub use config::Config;
/// Public for tests/go_checksum.rs, which proves it against a real checksum
/// database; the rest of `goproxy` stays inside the crate.
pub use goproxy::checksum;
pub use instance::Mirror;
