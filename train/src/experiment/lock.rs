//! An exclusive, non-blocking advisory lock on a file (`flock(2)`), held while a process
//! trains a cell. The kernel releases it when the file is closed, which includes the holder
//! being killed, so a SIGKILLed run never leaves a lock that blocks the next one. (On NFS,
//! Linux maps `flock` to byte-range locks the server arbitrates, so processes on several
//! machines sharing the folder exclude each other too.)

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct CellLock {
    file: File,
    path: PathBuf,
}

impl CellLock {
    /// Takes the lock on `path` (creating the file), or returns `None` at once when another
    /// open file description holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<CellLock>> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
        // For people looking at the folder: who holds it (the lock itself is the flock).
        file.set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Some(CellLock {
            file,
            path: path.to_path_buf(),
        }))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CellLock {
    fn drop(&mut self) {
        // Closing the file releases the lock as well; unlocking first makes the release not
        // depend on other descriptors of the same file staying open elsewhere in the process.
        // SAFETY: as in `try_acquire`.
        let _ = unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let a = CellLock::try_acquire(&p).unwrap().expect("free lock");
        assert_eq!(a.path(), p);
        // A second open file description, as another process would have.
        assert!(CellLock::try_acquire(&p).unwrap().is_none());
        drop(a);
        assert!(CellLock::try_acquire(&p).unwrap().is_some());
    }
}
