//! Certificate work for `mirror`: the CA, server and client issuance, revocation
//! lists, Docker `certs.d` folders and inspection.
//!
//! This crate does no networking and no async: everything here is pure certificate
//! and file work, so it is testable in microseconds and usable from the CLI and the
//! server's tests alike. Keys are ECDSA P-256; leaves are signed directly by the CA
//! because Docker trips on intermediates (moby#21148).

// No unwrap or expect outside tests, except beside a comment proving the
// invariant (`unsafe_code` is forbidden workspace-wide in Cargo.toml).
#![warn(clippy::unwrap_used, clippy::expect_used)]

mod ca;
mod certsd;
mod error;
mod files;
mod inspect;
mod issue;
mod ledger;
mod names;

pub use ca::{CaOptions, Pki};
pub use certsd::{CertsDir, ClientUsage};
pub use error::PkiError;
pub use inspect::{
    CertInfo, CrlInfo, RevokedEntry, holds_crl, inspect_crl_file, inspect_crl_pem, inspect_file,
    inspect_pem,
};
pub use issue::{IssuedCert, Validity};
pub use ledger::{CertKind, Record, serial_hex};
pub use names::RegistryHost;

/// File names inside a PKI directory. The server's config points at these.
pub mod layout {
    pub const CA_CERT: &str = "ca.crt";
    pub const CA_KEY: &str = "ca.key";
    pub const CRL: &str = "ca.crl";
    pub const SERVER_CERT: &str = "server.crt";
    pub const SERVER_KEY: &str = "server.key";
    pub const LEDGER: &str = "issued.json";
    /// Docker and containers/image read exactly these names (moby#33432): every
    /// `*.crt` is a CA, and a client pair is `NAME.cert` + `NAME.key`.
    pub const CERTS_D_CA: &str = "ca.crt";
    pub const CERTS_D_CERT: &str = "client.cert";
    pub const CERTS_D_KEY: &str = "client.key";
}
