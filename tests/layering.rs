//! The module layering, held: every `crate::` path in `src/` must point from a
//! top-level module to one in a lower layer of `LAYERS`, and the imports must
//! form no cycle. `LAYERS` is the one statement of the order; `src/lib.rs`
//! repeats it in prose, and this test checks that the prose says the same.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Top to bottom: a module may use modules of any layer below its own, and
/// none of its own layer or above.
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["prefetch"],
    &["instance"],
    &["server"],
    &["http"],
    &["goproxy", "oci"],
    &["metrics"],
    &["config"],
    &["store", "upstream", "auth", "forward"],
    &["wire", "sync", "escape", "file_mode"],
];

/// One `crate::` path: where it is written and which top-level module it names.
struct Edge {
    file: PathBuf,
    line: usize,
    from: String,
    to: String,
}

#[test]
fn imports_follow_the_layers_and_form_no_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let modules = top_level_modules(&src);
    let mut problems = Vec::new();
    let rank = ranks(&modules, &mut problems);
    let reexports = root_reexports(&src.join("lib.rs"));

    let mut edges = Vec::new();
    for file in rust_files(&src) {
        let Some(from) = module_of(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let file = file.strip_prefix(root).unwrap().to_owned();
        for (line, name) in crate_paths(&code_only(&text)) {
            let to = if modules.contains(&name) {
                name
            } else if let Some(module) = reexports.get(&name) {
                module.clone()
            } else {
                problems.push(format!(
                    "{}:{line}: crate::{name} names no module of src/",
                    file.display()
                ));
                continue;
            };
            if to != from {
                edges.push(Edge {
                    file: file.clone(),
                    line,
                    from: from.clone(),
                    to,
                });
            }
        }
    }

    for edge in &edges {
        if let (Some(from), Some(to)) = (rank.get(&edge.from), rank.get(&edge.to))
            && to <= from
        {
            problems.push(format!(
                "{}:{}: {} → {} goes {} the layers",
                edge.file.display(),
                edge.line,
                edge.from,
                edge.to,
                if to == from { "across" } else { "up" }
            ));
        }
    }
    for cycle in cycles(&edges) {
        problems.push(format!("cycle: {}", cycle.join(" → ")));
    }
    assert!(
        problems.is_empty(),
        "the layering is broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn lib_rs_states_the_order_this_test_holds() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let prose: String = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    let order = order_text();
    assert!(
        prose.contains(&order),
        "src/lib.rs's header must state the layering as {order}"
    );
}

/// `LAYERS` as lib.rs writes it: `cli → … → {store, upstream, auth} → …`.
fn order_text() -> String {
    let mut text = String::from("`");
    for (i, layer) in LAYERS.iter().enumerate() {
        if i > 0 {
            text.push_str(" → ");
        }
        match layer {
            [one] => text.push_str(one),
            many => write!(text, "{{{}}}", many.join(", ")).unwrap(),
        }
    }
    text.push('`');
    text
}

/// Every module of `src/` has exactly one layer, and every layer names a module.
fn ranks(modules: &BTreeSet<String>, problems: &mut Vec<String>) -> BTreeMap<String, usize> {
    let mut rank = BTreeMap::new();
    for (i, layer) in LAYERS.iter().enumerate() {
        for module in *layer {
            if rank.insert(module.to_string(), i).is_some() {
                problems.push(format!("LAYERS lists {module} twice"));
            }
            if !modules.contains(*module) {
                problems.push(format!("LAYERS lists {module}, which src/ does not have"));
            }
        }
    }
    for module in modules {
        if !rank.contains_key(module) {
            problems.push(format!("src/{module} is in no layer of LAYERS"));
        }
    }
    rank
}

fn top_level_modules(src: &Path) -> BTreeSet<String> {
    let mut modules = BTreeSet::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let is_module = path.is_dir() || path.extension().is_some_and(|e| e == "rs");
        if is_module && name != "lib" && name != "main" {
            modules.insert(name);
        }
    }
    modules
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// `src/oci/blobs/mod.rs` and `src/oci.rs` belong to `oci`; the crate roots to none.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next()?.as_os_str().to_string_lossy();
    let name = first.strip_suffix(".rs").unwrap_or(&first);
    (name != "lib" && name != "main").then(|| name.to_owned())
}

