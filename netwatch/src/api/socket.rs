//! The API's unix socket file: created root-only (0600), or 0660 with a
//! group when the agent is given `--api-group`; a stale socket left by a
//! killed agent is replaced, a live one is never taken over; the file is
//! removed when the server stops (only if it is still the one this server
//! created).
//!
//! The socket is bound under a umask of 0177, so there is no moment when
//! it exists with wider permissions than 0600 (connecting to a unix socket
//! needs write permission on it); the group and 0660 are set after.

use std::{
    io,
    os::unix::{
        fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
};

use nix::{
    sys::stat::{Mode, umask},
    unistd::{Gid, Group, chown},
};

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(
        "unknown group `{0}` (--api-group): name an existing group (see /etc/group) or create it with `groupadd {0}`"
    )]
    UnknownGroup(String),
    #[error("cannot look up group `{name}` (--api-group): {source}")]
    GroupLookup {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error(
        "another process already serves at {0}: stop it, or give this agent another --api-socket"
    )]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket: move it away, or give the agent another --api-socket")]
    NotASocket(PathBuf),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The socket file, removed on drop if it is still the one bound here.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    identity: (u64, u64),
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && (meta.dev(), meta.ino()) == self.identity
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A bound, listening socket and its file.
#[derive(Debug)]
pub struct BoundSocket {
    pub listener: UnixListener,
    pub file: SocketFile,
    /// The mode the file has (0600 or 0660).
    pub mode: u32,
    /// The group given access, if any.
    pub group: Option<String>,
}

/// Resolves a group name.
///
/// # Errors
/// No such group, or the group database cannot be read.
pub fn resolve_group(name: &str) -> Result<Gid, SocketError> {
    match Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid),
        Ok(None) => Err(SocketError::UnknownGroup(name.to_string())),
        Err(source) => Err(SocketError::GroupLookup {
            name: name.to_string(),
            source,
        }),
    }
}

/// Restores the process umask when dropped.
struct UmaskGuard(Mode);

impl Drop for UmaskGuard {
    fn drop(&mut self) {
        umask(self.0);
    }
}

/// Binds the socket at `path`: 0600 root-only, or 0660 for `group`.
///
/// # Errors
/// Unknown group, a live server already at `path`, something that is not
/// a socket there, or the file cannot be created or given its mode.
pub fn bind(path: &Path, group: Option<&str>) -> Result<BoundSocket, SocketError> {
    let gid = group.map(resolve_group).transpose()?;
    let io_error = |what: &'static str| {
        move |source: io::Error| SocketError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_error("create the directory of"))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse(path.to_path_buf()));
            }
            // Nobody listens: left by an agent that was killed.
            std::fs::remove_file(path).map_err(io_error("remove the stale socket"))?;
        }
        Ok(_) => return Err(SocketError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("look at")(e)),
    }
    let listener = {
        // The umask is process-wide: another thread creating a file in
        // this instant gets a stricter mode, never a wider one.
        let _restore = UmaskGuard(umask(Mode::from_bits_truncate(0o177)));
        UnixListener::bind(path).map_err(io_error("create the socket"))?
    };
    let meta = std::fs::symlink_metadata(path).map_err(io_error("look at"))?;
    let file = SocketFile {
        path: path.to_path_buf(),
        identity: (meta.dev(), meta.ino()),
    };
    let mode = if let Some(gid) = gid {
        chown(path, None, Some(gid))
            .map_err(|e| io_error("give the group to")(io::Error::from(e)))?;
        0o660
    } else {
        0o600
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_error("set the mode of"))?;
    Ok(BoundSocket {
        listener,
        file,
        mode,
        group: group.map(String::from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "netwatch-socket-test-{}-{name}",
            std::process::id()
        ))
    }

    #[test]
    fn the_socket_is_0600_and_removed_on_drop_a_stale_one_is_replaced() {
        let dir = temp("a");
        let path = dir.join("api.sock");
        let bound = bind(&path, None).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(matches!(bind(&path, None), Err(SocketError::InUse(_))));
        // A killed server leaves its file; nobody listens on it.
        std::mem::forget(bound.file);
        drop(bound.listener);
        let again = bind(&path, None).unwrap();
        assert!(path.exists());
        drop(again);
        assert!(!path.exists(), "removed when the server stops");
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(bind(&path, None), Err(SocketError::NotASocket(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unknown_group_is_refused_before_anything_is_created() {
        let dir = temp("b");
        let e = bind(&dir.join("api.sock"), Some("nwtest-no-such-group")).unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown group `nwtest-no-such-group`"),
            "{e}"
        );
        assert!(!dir.exists());
    }
}
