//! Connecting to dockerd: `DOCKER_HOST` (else the default unix socket), API
//! version negotiation, and one-line errors.

use bollard::Docker;

use super::DockerError;

/// Where dockerd listens unless `DOCKER_HOST` says otherwise.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// A request that takes longer than this fails: dockerd is stuck.
const TIMEOUT_SECS: u64 = 30;

/// A connection to the Docker Engine API, at the highest API version both
/// bollard and dockerd speak (1.41 on Docker 20.10).
#[derive(Clone, Debug)]
pub struct Client {
    docker: Docker,
    host: String,
    api_version: String,
    engine_version: String,
}

impl Client {
    /// Connects to `DOCKER_HOST`, else [`DEFAULT_HOST`], and negotiates the
    /// API version.
    ///
    /// # Errors
    ///
    /// [`DockerError::SocketMissing`], [`DockerError::PermissionDenied`],
    /// [`DockerError::Refused`] and [`DockerError::Unreachable`] when dockerd
    /// cannot be reached; [`DockerError::UnsupportedHost`] for a
    /// `DOCKER_HOST` that is neither `unix://` nor `tcp://`/`http://`.
    pub async fn connect() -> Result<Client, DockerError> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_owned());
        Client::connect_to(&host).await
    }

    /// Connects to `host` (`unix:///path` or `tcp://host:port`) and
    /// negotiates the API version.
    ///
    /// # Errors
    ///
    /// As [`Client::connect`].
    pub async fn connect_to(host: &str) -> Result<Client, DockerError> {
        let fail = |error| DockerError::from_bollard(host, "GET /version", error);
        let version = bollard::API_DEFAULT_VERSION;
        let docker = if host.starts_with("unix://") {
            Docker::connect_with_unix(host, TIMEOUT_SECS, version).map_err(fail)?
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_http(host, TIMEOUT_SECS, version).map_err(fail)?
        } else {
            return Err(DockerError::UnsupportedHost {
                host: host.to_owned(),
            });
        };
        // bollard 0.21 sends every request without a `/vX.Y` prefix, so dockerd
        // would answer in its own newest dialect. Ask `/version` (which every
        // version serves unprefixed), settle on the highest version both
        // sides speak, and prefix every later request with it: Docker 20.10
        // answers as API 1.41, a newer dockerd in the dialect bollard's
        // models describe.
        let server = docker.version().await.map_err(fail)?;
        let server_api = server
            .api_version
            .as_deref()
            .and_then(parse_api_version)
            .ok_or_else(|| DockerError::BadAnswer {
                host: host.to_owned(),
                what: "GET /version".to_owned(),
                source: bollard::errors::Error::APIVersionParseError {},
            })?;
        let (major, minor) = server_api.min((version.major_version, version.minor_version));
        let docker = docker.with_request_modifier(move |mut request| {
            if let Some(uri) = versioned(request.uri(), major, minor) {
                *request.uri_mut() = uri;
            }
            request
        });
        Ok(Client {
            docker,
            host: host.to_owned(),
            api_version: format!("{major}.{minor}"),
            engine_version: server.version.unwrap_or_else(|| "unknown".to_owned()),
        })
    }

    /// The bollard handle, for requests this module does not wrap.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The address connected to, e.g. `unix:///var/run/docker.sock`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The negotiated API version, e.g. `1.41`.
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// dockerd's own version, e.g. `20.10.24+dfsg1`.
    pub fn engine_version(&self) -> &str {
        &self.engine_version
    }

    /// Turns a bollard error from request `what` into a [`DockerError`].
    pub(crate) fn error(&self, what: &str, error: bollard::errors::Error) -> DockerError {
        DockerError::from_bollard(&self.host, what, error)
    }
}

/// `"1.41"` → `(1, 41)`.
fn parse_api_version(text: &str) -> Option<(usize, usize)> {
    let (major, minor) = text.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// `uri` with `/v{major}.{minor}` in front of its path, unless it has a
/// version already (requests built by hand).
fn versioned<U: std::str::FromStr>(
    uri: &impl std::fmt::Display,
    major: usize,
    minor: usize,
) -> Option<U> {
    let text = uri.to_string();
    let scheme_end = text.find("://")? + 3;
    let path_start = scheme_end + text[scheme_end..].find('/')?;
    let path = &text[path_start..];
    if path.starts_with("/v1.") {
        return None;
    }
    format!("{}/v{major}.{minor}{path}", &text[..path_start])
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_parse() {
        assert_eq!(parse_api_version("1.41"), Some((1, 41)));
        assert_eq!(parse_api_version("1.53\n"), Some((1, 53)));
        assert_eq!(parse_api_version("141"), None);
        assert!((1, 41) < (1, 53) && (1, 9) < (1, 41));
    }

    #[test]
    fn requests_get_the_version_prefix() {
        let uri = "unix://2f7661722f72756e2f646f636b65722e736f636b/networks?filters=%7B%7D";
        let prefixed: String = versioned(&uri, 1, 41).unwrap();
        assert_eq!(
            prefixed,
            "unix://2f7661722f72756e2f646f636b65722e736f636b/v1.41/networks?filters=%7B%7D"
        );
        assert_eq!(versioned::<String>(&prefixed, 1, 41), None);
        let tcp: String = versioned(&"http://127.0.0.1:2375/containers/json", 1, 53).unwrap();
        assert_eq!(tcp, "http://127.0.0.1:2375/v1.53/containers/json");
    }
}
