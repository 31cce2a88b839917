//! A lookup answer of the checksum database (golang.org/x/mod/sumdb/tlog
//! `ParseRecord`) and the go.sum lines in it for one module version. Pure
//! parsing: proving the record is the log's is `session`'s.

use super::dirhash::H1;
use crate::goproxy::module::ModulePath;
use crate::goproxy::version::Version;

/// A lookup answer (golang.org/x/mod/sumdb/tlog `ParseRecord`): the record's
/// id, its text, then after a blank line the signed tree head.
pub(super) struct Record<'a> {
    pub id: u64,
    pub text: &'a [u8],
    pub note: &'a [u8],
}

impl<'a> Record<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Record<'a>, String> {
        let malformed = || "malformed lookup record".to_owned();
        let newline = body
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(malformed)?;
        let id = std::str::from_utf8(&body[..newline])
            .ok()
            .and_then(|id| id.parse::<u64>().ok())
            .ok_or_else(malformed)?;
        let rest = &body[newline + 1..];
        let blank = rest
            .windows(2)
            .position(|w| w == b"\n\n")
            .ok_or_else(malformed)?;
        let (text, note) = (&rest[..=blank], &rest[blank + 2..]);
        let valid = std::str::from_utf8(text)
            .is_ok_and(|t| !t.chars().any(|c| c < ' ' && c != '\n') && !t.contains("\n\n"));
        if !valid {
            return Err(malformed());
        }
        Ok(Record { id, text, note })
    }

    /// The `M V h1:…` and `M V/go.mod h1:…` hashes for `module@version`.
    pub fn hashes(
        &self,
        module: &ModulePath,
        version: &Version,
    ) -> Result<(Option<H1>, Option<H1>), String> {
        let text = std::str::from_utf8(self.text).map_err(|_| "record is not UTF-8")?;
        let go_mod_version = format!("{version}/go.mod");
        let (mut zip, mut go_mod) = (None, None);
        for line in text.lines() {
            let mut fields = line.split(' ');
            let (Some(path), Some(file_version), Some(hash), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if path != module.as_str() || !hash.starts_with("h1:") {
                continue;
            }
            let slot = if file_version == version.as_str() {
                &mut zip
            } else if file_version == go_mod_version {
                &mut go_mod
            } else {
                continue;
            };
            let hash: H1 = hash
                .parse()
                .map_err(|e| format!("record for {module}@{version}: {e}"))?;
            if slot.replace(hash).is_some_and(|before| before != hash) {
                return Err(format!(
                    "record for {module}@{version} has two hashes for one file"
                ));
            }
        }
        if zip.is_none() && go_mod.is_none() {
            return Err(format!(
                "the record served for {module}@{version} is not for it"
            ));
        }
        Ok((zip, go_mod))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goproxy::checksum::fixtures::{MOD, ZIP, module};

    #[test]
    fn lookup_records_parse_as_go_parses_them() {
        let body = b"123456789012\nhello, world\n\njunk on end\x01\xff";
        let record = Record::parse(body).unwrap();
        assert_eq!(
            (record.id, record.text, record.note),
            (
                123_456_789_012,
                &b"hello, world\n"[..],
                &b"junk on end\x01\xff"[..]
            )
        );
        for bad in [
            &b"not-123\nhello, world\n\n"[..],
            b"123\nhello\x01world\n\n",
            b"123\nhello\xffworld\n\n",
            b"123\nhello world\n",
            b"0x123\nhello world\n\n",
            b"-1\nhello world\n\n",
        ] {
            assert!(
                Record::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn record_hashes_are_those_of_the_module_asked_for() {
        let (module, version) = module();
        let text = format!(
            "example.com/Upper/Mod v1.0.0 {ZIP}\nexample.com/Upper/Mod v1.0.0/go.mod {MOD}\n"
        );
        let record = Record {
            id: 0,
            text: text.as_bytes(),
            note: b"",
        };
        let (zip, go_mod) = record.hashes(&module, &version).unwrap();
        assert_eq!(zip.map(|h| h.to_string()).as_deref(), Some(ZIP));
        assert_eq!(go_mod.map(|h| h.to_string()).as_deref(), Some(MOD));

        let other = format!("example.com/upper/mod v1.0.0 {ZIP}\n");
        let record = Record {
            id: 0,
            text: other.as_bytes(),
            note: b"",
        };
        assert!(
            record
                .hashes(&module, &version)
                .unwrap_err()
                .contains("is not for it")
        );

        let twice =
            format!("example.com/Upper/Mod v1.0.0 {ZIP}\nexample.com/Upper/Mod v1.0.0 {MOD}\n");
        let record = Record {
            id: 0,
            text: twice.as_bytes(),
            note: b"",
        };
        assert!(
            record
                .hashes(&module, &version)
                .unwrap_err()
                .contains("two hashes")
        );

        // A line of a future hash algorithm is not ours to read.
        let future = format!(
            "example.com/Upper/Mod v1.0.0 h2:abc\nexample.com/Upper/Mod v1.0.0/go.mod {MOD}\n"
        );
        let record = Record {
            id: 0,
            text: future.as_bytes(),
            note: b"",
        };
        assert_eq!(record.hashes(&module, &version).unwrap().0, None);
    }
}
