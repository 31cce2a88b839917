//! The `h1:` hashes cmd/go writes to go.sum (golang.org/x/mod/sumdb/dirhash
//! `Hash1`): a sorted list of `sha256hex  name\n` lines, one per file, hashed
//! again and base64-encoded. A go.mod is hashed as a one-file tree named
//! `go.mod`; a zip as every entry under its own name, `module@version/`
//! prefix and directory entries included. Blocking file I/O, in a stream: the
//! caller runs it on a blocking thread.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};

/// Bytes read from an entry at a time: memory stays the same for any zip.
const CHUNK: usize = 64 << 10;

/// An `h1:` hash: SHA-256 over the sorted file list.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct H1([u8; 32]);

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("cannot read {what}: {source}")]
    Read { what: String, source: io::Error },
    #[error("not a valid zip: {0}")]
    Zip(#[from] zip::result::ZipError),
    /// Go refuses these too: a newline would forge a second line of the list.
    #[error("zip entry {0:?} has a newline in its name")]
    NewlineInName(String),
}

#[derive(Debug, thiserror::Error)]
#[error("not an h1: hash: {0:?}")]
pub struct BadH1(String);

impl H1 {
    /// The go.mod hash, as in a `M V/go.mod h1:…` line.
    pub fn go_mod(content: &[u8]) -> H1 {
        let mut list = FileList::default();
        list.push(b"go.mod".to_vec(), Sha256::digest(content).into());
        list.finish()
    }

    /// The go.mod hash of a file on disk, read in a stream.
    pub fn go_mod_file(path: &Path) -> Result<H1, HashError> {
        let read = |source| HashError::Read {
            what: path.display().to_string(),
            source,
        };
        let file = File::open(path).map_err(read)?;
        let digest = sha256_of(file).map_err(read)?;
        let mut list = FileList::default();
        list.push(b"go.mod".to_vec(), digest);
        Ok(list.finish())
    }

    /// The hash of a module zip (what a `M V h1:…` line holds), each entry
    /// read through the zip reader. Meant for a zip `zipcheck::check`
    /// accepted: the zip reader holds the central directory, which that
    /// check bounds.
    pub fn zip_file(path: &Path) -> Result<H1, HashError> {
        let file = File::open(path).map_err(|source| HashError::Read {
            what: path.display().to_string(),
            source,
        })?;
        let mut archive = zip::ZipArchive::new(file)?;
        let names = (0..archive.len())
            .map(|i| Ok(archive.by_index_raw(i)?.name_raw().to_vec()))
            .collect::<Result<Vec<_>, HashError>>()?;
        if let Some(name) = names.iter().find(|name| name.contains(&b'\n')) {
            return Err(HashError::NewlineInName(
                String::from_utf8_lossy(name).into_owned(),
            ));
        }
        // Go lists every entry but opens a name's last entry: a duplicated
        // name hashes the last one's bytes on each of its lines.
        let last: HashMap<&[u8], usize> = names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.as_slice(), i))
            .collect();
        let mut opened: Vec<usize> = last.values().copied().collect();
        opened.sort_unstable();
        let mut digests = vec![[0; 32]; names.len()];
        for i in opened {
            let mut entry = archive.by_index(i)?;
            digests[i] = sha256_of(&mut entry).map_err(|source| HashError::Read {
                what: format!("zip entry {:?}", String::from_utf8_lossy(&names[i])),
                source,
            })?;
        }
        let mut list = FileList::default();
        // Every name is a key of `last`, built from `names` above.
        for name in &names {
            list.push(name.clone(), digests[last[name.as_slice()]]);
        }
        Ok(list.finish())
    }
}

impl fmt::Display for H1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "h1:{}", STANDARD.encode(self.0))
    }
}

impl fmt::Debug for H1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for H1 {
    type Err = BadH1;

    fn from_str(text: &str) -> Result<H1, BadH1> {
        let bad = || BadH1(text.chars().take(80).collect());
        let encoded = text.strip_prefix("h1:").ok_or_else(bad)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| bad())?;
        Ok(H1(bytes.try_into().map_err(|_| bad())?))
    }
}

/// The `sha256hex  name` lines of `Hash1`, sorted by name as Go's
/// `sort.Strings` does (bytewise) before they are hashed.
#[derive(Default)]
struct FileList(Vec<(Vec<u8>, [u8; 32])>);

impl FileList {
    fn push(&mut self, name: Vec<u8>, digest: [u8; 32]) {
        self.0.push((name, digest));
    }

