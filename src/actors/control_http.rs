//! The live-control endpoint: `POST /stop`, `/evaluate`, `/checkpoint`, `/pause`, `/resume`,
//! `/lr?value=X` on `control.listen`, forwarded to the Coordinator as [`Command`]s. With a
//! token configured (required off loopback), requests without `Authorization: Bearer TOKEN`
//! get 401.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;


use actix::Addr;

use super::coordinator::Coordinator;
use super::events::Command;

/// Parses a request path into a command: `None` for an unknown path or a learning rate that
/// is not a finite number `>= 0` (a NaN or negative rate would wreck the weights at the next
/// update, with the run going on as if all were well).
pub fn parse(path: &str) -> Option<Command> {
    let (p, query) = path.split_once('?').unwrap_or((path, ""));
    match p {
        "/stop" => Some(Command::Stop),
        "/evaluate" => Some(Command::EvaluateNow),
        "/checkpoint" => Some(Command::CheckpointNow),
        "/pause" => Some(Command::Pause),
        "/resume" => Some(Command::Resume),
        "/lr" => query.split('&').find_map(|kv| kv.strip_prefix("value=")).and_then(learning_rate).map(|lr| Command::SetLearningRate { lr }),
        _ => None,
    }
}

/// A learning rate a run can take: finite and not negative.
fn learning_rate(v: &str) -> Option<f64> {
    v.parse::<f64>().ok().filter(|lr| lr.is_finite() && *lr >= 0.0)
}

/// What the endpoint answers to a path it does not take.
const USAGE: &str = "stop, evaluate, checkpoint, pause, resume, lr?value=X (a finite learning rate >= 0)";

/// Answers one request: the token rule first, then `POST` and a known command.
pub fn answer(req: &crate::http::Request, token: &str, coordinator: &Addr<Coordinator>) -> crate::http::Response {
    let json = |status: u16, body: String| crate::http::Response::new(status, "application/json", body);
    if !token.is_empty() && req.authorization.as_deref().map(str::trim) != Some(format!("Bearer {token}").as_str()) {
        return json(401, "{\"error\": \"missing or wrong token\"}".into());
    }
    if req.method != "POST" {
        return json(405, "{\"error\": \"use POST\"}".into());
    }
    match parse(&req.target) {
        Some(cmd) => {
            let body = serde_json::json!({ "ok": true, "command": cmd }).to_string();
            coordinator.do_send(cmd);
            json(200, body)
        }
        None if req.target.split('?').next() == Some("/lr") => json(400, serde_json::json!({ "error": format!("bad learning rate: {USAGE}") }).to_string()),
        None => json(404, serde_json::json!({ "error": format!("unknown command: {USAGE}") }).to_string()),
    }
}

/// Binds `addr` and serves commands (through [`crate::http`]) until the process ends.
///
/// # Errors
/// When the address cannot be bound.
pub fn start(addr: SocketAddr, token: String, coordinator: Addr<Coordinator>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    crate::http::serve(listener, "control-http", std::sync::Arc::new(move |req: &crate::http::Request| answer(req, &token, &coordinator)))
}

/// Why `pretune ctl` did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Not a command the endpoint takes, or `lr` without a usable value: found before any
    /// connection is made.
    #[error("`{0}`: the commands are stop, evaluate, checkpoint, pause, resume and lr VALUE (a finite learning rate >= 0)")]
    Usage(String),
    /// Nothing listens there.
    #[error("cannot reach {addr}")]
    Connect {
        /// The endpoint.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Connected, but no answer came in time: something else listens there, or the process
    /// is stopped.
    #[error("no answer from {addr} within {:.0} s: is it a run's control endpoint (control.listen)?", within.as_secs_f64())]
    Silent {
        /// The endpoint.
        addr: String,
        /// How long it was given.
        within: Duration,
    },
    /// The connection broke, or the answer was not HTTP.
    #[error("no usable answer from {addr}")]
    Broken {
        /// The endpoint.
        addr: String,
        /// The OS error, or what was wrong with the answer.
        source: std::io::Error,
    },
}

