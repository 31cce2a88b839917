//! Harness for the Go module mirror's tests: a GOPROXY file tree the tests
//! generate (valid module zips, `.info`, `.mod`, `list`; this file), a real
//! HTTP/1.1 server on loopback that serves it and logs every request
//! (`upstream`), the real `go` command with fresh caches and a real checksum
//! database built with Debian's go and x/mod (`tools`).

mod tools;
mod upstream;

#[allow(
    unused_imports,
    reason = "each test binary uses a different part of the harness"
)]
pub use tools::{GoEnv, GoVersion, SumdbServer, build_x_mod_tool};
#[allow(
    unused_imports,
    reason = "each test binary uses a different part of the harness"
)]
pub use upstream::{Mode, StaticProxy};

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{PASSWORD, TestMirror, USER};

/// GET `path` from the mirror as a Go client does (Basic auth): status and body.
pub async fn get(mirror: &TestMirror, path: &str) -> (reqwest::StatusCode, Vec<u8>) {
    let response = mirror
        .anonymous()
        .get(mirror.url(path))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("request");
    let status = response.status();
    (
        status,
        response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default(),
    )
}

/// A module version to publish in a tree.
pub struct ModuleVersion {
    pub path: String,
    pub version: String,
    /// `go.mod` content; `None` for a `+incompatible` version without one
    /// (its `.mod` is then synthesized as `module PATH`).
    pub go_mod: Option<String>,
    /// Files inside the module: (relative path, content).
    pub files: Vec<(String, String)>,
    /// Listed in `@v/list` (pseudo-versions are not).
    pub listed: bool,
}

impl ModuleVersion {
    /// A module with one package `greet`-style: `func Hello() string { return MESSAGE }`.
    pub fn package(
        path: &str,
        version: &str,
        package: &str,
        message: &str,
        requires: &[(&str, &str)],
    ) -> Self {
        let mut go_mod = format!("module {path}\n\ngo 1.19\n");
        for (dep, version) in requires {
            go_mod.push_str(&format!("\nrequire {dep} {version}\n"));
        }
        ModuleVersion {
            path: path.to_owned(),
            version: version.to_owned(),
            go_mod: Some(go_mod),
            files: vec![(
                format!("{package}.go"),
                format!("package {package}\n\nfunc Hello() string {{ return {message:?} }}\n"),
            )],
            listed: !is_pseudo(version),
        }
    }
}

fn is_pseudo(version: &str) -> bool {
    version.matches('-').count() >= 2 && version.len() > 30
}

/// Go's `!`-case encoding.
pub fn escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_uppercase() {
                vec!['!', c.to_ascii_lowercase()]
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Writes a GOPROXY file tree under `root`.
pub fn write_tree(root: &Path, modules: &[ModuleVersion]) {
    for m in modules {
        let dir = root.join(escape(&m.path)).join("@v");
        std::fs::create_dir_all(&dir).expect("module dir");
        let base = dir.join(escape(&m.version));
        let info = format!(
            "{{\"Version\":\"{}\",\"Time\":\"2023-01-02T03:04:05Z\"}}",
            m.version
        );
        std::fs::write(with_ext(&base, "info"), info).expect("info");
        let go_mod = m
            .go_mod
            .clone()
            .unwrap_or_else(|| format!("module {}\n", m.path));
        std::fs::write(with_ext(&base, "mod"), &go_mod).expect("mod");
        let prefix = format!("{}@{}/", m.path, m.version);
        let file = std::fs::File::create(with_ext(&base, "zip")).expect("zip");
        let mut zip = zip::ZipWriter::new(file);
        let options = zip::write::SimpleFileOptions::default();
        if let Some(go_mod) = &m.go_mod {
            zip.start_file(format!("{prefix}go.mod"), options)
                .expect("zip entry");
            zip.write_all(go_mod.as_bytes()).expect("zip write");
        }
        for (name, content) in &m.files {
            zip.start_file(format!("{prefix}{name}"), options)
                .expect("zip entry");
            zip.write_all(content.as_bytes()).expect("zip write");
        }
        zip.finish().expect("zip finish");
        let list = dir.join("list");
        let mut listed = std::fs::read_to_string(&list).unwrap_or_default();
        if m.listed {
            listed.push_str(&m.version);
            listed.push('\n');
        }
        std::fs::write(&list, listed).expect("list");
    }
}

fn with_ext(base: &Path, ext: &str) -> PathBuf {
    PathBuf::from(format!("{}.{ext}", base.display()))
}

/// The only version of `example.com/pseudo`.
pub const PSEUDO: &str = "v0.0.0-20230102030405-abcdefabcdef";

/// The modules most tests use: several versions each, an uppercase path (and
/// an uppercase prerelease), a `/v2` module, `+incompatible`, a
/// pseudo-version, and a module that depends on another.
pub fn standard_modules() -> Vec<ModuleVersion> {
    let mut legacy_v2 = ModuleVersion::package(
        "example.com/legacy",
        "v2.0.0+incompatible",
        "legacy",
        "legacy v2",
        &[],
    );
    legacy_v2.go_mod = None;
    vec![
        ModuleVersion::package("example.com/greet", "v1.0.0", "greet", "hello 1.0", &[]),
        ModuleVersion::package("example.com/greet", "v1.1.0", "greet", "hello 1.1", &[]),
        ModuleVersion::package("example.com/greet", "v1.2.0", "greet", "hello 1.2", &[]),
        ModuleVersion::package("example.com/Upper/Mod", "v1.0.0", "mod", "upper 1.0.0", &[]),
        ModuleVersion::package("example.com/Upper/Mod", "v1.0.1", "mod", "upper 1.0.1", &[]),
        ModuleVersion::package("example.com/Upper/Mod", "v1.1.0-RC.1", "mod", "upper rc", &[]),
        ModuleVersion::package("example.com/greet/v2", "v2.0.0", "greet", "hello 2.0", &[]),
        ModuleVersion::package("example.com/greet/v2", "v2.1.0", "greet", "hello 2.1", &[]),
        ModuleVersion::package("example.com/legacy", "v1.0.0", "legacy", "legacy v1", &[]),
        legacy_v2,
        ModuleVersion::package("example.com/pseudo", PSEUDO, "pseudo", "pseudo", &[]),
        ModuleVersion {
            files: vec![(
                "deps.go".into(),
                "package deps\n\nimport \"example.com/Upper/Mod\"\n\nfunc Hello() string { return \"deps+\" + mod.Hello() }\n"
                    .into(),
            )],
            ..ModuleVersion::package(
                "example.com/deps",
                "v1.0.0",
                "deps",
                "",
                &[("example.com/Upper/Mod", "v1.0.1")],
            )
        },
    ]
}

/// Writes `@latest` for a module whose only version is a pseudo-version, as proxies do.
pub fn write_latest(root: &Path, module: &str, version: &str) {
    let info = format!("{{\"Version\":\"{version}\",\"Time\":\"2023-01-02T03:04:05Z\"}}");
    std::fs::write(root.join(escape(module)).join("@latest"), info).expect("@latest");
}
