//! Checks a module zip from upstream before it is stored forever, with the
//! rules of golang.org/x/mod/zip `CheckZip`: a readable zip whose every entry
//! lies under `module@version/` with a clean file path, no two paths equal
//! when case is folded, Go's size limits, and every entry's bytes matching its
//! CRC and declared size. Runs on a blocking thread over the temp file; reads
//! it in a stream, never whole.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::module::{Kind, PathError, check_elem};

/// Go's limits (golang.org/x/mod/zip): unpacked module, go.mod, LICENSE.
pub const MAX_UNPACKED: u64 = 500 << 20;
pub const MAX_GO_MOD: u64 = 16 << 20;
pub const MAX_LICENSE: u64 = 16 << 20;
/// The central directory is read into memory by the zip reader: bound it so a
/// hostile zip of millions of empty entries cannot exhaust memory.
pub const MAX_CENTRAL_DIRECTORY: u64 = 16 << 20;

/// Why a module zip is refused; the text names the entry and Go's rule.
#[derive(Debug, thiserror::Error)]
pub enum ZipError {
    #[error("cannot open: {0}")]
    Open(std::io::Error),
    #[error("{0}")]
    Read(#[from] std::io::Error),
    #[error("not a valid zip: {0}")]
    Malformed(&'static str),
    #[error("not a valid zip: {0}")]
    NotZip(zip::result::ZipError),
    #[error("zip directory of {0} bytes is over the {MAX_CENTRAL_DIRECTORY}-byte limit")]
    DirectoryTooLarge(u64),
    #[error("zip entry {index}: {source}")]
    Entry {
        index: usize,
        source: zip::result::ZipError,
    },
    #[error("zip entry {0}: name is not UTF-8")]
    NameNotUtf8(usize),
    #[error("zip entry {name:?} is not under {prefix:?}")]
    OutsidePrefix { name: String, prefix: String },
    #[error("zip entry {name:?}: {reason}")]
    BadPath { name: String, reason: PathError },
    #[error("zip entry {0:?}: another entry differs only in case")]
    CaseCollision(String),
    #[error("zip entry {0:?} is encrypted")]
    Encrypted(String),
    #[error("zip entry {0:?} uses a compression Go cannot read")]
    Compression(String),
    #[error("zip entry {0:?} is over Go's size limits")]
    TooLarge(String),
    #[error("zip entry {name:?}: {source}")]
    EntryRead {
        name: String,
        source: std::io::Error,
    },
    #[error("zip entry {name:?} holds {read} bytes, declares {declared}")]
    SizeLie {
        name: String,
        read: u64,
        declared: u64,
    },
}

/// Validates the zip at `path` for `module@version` (both unescaped).
pub fn check(path: &Path, module: &str, version: &str) -> Result<(), ZipError> {
    let mut file = File::open(path).map_err(ZipError::Open)?;
    let directory = central_directory_size(&mut file)?;
    if directory > MAX_CENTRAL_DIRECTORY {
        return Err(ZipError::DirectoryTooLarge(directory));
    }
    file.seek(SeekFrom::Start(0))?;
    let mut archive = zip::ZipArchive::new(file).map_err(ZipError::NotZip)?;
    let prefix = format!("{module}@{version}/");
    let mut folded = HashSet::new();
    let mut unpacked: u64 = 0;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|source| ZipError::Entry { index: i, source })?;
        let name = std::str::from_utf8(entry.name_raw())
            .map_err(|_| ZipError::NameNotUtf8(i))?
            .to_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            return Err(ZipError::OutsidePrefix { name, prefix });
        };
        if rest.is_empty() {
            continue;
        }
        let (file_path, is_dir) = match rest.strip_suffix('/') {
            Some(dir) => (dir, true),
            None => (rest, false),
        };
        if let Err(reason) = check_file_path(file_path) {
            return Err(ZipError::BadPath { name, reason });
        }
        if !folded.insert(file_path.to_lowercase()) {
            return Err(ZipError::CaseCollision(name));
        }
        if is_dir {
            continue;
        }
        if entry.encrypted() {
            return Err(ZipError::Encrypted(name));
        }
        if !matches!(
            entry.compression(),
            zip::CompressionMethod::Stored | zip::CompressionMethod::Deflated
        ) {
            return Err(ZipError::Compression(name));
        }
        let declared = entry.size();
        let limit = match file_path {
            "go.mod" => MAX_GO_MOD,
            "LICENSE" => MAX_LICENSE,
            _ => MAX_UNPACKED,
        };
        if declared > limit || unpacked + declared > MAX_UNPACKED {
            return Err(ZipError::TooLarge(name));
        }
        // Reading to the end checks the CRC; one byte past the declared size is a lie.
        let read = match std::io::copy(&mut (&mut entry).take(declared + 1), &mut std::io::sink()) {
            Ok(read) => read,
            Err(source) => return Err(ZipError::EntryRead { name, source }),
        };
        if read != declared {
            return Err(ZipError::SizeLie {
                name,
                read,
                declared,
            });
        }
        unpacked += declared;
    }
    Ok(())
}

