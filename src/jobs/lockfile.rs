//! One server per SQLite file: an OS lock (`flock`) on `<database>.lock`, held for the process's life.
//!
//! Two servers on one file each put every `running` job back to `pending` at start and re-ran the other's
//! work. The kernel drops the lock when its process ends, however it ends, so a lock left by a killed
//! server never blocks the next start; the pid written into the file only names the holder in the refusal.

use std::{
    fs::{File, OpenOptions, TryLockError},
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

/// The held lock: released when dropped (or when the process dies).
#[derive(Debug)]
pub struct ServerLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{database} is in use by another mavera-triggers server (pid {pid}, lock file {lock}). Fix: stop that server first, or point DATABASE_URL at another file: one SQLite file serves one process (use Postgres for several replicas)")]
    Held {
        database: String,
        lock: String,
        pid: String,
    },
    #[error("cannot lock {lock}: {error}. Fix: check that the database's folder is writable")]
    Io { lock: String, error: std::io::Error },
}

impl ServerLock {
    /// Takes the lock of the database at `database`, or names the process that holds it.
    pub fn take(database: &Path) -> Result<Self, LockError> {
        let lock = lock_path(database);
        let io = |error| LockError::Io {
            lock: lock.display().to_string(),
            error,
        };
        if let Some(dir) = lock.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(io)?;
        // `flock` on Linux and macOS, `LockFileEx` on Windows: released by the kernel with the process.
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::Held {
                    database: database.display().to_string(),
                    lock: lock.display().to_string(),
                    pid: if pid.is_empty() { "unknown" } else { pid }.to_string(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

/// `data/mavera-triggers.db` → `data/mavera-triggers.db.lock`.
pub fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_file_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let held = ServerLock::take(&db).unwrap();
        let refused = ServerLock::take(&db).unwrap_err().to_string();
        assert!(refused.contains(&db.display().to_string()), "{refused}");
        assert!(
            refused.contains(&format!("pid {}", std::process::id())),
            "{refused}"
        );
        drop(held);
        ServerLock::take(&db).expect("free again once released");
    }

    #[test]
    fn a_lock_file_left_by_a_dead_process_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        std::fs::write(lock_path(&db), "4194303\n").unwrap();
        ServerLock::take(&db).expect("no process holds the lock");
        let pid = std::fs::read_to_string(lock_path(&db)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
    }
}
