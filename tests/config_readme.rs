//! README's "every key, with its default" block is the code's truth: read as a
//! config it is exactly `Config::default()`, and every key it comments out is
//! a real key with a value of the right type.

use std::path::Path;

use mirror::Config;

/// The first TOML block of README's Configuration section.
fn readme_block() -> String {
    let readme = include_str!("../README.md");
    let section = readme
        .split_once("\n## Configuration\n")
        .map(|(_, rest)| rest)
        .expect("README has a Configuration section");
    let (_, block) = section
        .split_once("```toml\n")
        .expect("a toml block in the Configuration section");
    let (block, _) = block.split_once("\n```").expect("the toml block ends");
    block.to_owned()
}

/// The block with every commented-out key and table header put back.
fn uncommented(block: &str) -> String {
    block
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with('[')
                    || rest.split_once(" = ").is_some_and(|(key, _)| {
                        key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_readme_block_is_the_code_default() {
    let block = readme_block();
    let parsed = Config::parse(&block, Path::new("."), "README.md").expect("README block parses");
    assert_eq!(
        parsed,
        Config::default(),
        "README's configuration block differs from Config::default()"
    );
}

#[test]
fn every_key_the_readme_comments_out_exists_with_a_value_of_its_type() {
    let block = uncommented(&readme_block());
    assert!(
        block.contains("\nlibrary_prefix = true") && block.contains("\n[[go.sumdb]]"),
        "{block}"
    );
    // Parsed without validation: the example files need not exist here.
    let parsed: Result<Config, _> = toml::from_str(&block);
    assert!(parsed.is_ok(), "{}\n{block}", parsed.unwrap_err());
}
