//! Opening and reading blob files on the async worker when, and only when, the
//! kernel can answer from its caches: the path lookup with `openat2`'s
//! `RESOLVE_CACHED`, the read with `preadv2`'s `RWF_NOWAIT`. Anything that
//! would wait for the disk says so (`None`) and the caller takes it to the
//! blocking pool. A warm hit then costs a few syscalls instead of two thread
//! hand-offs, which on a busy core is most of what a small request costs.
//! Owns no policy: which reads are worth trying is the store's decision.

use std::fs::File;
use std::io;
use std::path::Path;

#[cfg(target_os = "linux")]
mod imp {
    use std::fs::File;
    use std::io;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};

    use rustix::fs::{CWD, Mode, OFlags, ResolveFlags};
    use rustix::io::{Errno, ReadWriteFlags};

    /// Cleared the first time the kernel says it lacks either call (Linux
    /// before 5.12 has no `RESOLVE_CACHED`), so every later attempt is free.
    static SUPPORTED: AtomicBool = AtomicBool::new(true);

    fn unsupported(errno: Errno) -> bool {
        matches!(errno, Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP)
    }

    pub fn open(path: &Path) -> io::Result<Option<File>> {
        if !SUPPORTED.load(Ordering::Relaxed) {
            return Ok(None);
        }
        match rustix::fs::openat2(
            CWD,
            path,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::CACHED,
        ) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(Errno::AGAIN) => Ok(None),
            Err(errno) if unsupported(errno) => {
                SUPPORTED.store(false, Ordering::Relaxed);
                Ok(None)
            }
            Err(errno) => Err(errno.into()),
        }
    }

    pub fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<Option<usize>> {
        if !SUPPORTED.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let mut slices = [io::IoSliceMut::new(buf)];
        match rustix::io::preadv2(file, &mut slices, offset, ReadWriteFlags::NOWAIT) {
            Ok(n) => Ok(Some(n)),
            Err(Errno::AGAIN) => Ok(None),
            Err(errno) if unsupported(errno) => {
                SUPPORTED.store(false, Ordering::Relaxed);
                Ok(None)
            }
            Err(errno) => Err(errno.into()),
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::fs::File;
    use std::io;
    use std::path::Path;

    pub fn open(_path: &Path) -> io::Result<Option<File>> {
        Ok(None)
    }

    pub fn read_at(_file: &File, _buf: &mut [u8], _offset: u64) -> io::Result<Option<usize>> {
        Ok(None)
    }
}

/// Opens `path` read-only if its lookup needs no disk I/O; `None` if it would.
/// A missing file is an `Err` of kind `NotFound`, as with `File::open`.
pub fn open(path: &Path) -> io::Result<Option<File>> {
    imp::open(path)
}

/// Fills `buf` from `offset` if every byte is in the page cache; `None` if
/// any read would wait for the disk. A file shorter than `buf` is an error.
pub fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<Option<()>> {
    let mut done = 0;
    while done < buf.len() {
        match imp::read_at(file, &mut buf[done..], offset + done as u64)? {
            None => return Ok(None),
            Some(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("file ended after {} of {} bytes", done, buf.len()),
                ));
            }
            Some(n) => done += n,
        }
    }
    Ok(Some(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_just_written_is_opened_and_read_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, b"hello, cache").unwrap();
        let Some(file) = open(&path).unwrap() else {
            // A kernel without RESOLVE_CACHED: the caller falls back, as it must.
            return;
        };
        let mut buf = [0u8; 12];
        if read_exact_at(&file, &mut buf, 0).unwrap().is_some() {
            assert_eq!(&buf, b"hello, cache");
        }
        let mut long = [0u8; 20];
        assert!(!matches!(read_exact_at(&file, &mut long, 0), Ok(Some(()))));
        let missing = open(&dir.path().join("missing"));
        assert!(
            matches!(missing, Ok(None))
                || missing.is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
        );
    }
}
