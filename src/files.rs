//! What every module that touches files shares: an I/O error that names its path, and a
//! file's checksum.
//!
//! `std::io::Error` does not say which file. One type keeps the message the same everywhere
//! (`<path>: <what the OS said>` through the cause chain) instead of an `Io { path, source }`
//! variant per error enum.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// An I/O error and the path it happened on. Its cause is the `std::io::Error`.
#[derive(Debug, thiserror::Error)]
#[error("{}", path.display())]
pub struct FileError {
    /// The file or folder the operation was on.
    pub path: PathBuf,
    /// What the file system said.
    #[source]
    pub source: std::io::Error,
}

impl FileError {
    /// Attaches `path` to an I/O error, for `map_err`: `fs::read(p).map_err(FileError::at(p))?`.
    /// `?` then converts it into the caller's error enum (each has an `Io(FileError)` variant).
    pub fn at(path: &Path) -> impl Fn(std::io::Error) -> FileError + '_ {
        move |source| FileError { path: path.to_owned(), source }
    }
}

/// SHA-256 of a file's bytes, hex; read in 1 MiB blocks (checkpoints and prepared datasets
/// hash files of gigabytes).
///
/// # Errors
/// [`FileError`] when the file cannot be opened or read.
pub fn sha256_file(path: &Path) -> Result<String, FileError> {
    let mut f = File::open(path).map_err(FileError::at(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(FileError::at(path))?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_names_the_path_then_the_os_error() {
        let e = FileError::at(Path::new("/no/such/file"))(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(crate::error_chain(&e), "/no/such/file: entity not found");
        assert_eq!(e.source.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn sha256_of_a_file_matches_the_known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(sha256_file(&dir.path().join("missing")).is_err());
    }
}