    fn finish(mut self) -> H1 {
        self.0.sort_by(|a, b| a.0.cmp(&b.0));
        let mut summary = Sha256::new();
        for (name, digest) in &self.0 {
            summary.update(hex::encode(digest).as_bytes());
            summary.update(b"  ");
            summary.update(name);
            summary.update(b"\n");
        }
        H1(summary.finalize().into())
    }
}

fn sha256_of(mut reader: impl Read) -> io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; CHUNK];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => return Ok(hasher.finalize().into()),
            Ok(n) => hasher.update(&buffer[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn h1_of_lines(lines: &str) -> String {
        format!("h1:{}", STANDARD.encode(Sha256::digest(lines.as_bytes())))
    }

    fn hex_of(data: &str) -> String {
        hex::encode(Sha256::digest(data.as_bytes()))
    }

    fn write_zip(dir: &Path, entries: &[(&str, &str)]) -> std::path::PathBuf {
        let path = dir.join("m.zip");
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, content) in entries {
            if let Some(dir) = name.strip_suffix('/') {
                zip.add_directory(dir, stored).unwrap();
            } else {
                zip.start_file(*name, stored).unwrap();
                zip.write_all(content.as_bytes()).unwrap();
            }
        }
        zip.finish().unwrap();
        path
    }

    #[test]
    fn go_mod_hash_is_a_one_file_tree_named_go_mod() {
        let content = "module example.com/m\n";
        let want = h1_of_lines(&format!("{}  go.mod\n", hex_of(content)));
        assert_eq!(H1::go_mod(content.as_bytes()).to_string(), want);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("v1.0.0.mod");
        std::fs::write(&file, content).unwrap();
        assert_eq!(H1::go_mod_file(&file).unwrap().to_string(), want);
    }

    #[test]
    fn zip_hash_lists_entries_sorted_by_byte_with_directories() {
        let dir = tempfile::tempdir().unwrap();
        // Upper case sorts before lower case, "a b" before "a/b": bytewise.
        let zip = write_zip(
            dir.path(),
            &[
                ("m@v1/xyz", "data for xyz"),
                ("m@v1/sub/", ""),
                ("m@v1/a b", "spaced"),
                ("m@v1/Abc", "data for Abc"),
            ],
        );
        let want = h1_of_lines(&format!(
            "{}  m@v1/Abc\n{}  m@v1/a b\n{}  m@v1/sub/\n{}  m@v1/xyz\n",
            hex_of("data for Abc"),
            hex_of("spaced"),
            hex_of(""),
            hex_of("data for xyz"),
        ));
        assert_eq!(H1::zip_file(&zip).unwrap().to_string(), want);
    }

    #[test]
    fn zip_entry_with_a_newline_in_its_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let zip = write_zip(dir.path(), &[("m@v1/a\nb", "x")]);
        assert!(matches!(
            H1::zip_file(&zip),
            Err(HashError::NewlineInName(name)) if name == "m@v1/a\nb"
        ));
    }

    #[test]
    fn zip_whose_bytes_do_not_match_their_crc_fails() {
        let dir = tempfile::tempdir().unwrap();
        let zip = write_zip(dir.path(), &[("m@v1/f", "original content")]);
        let mut bytes = std::fs::read(&zip).unwrap();
        let at = bytes
            .windows(8)
            .position(|w| w == b"original")
            .expect("stored entry bytes");
        bytes[at] = b'O';
        std::fs::write(&zip, bytes).unwrap();
        assert!(H1::zip_file(&zip).is_err());
    }

    /// The process's peak resident memory, in bytes.
    fn peak_rss() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib << 10
    }

    #[test]
    fn a_large_entry_is_hashed_in_a_stream() {
        const ENTRY: usize = 64 << 20;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.zip");
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(true);
        zip.start_file("m@v1/big", options).unwrap();
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..ENTRY >> 20 {
            zip.write_all(&chunk).unwrap();
        }
        zip.finish().unwrap();

        let before = peak_rss();
        H1::zip_file(&path).unwrap();
        // Holding the entry would raise the peak by its size; other tests
        // running meanwhile stay far below this margin.
        let grown = peak_rss().saturating_sub(before);
        assert!(
            grown < (ENTRY / 2) as u64,
            "peak memory grew by {grown} bytes"
        );
    }

    #[test]
    fn h1_text_round_trips_and_refuses_other_forms() {
        let h = H1::go_mod(b"module m\n");
        assert_eq!(h.to_string().parse::<H1>().unwrap(), h);
        for bad in [
            "h2:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            "h1:47DEQpj8HBSa",
            "h1:not base64!",
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
        ] {
            assert!(bad.parse::<H1>().is_err(), "{bad}");
        }
    }
}
