//! What can go wrong between netwatch and dockerd, one line each.

use std::io;

/// An error talking to the Docker Engine API. `host` is the address netwatch
/// used (`DOCKER_HOST`, else `unix:///var/run/docker.sock`).
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach Docker at {host}: no such file; is dockerd running?")]
    SocketMissing { host: String },
    #[error(
        "cannot reach Docker at {host}: permission denied; run as root or join the docker group"
    )]
    PermissionDenied { host: String },
    #[error("cannot reach Docker at {host}: connection refused; is dockerd running?")]
    Refused { host: String },
    #[error("lost Docker at {host} during {what}: {source}")]
    Unreachable {
        host: String,
        what: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error(
        "DOCKER_HOST={host:?} is not supported: use unix:///path/to/docker.sock or tcp://host:port"
    )]
    UnsupportedHost { host: String },
    #[error("Docker at {host} answered {what} with HTTP {status}: {message}")]
    Api {
        host: String,
        what: String,
        status: u16,
        message: String,
    },
    #[error("Docker at {host} sent an answer to {what} that netwatch cannot read: {source}")]
    BadAnswer {
        host: String,
        what: String,
        #[source]
        source: bollard::errors::Error,
    },
}

impl DockerError {
    /// Classify a bollard error from the request `what` (e.g. `GET /networks`).
    pub(crate) fn from_bollard(
        host: &str,
        what: &str,
        error: bollard::errors::Error,
    ) -> DockerError {
        use bollard::errors::Error as B;
        let host = host.to_owned();
        match error {
            B::SocketNotFoundError(_) => DockerError::SocketMissing { host },
            B::DockerResponseServerError {
                status_code,
                message,
            } => DockerError::Api {
                host,
                what: what.to_owned(),
                status: status_code,
                message,
            },
            B::JsonDataError { .. } | B::JsonSerdeError { .. } | B::APIVersionParseError {} => {
                DockerError::BadAnswer {
                    host,
                    what: what.to_owned(),
                    source: error,
                }
            }
            // `IOError` is `#[error(transparent)]`: its source() skips the
            // io::Error itself.
            B::IOError { ref err } => classify(host, what, err.kind(), error),
            error => match io_kind(&error) {
                Some(kind) => classify(host, what, kind, error),
                None => DockerError::Unreachable {
                    host,
                    what: what.to_owned(),
                    source: error,
                },
            },
        }
    }

    /// Whether Docker said the object asked for does not exist (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, DockerError::Api { status: 404, .. })
    }
}

/// An error from connecting to the socket, by its I/O error kind.
fn classify(
    host: String,
    what: &str,
    kind: io::ErrorKind,
    error: bollard::errors::Error,
) -> DockerError {
    match kind {
        io::ErrorKind::NotFound => DockerError::SocketMissing { host },
        io::ErrorKind::PermissionDenied => DockerError::PermissionDenied { host },
        io::ErrorKind::ConnectionRefused => DockerError::Refused { host },
        _ => DockerError::Unreachable {
            host,
            what: what.to_owned(),
            source: error,
        },
    }
}

/// The kind of the first I/O error in `error`'s source chain: hyper and its
/// connectors wrap the socket's `connect(2)` error several layers deep.
fn io_kind(error: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        cause = current.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do() {
        let host = "unix:///var/run/docker.sock";
        let missing = DockerError::from_bollard(
            host,
            "GET /version",
            bollard::errors::Error::SocketNotFoundError("/var/run/docker.sock".into()),
        );
        assert_eq!(
            missing.to_string(),
            "cannot reach Docker at unix:///var/run/docker.sock: no such file; is dockerd running?"
        );
        let denied = DockerError::from_bollard(
            host,
            "GET /version",
            bollard::errors::Error::IOError {
                err: io::Error::from(io::ErrorKind::PermissionDenied),
            },
        );
        assert_eq!(
            denied.to_string(),
            "cannot reach Docker at unix:///var/run/docker.sock: permission denied; \
             run as root or join the docker group"
        );
        let api = DockerError::from_bollard(
            host,
            "GET /containers/x/json",
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message: "No such container: x".into(),
            },
        );
        assert!(api.is_not_found());
        assert_eq!(
            api.to_string(),
            "Docker at unix:///var/run/docker.sock answered GET /containers/x/json with HTTP 404: \
             No such container: x"
        );
    }
}
