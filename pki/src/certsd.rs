//! The Docker `certs.d` layout for one registry and one client, and the
//! instructions that go with it: shell blocks a user can paste, one per kind
//! of client (and `mirror forward` for go), which the end-to-end tests parse
//! and run (tests/onboarding.rs).

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

    /// How to use the folder from each kind of client, with Docker Hub as the
    /// one upstream the mirror stands in for.
    pub fn usage<'a>(&'a self, user: &'a str) -> ClientUsage<'a> {
        ClientUsage {
            dir: self,
            user,
            upstreams: vec![RegistryHost::docker_hub()],
        }
    }
}

/// The name the mirror and every client give Docker Hub.
const DOCKER_HUB: &str = "docker.io";

/// Where `mirror forward` listens in the printed steps, and where they expect
/// the binary: the user's machine has no mirror installed otherwise.
const FORWARD_LISTEN: &str = "127.0.0.1:5080";
const MIRROR_BIN: &str = "/usr/local/bin/mirror";

/// Printable instructions for Docker, podman, containerd, curl and Go (with a
/// password, or with the certificate through `mirror forward`).
pub struct ClientUsage<'a> {
    dir: &'a CertsDir,
    user: &'a str,
    /// Upstream names of the mirror (`docker.io`, `ghcr.io`, …) that containerd
    /// and podman are told to reach through it.
    upstreams: Vec<RegistryHost>,
}