impl SendError {
    /// Whether the command line was wrong (exit 2), not the endpoint.
    pub fn is_usage(&self) -> bool {
        matches!(self, SendError::Usage(_))
    }
}

/// How long `pretune ctl` waits for an answer; the endpoint answers at once (it forwards the
/// command and does not wait for the run).
const REPLY_WITHIN: Duration = Duration::from_secs(10);

/// `pretune ctl`: sends one command and returns the status code and body.
///
/// # Errors
/// [`SendError`]: a command the endpoint does not take (checked first, without connecting),
/// nothing listening, no answer in time, an answer that is not HTTP.
pub fn send(addr: &str, command: &str, value: Option<&str>, token: Option<&str>) -> Result<(u16, String), SendError> {
    send_within(addr, command, value, token, REPLY_WITHIN)
}

fn send_within(addr: &str, command: &str, value: Option<&str>, token: Option<&str>, within: Duration) -> Result<(u16, String), SendError> {
    let path = match (command, value) {
        ("lr", Some(v)) => format!("/lr?value={v}"),
        (c, None) => format!("/{c}"),
        (c, Some(v)) => return Err(SendError::Usage(format!("{c} {v}"))),
    };
    if parse(&path).is_none() {
        return Err(SendError::Usage(value.map_or_else(|| command.to_owned(), |v| format!("{command} {v}"))));
    }
    let broken = |source| SendError::Broken { addr: addr.to_owned(), source };
    let mut s = TcpStream::connect(addr).map_err(|source| SendError::Connect { addr: addr.to_owned(), source })?;
    s.set_read_timeout(Some(within)).map_err(broken)?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n").map_err(broken)?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|source| match source.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => SendError::Silent { addr: addr.to_owned(), within },
        _ => broken(source),
    })?;
    let code = out.strip_prefix("HTTP/1.").and_then(|r| r.split_whitespace().nth(1)).and_then(|c| c.parse().ok());
    let code = code.ok_or_else(|| broken(std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer")))?;
    Ok((code, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_commands() {
        assert_eq!(parse("/stop"), Some(Command::Stop));
        assert_eq!(parse("/lr?value=0.001"), Some(Command::SetLearningRate { lr: 0.001 }));
        assert_eq!(parse("/lr"), None);
        assert_eq!(parse("/nope"), None);
        for bad in ["nan", "NaN", "inf", "-1e-4", "-0.5", "fast", ""] {
            assert_eq!(parse(&format!("/lr?value={bad}")), None, "{bad}");
        }
        assert_eq!(parse("/lr?value=0"), Some(Command::SetLearningRate { lr: 0.0 }), "0 holds the weights still");
    }

    /// What the command line gets wrong is found before connecting (port 9, discard, is not
    /// listened on here: a connection attempt would be a Connect error, not Usage); an answer
    /// that never comes is `Silent`, one that is not HTTP `Broken`.
    #[test]
    fn bad_commands_fail_before_connecting_and_silent_peers_are_named() {
        for (c, v) in [("frobnicate", None), ("lr", None), ("lr", Some("nan")), ("lr", Some("-1")), ("stop", Some("now"))] {
            let e = send("127.0.0.1:9", c, v, None).unwrap_err();
            assert!(e.is_usage(), "{c} {v:?}: {e}");
        }
        let quiet = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = quiet.local_addr().unwrap().to_string();
        let talker = TcpListener::bind("127.0.0.1:0").unwrap();
        let talker_addr = talker.local_addr().unwrap().to_string();
        let t = std::thread::spawn(move || {
            let (mut c, _) = talker.accept().unwrap();
            let mut buf = [0u8; 256];
            let _ = c.read(&mut buf);
            c.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").unwrap();
        });
        assert!(matches!(send(&talker_addr, "stop", None, None), Err(SendError::Broken { .. })));
        t.join().unwrap();
        // The quiet listener accepts (the kernel's backlog) and never answers.
        let e = send_within(&addr, "stop", None, None, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, SendError::Silent { .. }), "{e}");
        drop(quiet);
    }
}
