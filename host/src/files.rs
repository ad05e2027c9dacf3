//! Reading files that come from outside (manifests, certName directories,
//! settings, plugins) without trusting them: regular files only (a FIFO
//! would block the reader forever, a device never end), a size cap checked
//! before and while reading, and the path named in every error.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: not found")]
    NotFound { path: PathBuf },
    #[error("{path}: not a regular file ({kind})")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path}: {size} bytes is more than the {max} accepted")]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("{path}: outside {root}; {hint}")]
    Outside {
        path: PathBuf,
        root: PathBuf,
        hint: &'static str,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl ReadError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::NotFound { .. })
    }
}

fn io(path: &Path, source: std::io::Error) -> ReadError {
    if source.kind() == std::io::ErrorKind::NotFound {
        ReadError::NotFound { path: path.into() }
    } else {
        ReadError::Io {
            path: path.into(),
            source,
        }
    }
}

fn kind(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else {
        "not a file"
    }
}

/// The bytes of the regular file at `path` (links followed), at most `max`.
pub fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
    // writer before the type could be checked.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| io(path, e))?;
    let meta = file.metadata().map_err(|e| io(path, e))?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular {
            path: path.into(),
            kind: kind(meta.file_type()),
        });
    }
    if meta.len() > max {
        return Err(ReadError::TooLarge {
            path: path.into(),
            size: meta.len(),
            max,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow while it is read: never more than the cap.
    File::take(file, max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io(path, e))?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge {
            path: path.into(),
            size: bytes.len() as u64,
            max,
        });
    }
    Ok(bytes)
}

/// [`read_capped`] as UTF-8 text.
pub fn read_text_capped(path: &Path, max: u64) -> Result<String, ReadError> {
    String::from_utf8(read_capped(path, max)?).map_err(|e| ReadError::Io {
        path: path.into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
    })
}

/// `relative` joined to `root`, refused when it leaves `root`: an absolute
/// path, `..`, or a link that resolves outside. `hint` says how to allow it.
pub fn confined(root: &Path, relative: &str, hint: &'static str) -> Result<PathBuf, ReadError> {
    let joined = root.join(relative);
    let outside = || ReadError::Outside {
        path: joined.clone(),
        root: root.into(),
        hint,
    };
    let plain = Path::new(relative)
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
    if !plain {
        return Err(outside());
    }
    let real_root = root.canonicalize().map_err(|e| io(root, e))?;
    match joined.canonicalize() {
        Ok(real) if real.starts_with(&real_root) => Ok(joined),
        Ok(_) => Err(outside()),
        // Missing: nothing to follow; the caller reports it as missing.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(joined),
        Err(e) => Err(io(&joined, e)),
    }
}

/// Writes beside `path` (a dotfile, which plugin directory scans skip), then
/// renames: a watcher never sees half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_cap_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.crt");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read_capped(&file, 10).unwrap(), b"0123456789");
        let err = read_capped(&file, 9).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: 10 bytes is more than the 9 accepted", file.display())
        );
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        // Returns at once (no writer needed), naming the kind.
        let err = read_capped(&fifo, 1 << 20).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: not a regular file (a FIFO)", fifo.display())
        );
        let err = read_capped(dir.path(), 1 << 20).unwrap_err();
        assert!(err.to_string().ends_with("not a regular file (a directory)"), "{err}");
        assert!(read_capped(&dir.path().join("nope"), 1).unwrap_err().is_not_found());
        assert!(
            read_capped(Path::new("/dev/zero"), 1 << 20).is_err(),
            "a device never ends"
        );
    }

    #[test]
    fn a_relative_path_may_not_leave_its_root() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("manifests");
        std::fs::create_dir_all(root.join("certs")).unwrap();
        std::fs::create_dir_all(base.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(base.path().join("elsewhere"), root.join("escape")).unwrap();
        std::os::unix::fs::symlink("certs", root.join("alias")).unwrap();
        assert_eq!(confined(&root, "certs", "h").unwrap(), root.join("certs"));
        assert_eq!(
            confined(&root, "alias", "h").unwrap(),
            root.join("alias"),
            "a link inside stays inside"
        );
        assert_eq!(confined(&root, "missing", "h").unwrap(), root.join("missing"));
        for bad in ["../elsewhere", "/etc", "certs/../../elsewhere", "escape"] {
            let err = confined(&root, bad, "set --flag").unwrap_err();
            assert!(matches!(err, ReadError::Outside { .. }), "{bad}: {err}");
            assert!(err.to_string().ends_with("; set --flag"), "{err}");
        }
    }
}
