//! A fake Docker Engine API on a unix socket that answers what a test tells
//! it to: the captured answers of a real dockerd, edited, or garbage.
//!
//! netwatch trusts dockerd to say which containers exist, but not to speak
//! well-formed JSON: a daemon mid-upgrade, a proxy in front of the socket or
//! a bug can send anything. Tests point `DOCKER_HOST` at this server to check
//! that every such answer ends in an error message, never a panic.
//!
//! Requests are matched on their path without the `/vX.Y` prefix netwatch
//! adds (`/networks`, `/containers/json`, `/containers/<id>/json`,
//! `/events`, `/version`). A path with no answer gets a 404 with Docker's
//! error body, as dockerd does for an unknown container.

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::net::{UnixListener, UnixStream},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

/// One answer of the fake daemon.
#[derive(Clone, Debug)]
pub enum Answer {
    /// A complete HTTP answer with this status and body (JSON or not).
    Body {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// Headers promising `promised` bytes, then only `body`, then the
    /// connection closes (a daemon that died mid-answer).
    Cut { promised: usize, body: Vec<u8> },
    /// A 200 with a chunked body that never ends and never says anything
    /// (an idle `/events` stream); closed when the server stops.
    Endless,
    /// The connection closes without a byte of answer.
    Hangup,
}

impl Answer {
    /// A 200 with a JSON body.
    pub fn json(body: impl Into<Vec<u8>>) -> Answer {
        Answer::Body {
            status: 200,
            content_type: "application/json",
            body: body.into(),
        }
    }

    /// A status with Docker's `{"message": ...}` error body.
    pub fn error(status: u16, message: &str) -> Answer {
        Answer::Body {
            status,
            content_type: "application/json",
            body: serde_json::json!({ "message": message })
                .to_string()
                .into_bytes(),
        }
    }
}

/// The answer set for each path, how many requests it has answered, and
/// whether the test set it (not a default of [`FakeDockerd::start`]).
type Answers = Arc<Mutex<HashMap<String, (Answer, usize, bool)>>>;

/// How many requests each path got.
type Counts = Arc<Mutex<HashMap<String, usize>>>;

/// The server; stops and removes its socket when dropped.
pub struct FakeDockerd {
    socket: PathBuf,
    answers: Answers,
    counts: Counts,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<UnixStream>>>,
    thread: Option<JoinHandle<()>>,
}

/// The captured answers of a real Docker 20.10 (see
/// `netwatch/src/docker/testdata/README.md`), by request path.
pub fn captured(name: &str) -> &'static str {
    match name {
        "version" => include_str!("../../netwatch/src/docker/testdata/version.json"),
        "networks" => include_str!("../../netwatch/src/docker/testdata/networks.json"),
        "containers" => include_str!("../../netwatch/src/docker/testdata/containers.json"),
        "container-app" => {
            include_str!("../../netwatch/src/docker/testdata/container-app.json")
        }
        other => panic!("no captured answer {other}"),
    }
}

impl FakeDockerd {
    /// Listens on a fresh socket under the temp directory. Until told
    /// otherwise it answers like an idle dockerd with no containers: the
    /// captured `/version` and `/networks`, an empty container list and an
    /// event stream that says nothing.
    pub fn start() -> FakeDockerd {
        let socket = std::env::temp_dir().join(format!(
            "netwatch-fake-dockerd-{}-{}.sock",
            std::process::id(),
            crate::docker::unique_name("d")
        ));
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).expect("bind the fake dockerd socket");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let answers: Answers = Arc::default();
        let counts: Counts = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let thread = {
            let (answers, counts, stop, open) =
                (answers.clone(), counts.clone(), stop.clone(), open.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (answers, counts, open) =
                                (answers.clone(), counts.clone(), open.clone());
                            std::thread::spawn(move || serve(stream, &answers, &counts, &open));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => panic!("fake dockerd accept: {e}"),
                    }
                }
            })
        };
        let fake = FakeDockerd {
            socket,
            answers,
            counts,
            stop,
            open,
            thread: Some(thread),
        };
        fake.set("/version", Answer::json(captured("version")), false);
        fake.set("/networks", Answer::json(captured("networks")), false);
        fake.set("/containers/json", Answer::json("[]"), false);
        fake.set("/events", Answer::Endless, false);
        fake
    }

    /// The `DOCKER_HOST` value that reaches this server.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Answers requests for `path` (without the `/vX.Y` prefix and query)
    /// with `answer` from now on.
    pub fn answer(&self, path: &str, answer: Answer) {
        self.set(path, answer, true);
    }

    fn set(&self, path: &str, answer: Answer, by_test: bool) {
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_owned(), (answer, 0, by_test));
    }

    /// How many requests the answer the test last set for `path` has
    /// answered: a test that sets a canned answer shows with it that the
    /// answer was served, not only that nothing went wrong. A default
    /// answer of [`FakeDockerd::start`] counts 0, so a canned answer set
    /// under a mistyped path cannot pass for served by the default that
    /// answered in its place.
    pub fn served(&self, path: &str) -> usize {
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .filter(|(_, _, by_test)| *by_test)
            .map_or(0, |(_, served, _)| *served)
    }
}

impl FakeDockerd {
    /// How many requests for `path` (as [`FakeDockerd::answer`] names it)
    /// arrived so far.
    pub fn requests(&self, path: &str) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for FakeDockerd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for stream in self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// `/v1.41/containers/json?all=false` → `/containers/json`.
fn route(target: &str) -> String {
    let path = target.split('?').next().unwrap_or_default();
    let unversioned = path
        .strip_prefix("/v")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(version, _)| version.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .map(|(_, rest)| format!("/{rest}"));
    unversioned.unwrap_or_else(|| path.to_owned())
}

/// Answers requests on one connection until the client or the answer ends it.
fn serve(stream: UnixStream, answers: &Answers, counts: &Counts, open: &Mutex<Vec<UnixStream>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut content_length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let target = request_line.split_whitespace().nth(1).unwrap_or("/");
        *counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(route(target))
            .or_default() += 1;
        let answer = answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&route(target))
            .map(|(answer, served, _)| {
                *served += 1;
                answer.clone()
            })
            .unwrap_or_else(|| Answer::error(404, &format!("page not found: {target}")));
        match answer {
            Answer::Body {
                status,
                content_type,
                body,
            } => {
                let head = format!(
                    "HTTP/1.1 {status} Fake\r\nContent-Type: {content_type}\r\n\
                     Api-Version: 1.41\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&body).is_err() {
                    return;
                }
            }
            Answer::Cut { promised, body } => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                     Content-Length: {promised}\r\n\r\n"
                );
                let _ = writer.write_all(head.as_bytes());
                let _ = writer.write_all(&body);
                let _ = writer.flush();
                let _ = writer.shutdown(std::net::Shutdown::Both);
                return;
            }
            Answer::Endless => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                            Transfer-Encoding: chunked\r\n\r\n";
                if writer.write_all(head.as_bytes()).is_ok()
                    && let Ok(kept) = writer.try_clone()
                {
                    open.lock().unwrap_or_else(|e| e.into_inner()).push(kept);
                }
                return;
            }
            Answer::Hangup => {
                let _ = writer.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn routes_drop_the_version_prefix_and_the_query() {
        assert_eq!(
            route("/v1.41/containers/json?all=false"),
            "/containers/json"
        );
        assert_eq!(route("/version"), "/version");
        assert_eq!(route("/v1.41/events?filters=x"), "/events");
        assert_eq!(route("/volumes/x"), "/volumes/x");
    }
}