/// Go's `CheckFilePath` for the path inside the module, plus cleanliness.
fn check_file_path(path: &str) -> Result<(), PathError> {
    if path.starts_with('-') {
        return Err(PathError::LeadingDash);
    }
    for elem in path.split('/') {
        check_elem(elem, Kind::File)?;
    }
    Ok(())
}

/// The central directory's size from the end-of-central-directory record
/// (and its zip64 form when the classic one is saturated).
fn central_directory_size(file: &mut File) -> Result<u64, ZipError> {
    const EOCD: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
    const EOCD64_LOCATOR: [u8; 4] = [0x50, 0x4b, 0x06, 0x07];
    const EOCD64: [u8; 4] = [0x50, 0x4b, 0x06, 0x06];
    let len = file.metadata()?.len();
    // The record is 22 bytes plus a comment of at most 65535.
    let tail_len = len.min(22 + 65535);
    let mut tail = vec![0; tail_len as usize];
    file.seek(SeekFrom::Start(len - tail_len))?;
    file.read_exact(&mut tail)?;
    let at = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == EOCD)
        .ok_or(ZipError::Malformed("no end of central directory"))?;
    let u16_at = |b: &[u8], i: usize| u64::from(u16::from_le_bytes([b[i], b[i + 1]]));
    let u32_at =
        |b: &[u8], i: usize| u64::from(u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]));
    let size = u32_at(&tail, at + 12);
    if size != 0xFFFF_FFFF && u16_at(&tail, at + 10) != 0xFFFF {
        return Ok(size);
    }
    // Zip64: the locator sits just before the classic record and points at the zip64 record.
    let locator = at
        .checked_sub(20)
        .ok_or(ZipError::Malformed("truncated zip64 locator"))?;
    if tail[locator..locator + 4] != EOCD64_LOCATOR {
        return Ok(size);
    }
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&tail[locator + 8..locator + 16]);
    let record_at = u64::from_le_bytes(offset);
    let mut record = [0u8; 56];
    file.seek(SeekFrom::Start(record_at))?;
    file.read_exact(&mut record)
        .map_err(|_| ZipError::Malformed("bad zip64 record"))?;
    if record[..4] != EOCD64 {
        return Err(ZipError::Malformed("bad zip64 record"));
    }
    let mut size = [0u8; 8];
    size.copy_from_slice(&record[40..48]);
    Ok(u64::from_le_bytes(size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_zip(dir: &Path, entries: &[(&str, &[u8])]) -> std::path::PathBuf {
        let path = dir.join("m.zip");
        let mut writer = zip::ZipWriter::new(File::create(&path).unwrap());
        for (name, data) in entries {
            writer
                .start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            writer.write_all(data).unwrap();
        }
        writer.finish().unwrap();
        path
    }

    #[test]
    fn a_proper_module_zip_passes() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_zip(
            dir.path(),
            &[
                (
                    "example.com/Upper@v1.0.0/go.mod",
                    b"module example.com/Upper\n",
                ),
                ("example.com/Upper@v1.0.0/a/b.go", b"package a\n"),
            ],
        );
        check(&path, "example.com/Upper", "v1.0.0").unwrap();
    }

    #[test]
    fn entries_outside_the_prefix_or_unclean_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "example.com/m@v1.0.1/go.mod",
            "other.com/m@v1.0.0/go.mod",
            "example.com/m@v1.0.0/../evil.go",
            "example.com/m@v1.0.0//x.go",
            "example.com/m@v1.0.0/./x.go",
            "/etc/passwd",
            "example.com/m@v1.0.0/a\\b.go",
        ] {
            let path = write_zip(
                dir.path(),
                &[("example.com/m@v1.0.0/go.mod", b"module x\n"), (bad, b"x")],
            );
            assert!(
                check(&path, "example.com/m", "v1.0.0").is_err(),
                "{bad:?} should fail"
            );
        }
        let path = write_zip(
            dir.path(),
            &[
                ("example.com/m@v1.0.0/A.go", b"a"),
                ("example.com/m@v1.0.0/a.go", b"b"),
            ],
        );
        let error = check(&path, "example.com/m", "v1.0.0").unwrap_err();
        assert!(matches!(error, ZipError::CaseCollision(_)), "{error}");
        assert!(error.to_string().contains("case"), "{error}");
    }

    #[test]
    fn garbage_and_corruption_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.zip");
        std::fs::write(&path, b"this is not a zip at all").unwrap();
        assert!(check(&path, "example.com/m", "v1.0.0").is_err());
        let data = vec![b'a'; 10_000];
        let path = write_zip(dir.path(), &[("example.com/m@v1.0.0/x.txt", &data)]);
        let mut bytes = std::fs::read(&path).unwrap();
        // Flip a byte inside the compressed data (after the 30-byte local header
        // and the name): inflating fails or the CRC no longer matches.
        let data_at = 30 + "example.com/m@v1.0.0/x.txt".len();
        bytes[data_at + 4] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(check(&path, "example.com/m", "v1.0.0").is_err());
    }
}
