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

fn respond(s: &mut TcpStream, status: &str, body: &str) {
    let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
}

fn serve(mut s: TcpStream, token: &str, coordinator: &Addr<Coordinator>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 4096];
    let mut req = Vec::new();
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&req);
    let mut lines = text.lines();
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or("/"));
    if !token.is_empty() {
        let ok = lines.any(|l| l.split_once(':').is_some_and(|(k, v)| k.eq_ignore_ascii_case("authorization") && v.trim() == format!("Bearer {token}")));
        if !ok {
            return respond(&mut s, "401 Unauthorized", "{\"error\": \"missing or wrong token\"}");
        }
    }
    if method != "POST" {
        return respond(&mut s, "405 Method Not Allowed", "{\"error\": \"use POST\"}");
    }
    match parse(path) {
        Some(cmd) => {
            let body = serde_json::json!({ "ok": true, "command": cmd }).to_string();
            coordinator.do_send(cmd);
            respond(&mut s, "200 OK", &body);
        }
        None => respond(&mut s, "404 Not Found", "{\"error\": \"unknown command: stop, evaluate, checkpoint, pause, resume, lr?value=X\"}"),
    }
}

/// Binds `addr` and serves commands on a thread until the process ends.
///
/// # Errors
/// When the address cannot be bound.
pub fn start(addr: SocketAddr, token: String, coordinator: Addr<Coordinator>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    std::thread::Builder::new().name("control-http".into()).spawn(move || {
        for s in listener.incoming().flatten() {
            serve(s, &token, &coordinator);
        }
    })?;
    Ok(())
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
