//! Validated names that end up in certificates and folder names.

use std::fmt;
use std::str::FromStr;

use crate::PkiError;

/// A `HOST:PORT` (or bare `HOST`) as Docker spells the folder under `certs.d/`.
/// Validated so it can never climb out of the folder it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryHost(String);

impl RegistryHost {
    /// Docker Hub, as the mirror and every client name it.
    pub fn docker_hub() -> RegistryHost {
        RegistryHost("docker.io".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host without the port, as `.netrc` and Go's `machine` lines want it.
    pub fn host(&self) -> &str {
        if let Some(rest) = self.0.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        self.0.rsplit_once(':').map_or(&self.0, |(host, _)| host)
    }
}

impl FromStr for RegistryHost {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| PkiError::BadInput {
            what: "registry",
            value: s.to_owned(),
            reason,
        };
        if s.is_empty() || s.len() > 260 {
            return Err(bad("must be HOST or HOST:PORT"));
        }
        let ok =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_');
        if !s.chars().all(ok) || s.starts_with('.') || s.contains("..") {
            return Err(bad(
                "must be HOST or HOST:PORT (letters, digits, '.', '-', ':', '[', ']')",
            ));
        }
        let port = if let Some(rest) = s.strip_prefix('[') {
            let (addr, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            if addr.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("bracketed host must be an IPv6 address"));
            }
            match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("expected ':' after ']'"))?,
                ),
            }
        } else {
            match s.split_once(':') {
                None => None,
                Some((host, port)) if !host.is_empty() && !port.contains(':') => Some(port),
                Some(_) => return Err(bad("must be HOST or HOST:PORT")),
            }
        };
        if port.is_some_and(|p| p.parse::<u16>().is_err()) {
            return Err(bad("port must be a number from 0 to 65535"));
        }
        Ok(RegistryHost(s.to_owned()))
    }
}

impl fmt::Display for RegistryHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A person's or service's name, used as the certificate's CN and as the
/// identity the server logs and audits.
pub(crate) fn check_common_name(name: &str) -> Result<(), PkiError> {
    let bad = |reason| PkiError::BadInput {
        what: "name",
        value: name.to_owned(),
        reason,
    };
    if name.is_empty() || name.len() > 64 {
        return Err(bad("must be 1 to 64 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
    {
        return Err(bad(
            "may contain only letters, digits, '.', '-', '_' and '@'",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts_that_docker_uses_are_accepted() {
        for ok in [
            "mirror:5000",
            "localhost",
            "127.0.0.1:443",
            "[::1]:5000",
            "a-b.example.com:5000",
        ] {
            assert!(ok.parse::<RegistryHost>().is_ok(), "{ok}");
        }
        assert_eq!(
            "mirror:5000".parse::<RegistryHost>().unwrap().host(),
            "mirror"
        );
        assert_eq!("[::1]:5000".parse::<RegistryHost>().unwrap().host(), "::1");
    }

    #[test]
    fn registry_hosts_that_escape_the_folder_are_rejected() {
        for bad in ["", "../etc", "a/b", "host:port", "..", "a b", "x:99999"] {
            assert!(bad.parse::<RegistryHost>().is_err(), "{bad}");
        }
    }

    #[test]
    fn common_names_are_restricted_to_safe_characters() {
        assert!(check_common_name("alice").is_ok());
        assert!(check_common_name("ci-bot@build.example").is_ok());
        assert!(check_common_name("al/ice").is_err());
        assert!(check_common_name("").is_err());
        assert!(check_common_name("a\nb").is_err());
    }
}
