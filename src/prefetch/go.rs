//! What to prefetch for Go: module versions named by a `go.sum` or a `go.mod`,
//! as the GOPROXY paths the `go` command would ask for.

use crate::goproxy::module::escape;

/// One module version and whether its zip is wanted (a `go.sum` line that
/// names only `/go.mod` means the build needs the `.mod` alone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleVersion {
    pub module: String,
    pub version: String,
    pub zip: bool,
}

impl ModuleVersion {
    /// `/{module}/@v/{version}.{kind}` for each file to fetch.
    pub fn paths(&self) -> Vec<String> {
        let base = format!("/{}/@v/{}", escape(&self.module), escape(&self.version));
        let mut paths = vec![format!("{base}.info"), format!("{base}.mod")];
        if self.zip {
            paths.push(format!("{base}.zip"));
        }
        paths
    }
}

fn merge(list: &mut Vec<ModuleVersion>, module: &str, version: &str, zip: bool) {
    match list
        .iter_mut()
        .find(|m| m.module == module && m.version == version)
    {
        Some(existing) => existing.zip |= zip,
        None => list.push(ModuleVersion {
            module: module.to_owned(),
            version: version.to_owned(),
            zip,
        }),
    }
}

/// A line of a go.sum or go.mod that prefetch cannot read (1-based).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("go.sum line {0}: expected `module version h1:hash`")]
    GoSum(usize),
    #[error("go.mod line {0}: expected `module version` in require")]
    GoMod(usize),
}

/// `module version h1:…` and `module version/go.mod h1:…` lines.
pub fn from_go_sum(text: &str) -> Result<Vec<ModuleVersion>, ListError> {
    let mut list = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [] => continue,
            [module, version, hash] if hash.starts_with("h1:") => {
                match version.strip_suffix("/go.mod") {
                    Some(version) => merge(&mut list, module, version, false),
                    None => merge(&mut list, module, version, true),
                }
            }
            _ => {
                return Err(ListError::GoSum(number + 1));
            }
        }
    }
    Ok(list)
}

/// The `require` directives of a `go.mod` (single lines and blocks).
pub fn from_go_mod(text: &str) -> Result<Vec<ModuleVersion>, ListError> {
    let mut list = Vec::new();
    let mut in_block = false;
    for (number, raw) in text.lines().enumerate() {
        let line = raw.split("//").next().unwrap_or("").trim();
        let spec = if in_block {
            if line == ")" {
                in_block = false;
                continue;
            }
            line
        } else if line == "require (" || line == "require(" {
            in_block = true;
            continue;
        } else if let Some(rest) = line.strip_prefix("require ") {
            rest.trim()
        } else {
            continue;
        };
        if spec.is_empty() {
            continue;
        }
        let fields: Vec<&str> = spec.split_whitespace().collect();
        match fields.as_slice() {
            [module, version] => merge(&mut list, module.trim_matches('"'), version, true),
            _ => {
                return Err(ListError::GoMod(number + 1));
            }
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_sum_lines_become_files_to_fetch() {
        let list = from_go_sum(
            "example.com/Upper/Mod v1.0.0 h1:abc=\nexample.com/Upper/Mod v1.0.0/go.mod h1:def=\n\
             golang.org/x/text v0.3.0/go.mod h1:xyz=\n",
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            list[0].paths(),
            [
                "/example.com/!upper/!mod/@v/v1.0.0.info",
                "/example.com/!upper/!mod/@v/v1.0.0.mod",
                "/example.com/!upper/!mod/@v/v1.0.0.zip"
            ]
        );
        assert_eq!(list[1].paths().len(), 2, "a /go.mod-only line needs no zip");
        assert_eq!(from_go_sum("garbage\n"), Err(ListError::GoSum(1)));
    }

    #[test]
    fn go_mod_requires_in_lines_and_blocks() {
        let list = from_go_mod(
            "module example.com/app\n\ngo 1.19\n\nrequire example.com/a v1.2.3\n\nrequire (\n\t\
             example.com/b v0.1.0 // indirect\n\texample.com/c/v2 v2.0.0\n)\n",
        )
        .unwrap();
        let names: Vec<&str> = list.iter().map(|m| m.module.as_str()).collect();
        assert_eq!(
            names,
            ["example.com/a", "example.com/b", "example.com/c/v2"]
        );
        assert!(list.iter().all(|m| m.zip));
    }
}
