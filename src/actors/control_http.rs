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

/// Parses a request path into a command.
pub fn parse(path: &str) -> Option<Command> {
    let (p, query) = path.split_once('?').unwrap_or((path, ""));
    match p {
        "/stop" => Some(Command::Stop),
        "/evaluate" => Some(Command::EvaluateNow),
        "/checkpoint" => Some(Command::CheckpointNow),
        "/pause" => Some(Command::Pause),
        "/resume" => Some(Command::Resume),
        "/lr" => query.split('&').find_map(|kv| kv.strip_prefix("value=")).and_then(|v| v.parse().ok()).map(|lr| Command::SetLearningRate { lr }),
        _ => None,
    }
}

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
        None => json(404, "{\"error\": \"unknown command: stop, evaluate, checkpoint, pause, resume, lr?value=X\"}".into()),
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

/// `pretune ctl`: sends one command and returns the status line and body.
///
/// # Errors
/// Connection errors.
pub fn send(addr: &str, command: &str, value: Option<&str>, token: Option<&str>) -> std::io::Result<(u16, String)> {
    let path = match (command, value) {
        ("lr", Some(v)) => format!("/lr?value={v}"),
        (c, _) => format!("/{c}"),
    };
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
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
    }
}
