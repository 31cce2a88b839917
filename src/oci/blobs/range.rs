//! `Range: bytes=…` for blobs: one range per request (several are answered
//! whole, as HTTP allows), resolved against the blob's size.

use http::header::{CONTENT_RANGE, HeaderValue};

use crate::oci::{Code, OciError};

/// A `Range: bytes=…` request (one range; several are answered whole).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `start-` or `start-end` (inclusive).
    From(u64, Option<u64>),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    pub fn parse(header: Option<&HeaderValue>) -> Option<ByteRange> {
        let spec = header?.to_str().ok()?.trim().strip_prefix("bytes=")?;
        if spec.contains(',') {
            return None;
        }
        let (start, end) = spec.split_once('-')?;
        let (start, end) = (start.trim(), end.trim());
        if start.is_empty() {
            return end.parse().ok().map(ByteRange::Suffix);
        }
        let start = start.parse().ok()?;
        let end = if end.is_empty() {
            None
        } else {
            Some(end.parse().ok()?)
        };
        if end.is_some_and(|end| end < start) {
            return None;
        }
        Some(ByteRange::From(start, end))
    }

    /// `start..end` (exclusive) within `size`, or `None` if unsatisfiable.
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        match self {
            ByteRange::From(start, _) if start >= size => None,
            ByteRange::From(start, end) => {
                Some((start, end.map_or(size, |e| e.saturating_add(1).min(size))))
            }
            ByteRange::Suffix(0) => None,
            ByteRange::Suffix(n) => Some((size.saturating_sub(n), size)),
        }
    }
}

pub fn unsatisfiable(size: u64) -> OciError {
    OciError::new(
        Code::RangeInvalid,
        format!("range not satisfiable for a {size}-byte blob"),
    )
    .with_header(
        CONTENT_RANGE,
        HeaderValue::from_str(&format!("bytes */{size}"))
            .unwrap_or(HeaderValue::from_static("bytes */*")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_resolve_like_http_says() {
        let parse = |s: &str| ByteRange::parse(Some(&HeaderValue::from_str(s).unwrap()));
        assert_eq!(parse("bytes=0-99").unwrap().resolve(1000), Some((0, 100)));
        assert_eq!(
            parse("bytes=900-").unwrap().resolve(1000),
            Some((900, 1000))
        );
        assert_eq!(
            parse("bytes=990-2000").unwrap().resolve(1000),
            Some((990, 1000))
        );
        assert_eq!(parse("bytes=-10").unwrap().resolve(1000), Some((990, 1000)));
        assert_eq!(parse("bytes=1000-").unwrap().resolve(1000), None);
        assert_eq!(parse("bytes=5-1"), None);
        assert_eq!(parse("bytes=0-1,5-6"), None);
        assert_eq!(parse("items=0-1"), None);
    }
}