impl ClientUsage<'_> {
    /// Replaces the upstreams the containerd and podman blocks mirror.
    pub fn with_upstreams(mut self, upstreams: Vec<RegistryHost>) -> Self {
        if !upstreams.is_empty() {
            self.upstreams = upstreams;
        }
        self
    }

    /// The containerd `hosts.toml` that makes this server a mirror of Docker Hub.
    pub fn containerd_hosts_toml(&self) -> String {
        self.containerd_hosts_toml_for(&RegistryHost::docker_hub())
    }

    /// The containerd `hosts.toml` for the registry `upstream`: containerd sends
    /// `?ns=UPSTREAM` to the mirror, which names the upstream by it.
    pub fn containerd_hosts_toml_for(&self, upstream: &RegistryHost) -> String {
        let reg = self.dir.registry.as_str();
        let base = format!("/etc/containerd/certs.d/{reg}");
        let server = if upstream.as_str() == DOCKER_HUB {
            "https://registry-1.docker.io".to_owned()
        } else {
            format!("https://{}", upstream.as_str())
        };
        // No blank line: the printed blocks are separated by blank lines.
        format!(
            "server = \"{server}\"\n\
             [host.\"https://{reg}\"]\n\
             \x20 capabilities = [\"pull\", \"resolve\"]\n\
             \x20 ca = \"{base}/ca.crt\"\n\
             \x20 client = [[\"{base}/client.cert\", \"{base}/client.key\"]]\n"
        )
    }

    /// The registries.conf (v2) stanzas that send `UPSTREAM/…` names through
    /// the mirror; its first path component names the upstream.
    pub fn podman_registries_conf(&self) -> String {
        let reg = self.dir.registry.as_str();
        self.upstreams
            .iter()
            .map(|upstream| {
                let name = upstream.as_str();
                format!(
                    "[[registry]]\n\
                     prefix = \"{name}\"\n\
                     location = \"{name}\"\n\
                     [[registry.mirror]]\n\
                     location = \"{reg}/{name}\"\n"
                )
            })
            .collect()
    }

    /// Environment and `.netrc` for the `go` command, which cannot present a
    /// client certificate (golang/go#30119) and so authenticates with a password.
    pub fn go_env(&self) -> String {
        let reg = self.dir.registry.as_str();
        format!(
            "export SSL_CERT_FILE={ca}\n\
             export GOPROXY=https://{reg}\n\
             cat >> ~/.netrc <<'EOF'\n\
             machine {reg} login {user} password PASSWORD\n\
             machine {host} login {user} password PASSWORD\n\
             EOF\n\
             chmod 600 ~/.netrc\n\
             go list -m golang.org/x/mod@latest\n\
             # or, without .netrc: export GOPROXY=https://{user}:PASSWORD@{reg}\n",
            ca = absolute_for_shell(&self.dir.ca()),
            user = self.user,
            host = self.dir.registry.host(),
        )
    }

    /// The systemd user unit that runs `mirror forward` with this folder,
    /// copied to `~/.config/mirror/certs.d/` (`%h` is the user's home). No
    /// blank line: the printed blocks are separated by blank lines.
    pub fn forward_unit(&self) -> String {
        let reg = self.dir.registry.as_str();
        format!(
            "[Unit]\n\
             Description=mirror forward: http://{FORWARD_LISTEN} to https://{reg} as {user}\n\
             [Service]\n\
             Type=notify\n\
             ExecStart={MIRROR_BIN} forward --listen {FORWARD_LISTEN} --to https://{reg} \
             --cert-dir %h/.config/mirror/certs.d/{reg}\n\
             Restart=on-failure\n\
             [Install]\n\
             WantedBy=default.target\n",
            user = self.user,
        )
    }

    fn docker(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reg = self.dir.registry.as_str();
        let folder = quote(&self.dir.path);
        writeln!(
            f,
            "# docker: dockerd presents /etc/docker/certs.d/{reg}/ to this mirror, named in a pull\n\
             # or as a registry-mirror in /etc/docker/daemon.json (\"registry-mirrors\": [\"https://{reg}\"]),\n\
             # but never at a 127.0.0.0/8 address (README: Docker registry-mirrors).\n\
             sudo mkdir -p /etc/docker/certs.d\n\
             sudo cp -r {folder} /etc/docker/certs.d/\n\
             docker pull {reg}/library/alpine:latest\n"
        )
    }

    fn podman(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reg = self.dir.registry.as_str();
        let folder = quote(&self.dir.path);
        let first = self.upstreams.first().map_or(DOCKER_HUB, |u| u.as_str());
        writeln!(
            f,
            "# podman, skopeo, buildah: containers/image reads /etc/containers/certs.d/{reg}/,\n\
             # and the registries.conf mirror sends {first}/... names through this mirror.\n\
             sudo mkdir -p /etc/containers/certs.d\n\
             sudo cp -r {folder} /etc/containers/certs.d/\n\
             sudo tee -a /etc/containers/registries.conf <<'EOF'\n\
             {conf}EOF\n\
             podman pull {first}/library/alpine:latest\n",
            conf = self.podman_registries_conf(),
        )
    }

    fn containerd(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let folder = quote(&self.dir.path);
        writeln!(
            f,
            "# containerd: a hosts.toml per upstream. ctr reads them with --hosts-dir; the CRI plugin\n\
             # (kubelet) with this in /etc/containerd/config.toml (version 2), then restart containerd:\n\
             #   [plugins.\"io.containerd.grpc.v1.cri\".registry]\n\
             #     config_path = \"/etc/containerd/certs.d\"\n\
             sudo mkdir -p /etc/containerd/certs.d\n\
             sudo cp -r {folder} /etc/containerd/certs.d/"
        )?;
        for upstream in &self.upstreams {
            let name = upstream.as_str();
            writeln!(
                f,
                "sudo mkdir -p /etc/containerd/certs.d/{name}\n\
                 sudo tee /etc/containerd/certs.d/{name}/hosts.toml <<'EOF'\n\
                 {toml}EOF",
                toml = self.containerd_hosts_toml_for(upstream),
            )?;
        }
        let first = self.upstreams.first().map_or(DOCKER_HUB, |u| u.as_str());
        writeln!(
            f,
            "sudo ctr image pull --hosts-dir /etc/containerd/certs.d {first}/library/alpine:latest\n"
        )
    }

    fn curl(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // curl reads `:` in --cert as the start of a passphrase; certs.d paths
        // always contain one (HOST:PORT), so it must be escaped there.
        let cert_for_curl = self.dir.cert().display().to_string().replace(':', "\\:");
        writeln!(
            f,
            "# curl (it reads a ':' in --cert as a passphrase separator, hence the backslash)\n\
             curl --cacert {ca} --cert {cert} --key {key} https://{reg}/v2/\n",
            ca = quote(&self.dir.ca()),
            cert = quote(Path::new(&cert_for_curl)),
            key = quote(&self.dir.key()),
            reg = self.dir.registry.as_str(),
        )
    }

    fn go(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "# go cannot send client certificates (golang/go#30119): here it uses a password from the\n\
             # mirror's htpasswd file (the forward block below gives it the certificate instead).\n\
             # Go 1.23 matches a .netrc machine with its port, Go 1.19 without it: keep both lines."
        )?;
        write!(f, "{}", self.go_env())
    }

    fn forward(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "\n# forward: go with this certificate instead of a password, also where the mirror requires\n\
             # one (client_auth = \"required\"): `mirror forward` relays plain HTTP on {FORWARD_LISTEN},\n\
             # which only this user may use, to the mirror with it. A systemd user unit keeps it running;\n\
             # it needs the mirror binary at {MIRROR_BIN}.\n\
             mkdir -p ~/.config/mirror/certs.d ~/.config/systemd/user\n\
             cp -r {folder} ~/.config/mirror/certs.d/\n\
             cat > ~/.config/systemd/user/mirror-forward.service <<'EOF'\n\
             {unit}EOF\n\
             systemctl --user daemon-reload\n\
             systemctl --user enable --now mirror-forward.service\n\
             export GOPROXY=http://{FORWARD_LISTEN}\n\
             go list -m golang.org/x/mod@latest",
            folder = quote(&self.dir.path),
            unit = self.forward_unit(),
        )
    }
}

impl fmt::Display for ClientUsage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Client certificate for {} written to {}/",
            self.user,
            self.dir.path.display()
        )?;
        writeln!(
            f,
            "Each block below is shell to run on the user's machine, in the folder that holds\n\
             {}. The certificate is the login: no `docker login` or `podman login` is needed.\n",
            self.dir.path.display()
        )?;
        self.docker(f)?;
        self.podman(f)?;
        self.containerd(f)?;
        self.curl(f)?;
        self.go(f)?;
        self.forward(f)
    }
}

/// A path quoted for a POSIX shell.
fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// `path` for a shell: as it is when absolute, else under `$PWD` (the blocks
/// run in the folder that holds certs.d, like their `cp` commands).
fn absolute_for_shell(path: &Path) -> String {
    if path.is_absolute() {
        quote(path)
    } else {
        format!("\"$PWD\"/{}", quote(path))
    }
}
