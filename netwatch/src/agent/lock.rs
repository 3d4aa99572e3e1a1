//! One agent per host: an exclusive `flock` on a file under /run/netwatch.
//! The kernel drops the lock when the process dies, even by `kill -9`, so a
//! stale lock file never blocks a restart.

use std::{
    fs::File,
    io,
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};

/// Where the agent keeps its lock and status file.
pub fn run_dir() -> PathBuf {
    PathBuf::from("/run/netwatch")
}

fn lock_path(dir: &Path) -> PathBuf {
    dir.join("agent.lock")
}

/// Held for as long as the agent runs.
#[derive(Debug)]
pub struct AgentLock(#[expect(dead_code, reason = "held for its Drop, which unlocks")] Flock<File>);

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another netwatch agent is already running (it holds {0}); stop it first")]
    Held(PathBuf),
    #[error("cannot open {path}: {source} (the agent needs root)")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Takes the agent lock in `dir` (normally [`run_dir`]) without waiting.
///
/// # Errors
/// Another agent holds it, or the lock file cannot be created.
pub fn acquire(dir: &Path) -> Result<AgentLock, LockError> {
    let path = lock_path(dir);
    let open = || -> io::Result<File> {
        std::fs::create_dir_all(dir)?;
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
    };
    let file = open().map_err(|source| LockError::Open {
        path: path.clone(),
        source,
    })?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map(AgentLock)
        .map_err(|_| LockError::Held(path))
}

/// Whether an agent holds the lock in `dir` right now.
pub fn agent_running(dir: &Path) -> bool {
    let Ok(file) = File::open(lock_path(dir)) else {
        return false;
    };
    Flock::lock(file, FlockArg::LockSharedNonblock).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_agent_is_refused_until_the_first_lets_go() {
        let dir = std::env::temp_dir().join(format!("netwatch-lock-test-{}", std::process::id()));
        assert!(!agent_running(&dir));
        let first = acquire(&dir).expect("first agent takes the lock");
        assert!(agent_running(&dir));
        let second = acquire(&dir).unwrap_err();
        assert!(second.to_string().contains("already running"), "{second}");
        drop(first);
        assert!(!agent_running(&dir));
        let _again = acquire(&dir).expect("the lock is free again");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
