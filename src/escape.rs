//! Makes text from outside (certificate names, user names, request paths)
//! inert before it reaches a log line, an audit row or a terminal: control
//! characters, and the Unicode marks that break or reorder a line, become
//! `\n`, `\r`, `\t` or `\u{…}`. A leaf: depends on nothing in the crate.
//!
//! A backslash is kept as it is, so escaping is idempotent: every layer that
//! writes such text (the TLS identity, `Identity`'s `Display`, the access log,
//! the audit rows, `mirror audit`) escapes it again without doubling anything.
//! The price is that `a\nb` typed literally and `a` LF `b` print alike; both
//! are already marked as odd by the backslash, and a certificate is told apart
//! by its serial anyway.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// Whether `c` could end a line, move the cursor, colour a terminal or reorder
/// what a reader sees (Trojan Source): C0, DEL, C1 (`c.is_control()`), the
/// bidirectional marks, embeddings, overrides and isolates, and U+2028/2029.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Printable ASCII needs no look at its characters: the common case is one
/// pass over the bytes.
fn is_plain(text: &str) -> bool {
    text.bytes().all(|b| (0x20..0x7f).contains(&b))
}

fn write_escaped(out: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        c => write!(out, "\\u{{{:x}}}", u32::from(c)),
    }
}

/// Displays its text escaped; nothing is allocated.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_plain(self.0) {
            return f.write_str(self.0);
        }
        for c in self.0.chars() {
            if needs_escape(c) {
                write_escaped(f, c)?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// `text` escaped, borrowed when there was nothing to escape.
pub fn escape(text: &str) -> Cow<'_, str> {
    if is_plain(text) || !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(Escaped(text).to_string())
}

/// `text` escaped, reusing its allocation when there was nothing to escape.
pub fn escape_owned(text: String) -> String {
    match escape(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(escaped) => escaped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_bidi_marks_become_visible_escapes() {
        assert_eq!(
            escape("evil\n2026-01-01 INFO forged\x1b[31m"),
            "evil\\n2026-01-01 INFO forged\\u{1b}[31m"
        );
        assert_eq!(escape("a\rb\tc\u{7f}\u{9b}"), "a\\rb\\tc\\u{7f}\\u{9b}");
        assert_eq!(escape("admin\u{202e}nimda"), "admin\\u{202e}nimda");
        assert_eq!(escape("x\u{2028}y"), "x\\u{2028}y");
    }

    #[test]
    fn ordinary_names_pass_unchanged_and_unallocated() {
        for name in [
            "alice",
            "Jürgen Müller",
            "李雷",
            "ci-bot@example.com",
            "a\\nb",
        ] {
            assert!(matches!(escape(name), Cow::Borrowed(_)), "{name}");
            assert_eq!(Escaped(name).to_string(), name);
        }
    }

    #[test]
    fn escaping_twice_changes_nothing() {
        let once = escape("a\nb\x1b\u{202e}\\c").into_owned();
        assert_eq!(escape(&once), once);
        assert!(once.chars().all(|c| !needs_escape(c)));
    }
}
