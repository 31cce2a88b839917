//! `[go] private`: GOPRIVATE-style patterns, matched as Go's
//! `module.MatchPrefixPatterns` does (a glob of N+1 elements against the first
//! N+1 elements of the path, `path.Match` syntax). Decides only; never logs or
//! forwards the module path it is asked about.

use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// `*`: any run of characters except `/`.
    Star,
    /// `?`: one character except `/`.
    Any,
    /// `[...]` / `[^...]`: one character in (or not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    Literal(char),
}

/// One glob, e.g. `*.corp.example.com` or `example.com/private`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Glob {
    tokens: Vec<Token>,
    /// Slashes in the glob: it is matched against that many + 1 leading elements.
    slashes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad pattern {pattern:?}: {reason}")]
pub struct BadPattern {
    pub pattern: String,
    pub reason: &'static str,
}

impl FromStr for Glob {
    type Err = BadPattern;

    fn from_str(pattern: &str) -> Result<Glob, BadPattern> {
        let bad = |reason| BadPattern {
            pattern: pattern.to_owned(),
            reason,
        };
        let mut chars = pattern.chars().peekable();
        let mut tokens = Vec::new();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' => Token::Star,
                '?' => Token::Any,
                '\\' => Token::Literal(chars.next().ok_or_else(|| bad("trailing backslash"))?),
                '[' => {
                    let negated = chars.next_if_eq(&'^').is_some();
                    let mut ranges = Vec::new();
                    loop {
                        if !ranges.is_empty() && chars.next_if_eq(&']').is_some() {
                            break;
                        }
                        let class_char =
                            |chars: &mut std::iter::Peekable<std::str::Chars>| match chars.next() {
                                None | Some('-' | ']') => Err(bad("malformed character class")),
                                Some('\\') => {
                                    chars.next().ok_or_else(|| bad("malformed character class"))
                                }
                                Some(c) => Ok(c),
                            };
                        let lo = class_char(&mut chars)?;
                        let hi = if chars.next_if_eq(&'-').is_some() {
                            class_char(&mut chars)?
                        } else {
                            lo
                        };
                        ranges.push((lo, hi));
                    }
                    Token::Class { negated, ranges }
                }
                c => Token::Literal(c),
            });
        }
        Ok(Glob {
            tokens,
            slashes: pattern.matches('/').count(),
        })
    }
}

impl Glob {
    /// `path.Match` semantics, by dynamic programming so no pattern can make it
    /// slow. Module paths are ASCII (validated before this), so bytes are
    /// characters; two rows are reused across tokens.
    fn matches(&self, name: &str) -> bool {
        let name = name.as_bytes();
        // reach[j]: the tokens consumed so far can match name[..j].
        let mut reach = vec![false; name.len() + 1];
        let mut next = vec![false; name.len() + 1];
        reach[0] = true;
        for token in &self.tokens {
            next.fill(false);
            for j in 0..=name.len() {
                if !reach[j] {
                    continue;
                }
                let here = name.get(j).map(|&b| char::from(b));
                match token {
                    Token::Star => {
                        next[j] = true;
                        let mut k = j;
                        while k < name.len() && name[k] != b'/' {
                            k += 1;
                            next[k] = true;
                        }
                    }
                    Token::Any => {
                        if here.is_some_and(|c| c != '/') {
                            next[j + 1] = true;
                        }
                    }
                    Token::Class { negated, ranges } => {
                        if let Some(c) = here {
                            let hit = ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
                            if hit != *negated {
                                next[j + 1] = true;
                            }
                        }
                    }
                    Token::Literal(literal) => {
                        if here == Some(*literal) {
                            next[j + 1] = true;
                        }
                    }
                }
            }
            std::mem::swap(&mut reach, &mut next);
        }
        reach[name.len()]
    }
}

/// The configured private patterns.
#[derive(Clone, Debug, Default)]
pub struct Private {
    globs: Vec<Glob>,
}

impl Private {
    /// Parses config entries; each may itself be a comma-separated GOPRIVATE list.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Private, BadPattern> {
        let mut globs = Vec::new();
        for entry in entries {
            for glob in entry.as_ref().split(',') {
                let glob = glob.trim().trim_end_matches('/');
                if !glob.is_empty() {
                    globs.push(glob.parse()?);
                }
            }
        }
        Ok(Private { globs })
    }

    /// Whether `module` (unescaped) matches any pattern, by leading elements.
    pub fn matches(&self, module: &str) -> bool {
        self.globs.iter().any(|glob| {
            let prefix = match module.match_indices('/').nth(glob.slashes) {
                Some((i, _)) => &module[..i],
                None if module.matches('/').count() >= glob.slashes => module,
                None => return false,
            };
            glob.matches(prefix)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private(patterns: &[&str]) -> Private {
        Private::parse(patterns).unwrap()
    }

    #[test]
    fn patterns_match_leading_elements_like_goprivate() {
        let p = private(&[
            "*.corp.example.com",
            "rsc.io/private",
            "example.com/team-[ab]/*",
        ]);
        assert!(p.matches("git.corp.example.com/x/y"));
        assert!(p.matches("git.corp.example.com"));
        assert!(!p.matches("corp.example.com/x"));
        assert!(p.matches("rsc.io/private"));
        assert!(p.matches("rsc.io/private/quux"));
        assert!(!p.matches("rsc.io/privateer"));
        assert!(!p.matches("rsc.io"));
        assert!(p.matches("example.com/team-a/svc/v2"));
        assert!(!p.matches("example.com/team-c/svc"));
        assert!(!p.matches("example.com/team-a"));
        assert!(!p.matches("golang.org/x/mod"));
    }

    #[test]
    fn comma_lists_trailing_slashes_and_classes_work() {
        let p = private(&["a.example.com/,b.example.com", "c.example.com/[^x]?z"]);
        assert!(p.matches("a.example.com/m"));
        assert!(p.matches("b.example.com"));
        assert!(p.matches("c.example.com/ayz/more"));
        assert!(!p.matches("c.example.com/xyz"));
        assert!(!p.matches("c.example.com/a/z"));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in [
            "example.com/[",
            "example.com/[]",
            "example.com/\\",
            "example.com/[a-]",
        ] {
            assert!(Private::parse(&[bad]).is_err(), "{bad:?}");
        }
    }
}
