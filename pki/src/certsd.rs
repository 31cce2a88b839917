//! The Docker `certs.d` layout for one registry and one client, and the
//! instructions that go with it.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::files::{self, Mode};
use crate::{IssuedCert, PkiError, RegistryHost, layout};

/// A written `CERTS_D/HOST:PORT/{ca.crt,client.cert,client.key}` folder.
#[derive(Debug)]
pub struct CertsDir {
    pub path: PathBuf,
    pub registry: RegistryHost,
}

impl CertsDir {
    /// Writes the folder for `registry` under `certs_d`. The key is 0600.
    pub fn write(
        certs_d: &Path,
        registry: &RegistryHost,
        ca_pem: &str,
        issued: &IssuedCert,
    ) -> Result<CertsDir, PkiError> {
        let path = certs_d.join(registry.as_str());
        files::write_atomic(
            &path.join(layout::CERTS_D_CA),
            ca_pem.as_bytes(),
            Mode::Public,
        )?;
        files::write_atomic(
            &path.join(layout::CERTS_D_KEY),
            issued.key_pem.as_bytes(),
            Mode::Secret,
        )?;
        files::write_atomic(
            &path.join(layout::CERTS_D_CERT),
            issued.cert_pem.as_bytes(),
            Mode::Public,
        )?;
        Ok(CertsDir {
            path,
            registry: registry.clone(),
        })
    }

    pub fn ca(&self) -> PathBuf {
        self.path.join(layout::CERTS_D_CA)
    }

    pub fn cert(&self) -> PathBuf {
        self.path.join(layout::CERTS_D_CERT)
    }

    pub fn key(&self) -> PathBuf {
        self.path.join(layout::CERTS_D_KEY)
    }

    /// How to use the folder from each kind of client.
    pub fn usage<'a>(&'a self, user: &'a str) -> ClientUsage<'a> {
        ClientUsage { dir: self, user }
    }
}

/// Printable instructions for Docker, containerd, curl and Go.
pub struct ClientUsage<'a> {
    dir: &'a CertsDir,
    user: &'a str,
}

impl ClientUsage<'_> {
    /// The containerd `hosts.toml` stanza that makes this server a mirror of Docker Hub.
    pub fn containerd_hosts_toml(&self) -> String {
        let reg = self.dir.registry.as_str();
        let base = format!("/etc/containerd/certs.d/{reg}");
        format!(
            "# /etc/containerd/certs.d/docker.io/hosts.toml\n\
             server = \"https://registry-1.docker.io\"\n\
             \n\
             [host.\"https://{reg}\"]\n\
             \x20 capabilities = [\"pull\", \"resolve\"]\n\
             \x20 ca = \"{base}/ca.crt\"\n\
             \x20 client = [[\"{base}/client.cert\", \"{base}/client.key\"]]\n"
        )
    }

    /// Environment for the `go` command, which cannot present a client
    /// certificate (golang/go#30119) and so authenticates with a password.
    pub fn go_env(&self) -> String {
        let reg = self.dir.registry.as_str();
        format!(
            "export GOPROXY=https://{user}:PASSWORD@{reg}\n\
             export SSL_CERT_FILE={ca}\n\
             # or keep the password out of the environment, in ~/.netrc (no port):\n\
             #   machine {host} login {user} password PASSWORD\n",
            user = self.user,
            ca = self.dir.ca().display(),
            host = self.dir.registry.host(),
        )
    }
}

impl fmt::Display for ClientUsage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reg = self.dir.registry.as_str();
        let path = self.dir.path.display();
        // curl reads `:` in --cert as the start of a passphrase; certs.d paths
        // always contain one (HOST:PORT), so it must be escaped there.
        let cert_for_curl = self.dir.cert().display().to_string().replace(':', "\\:");
        writeln!(f, "Client certificate for {} written to {path}/", self.user)?;
        writeln!(f)?;
        writeln!(
            f,
            "Docker, podman, skopeo, buildah: copy the folder into certs.d"
        )?;
        writeln!(
            f,
            "  sudo mkdir -p /etc/docker/certs.d && sudo cp -r {path} /etc/docker/certs.d/"
        )?;
        writeln!(
            f,
            "  docker login {reg}        # podman/skopeo also read /etc/containers/certs.d/{reg}/"
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "containerd (copy the folder to /etc/containerd/certs.d/{reg}/ first):"
        )?;
        for line in self.containerd_hosts_toml().lines() {
            writeln!(f, "  {line}")?;
        }
        writeln!(f)?;
        writeln!(f, "curl:")?;
        writeln!(
            f,
            "  curl --cacert '{ca}' --cert '{cert_for_curl}' --key '{key}' https://{reg}/v2/",
            ca = self.dir.ca().display(),
            key = self.dir.key().display(),
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "Go (a password from the server's htpasswd file; go cannot send client certificates):"
        )?;
        for line in self.go_env().lines() {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}