/// `pub use module::Item;` lines of lib.rs, so `crate::Item` maps to `module`.
fn root_reexports(lib: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(lib).unwrap();
    let mut map = BTreeMap::new();
    for line in text.lines() {
        if let Some(path) = line.trim().strip_prefix("pub use ") {
            let path = path.trim_end_matches(';');
            if let (Some((module, _)), Some((_, item))) =
                (path.split_once("::"), path.rsplit_once("::"))
            {
                map.insert(item.to_owned(), module.to_owned());
            }
        }
    }
    map
}

/// The text with comments, strings and character literals blanked out, line
/// breaks kept, so a doc comment that names `crate::x` is not an import.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !is_ident(chars.get(i.wrapping_sub(1)).copied())
        {
            let mut hashes = 0;
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let rest: String = chars[j + 1..].iter().collect();
            let end = rest.find(&close).map_or(chars.len(), |e| {
                j + 1 + rest[..e].chars().count() + close.len()
            });
            for &k in &chars[i..end] {
                out.push(blank(k));
            }
            i = end;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && (chars.get(i + 2) == Some(&'\'') || next == Some('\\')) {
            // A character literal ('"', '\''); a lifetime has no closing quote.
            let end = if next == Some('\\') {
                (i + 2..chars.len())
                    .find(|&k| chars[k] == '\'')
                    .map_or(chars.len(), |k| k + 1)
            } else {
                i + 3
            };
            for &k in &chars[i..end] {
                out.push(blank(k));
            }
            i = end;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// Each `crate::name` and each first name inside `crate::{a, b::c}`, with its line.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut rest = code;
    let mut offset = 0;
    while let Some(at) = rest.find("crate::") {
        let start = offset + at;
        let before = code[..start].chars().next_back();
        offset = start + "crate::".len();
        rest = &code[offset..];
        if is_ident(before) || before == Some('$') {
            continue;
        }
        let line = code[..start].matches('\n').count() + 1;
        let tail = rest.trim_start();
        if let Some(group) = tail.strip_prefix('{') {
            for name in group_heads(group) {
                found.push((line, name));
            }
        } else {
            found.push((line, ident(tail)));
        }
    }
    found
}

/// The first name of every item of a `{…}` use group, up to its closing brace.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut at_item = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => at_item = true,
            c if at_item && !c.is_whitespace() => {
                at_item = false;
                let name = ident(&group[i..]);
                if name != "self" {
                    heads.push(name);
                }
            }
            _ => {}
        }
    }
    heads
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|&c| c.is_alphanumeric() || c == '_')
        .collect()
}

/// Every elementary cycle's smallest representative is found by a DFS from
/// each module; one cycle per strongly connected knot is enough to report.
fn cycles(edges: &[Edge]) -> Vec<Vec<String>> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for edge in edges {
        graph.entry(&edge.from).or_default().insert(&edge.to);
    }
    let mut reported: BTreeSet<BTreeSet<String>> = BTreeSet::new();
    let mut found = Vec::new();
    for &start in graph.keys() {
        // Breadth-first from `start`, so the cycle through it is a shortest one.
        let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut closed = None;
        while let Some(node) = queue.pop_front() {
            for &next in graph.get(node).into_iter().flatten() {
                if next == start {
                    closed = Some(node);
                    break;
                }
                if !parent.contains_key(next) {
                    parent.insert(next, node);
                    queue.push_back(next);
                }
            }
            if closed.is_some() {
                break;
            }
        }
        let Some(mut node) = closed else { continue };
        let mut cycle = vec![node.to_owned()];
        while node != start {
            node = parent[node];
            cycle.push(node.to_owned());
        }
        cycle.reverse();
        let members: BTreeSet<String> = cycle.iter().cloned().collect();
        if reported.insert(members) {
            cycle.push(start.to_owned());
            found.push(cycle);
        }
    }
    found
}
