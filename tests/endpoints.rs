//! No client can stall an endpoint: `/metrics` and `[control]` answer every request while
//! hundreds of connections hang half-open or send garbage, and an oversized header is refused
//! without being read whole.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{bin, eventually, free_port, root, scrape, tiny_config, wait_bounded, KillOnDrop};

/// Opens `half` connections that send half a request and `garbage` that send random bytes,
/// and keeps them open.
fn hostile(port: u16, half: usize, garbage: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for i in 0..half + garbage {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { continue };
        if i < half {
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ");
        } else {
            let bytes: Vec<u8> = (0..512)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = s.write_all(&bytes);
        }
        held.push(s);
    }
    held
}

/// One request; the status code (0 when no answer came within the read timeout).
fn request(port: u16, head: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn endpoints_answer_every_request_while_hostile_clients_hold_connections() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(dir.path());
    let (mport, cport) = (free_port(), free_port());
    let mut child = KillOnDrop(Command::new(bin())
        .args(["train", cfg.to_str().unwrap()])
        .args(["--set", "train.max_steps=100000", "--set", "data.eval=[]", "--set", "train.log_every=1"])
        .args(["--set", &format!("metrics.listen=\"127.0.0.1:{mport}\""), "--set", &format!("control.listen=\"127.0.0.1:{cport}\"")])
        .args(["--set", &format!("run.out_dir=\"{}\"", dir.path().join("run").display())])
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    eventually(Duration::from_secs(60), "the metrics endpoint came up", || request_ok(mport));
    let steps = |port| scrape(port, "pretune_steps_total", &[]).unwrap_or(0.0);
    // Training has started (the series exists) before the clients arrive.
    eventually(Duration::from_secs(180), "a first training step", || (steps(mport) >= 1.0).then_some(()));
    let before = steps(mport);
    let held = [hostile(mport, 100, 200), hostile(cport, 100, 200)];
    assert!(held.iter().all(|h| h.len() == 300), "all hostile connections opened");
    // Every request is answered while 600 hostile connections are held: a server that waited
    // on one of them would leave these unanswered (each has a 10 s read timeout, a stall bound,
    // not a timing; how fast the answers come is a benchmark, in the README).
    for _ in 0..5 {
        let code = request(mport, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(code, 200, "a scrape was not answered with 600 hostile connections open");
        let code = request(cport, "GET /stop HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(code, 405, "the control endpoint answers (GET is refused)");
    }
    // A header of 8 MB is refused early: the server answers (431) or hangs up long before the
    // client could have sent it all.
    let mut s = TcpStream::connect(("127.0.0.1", mport)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nX-Big: ").unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0usize;
    while sent < 8 << 20 {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(sent < 8 << 20, "the server read an 8 MB header whole ({sent} bytes accepted)");
    // Training goes on with the hostile clients still connected (polled: a loaded CI machine
    // may take a while per step).
    eventually(Duration::from_secs(120), format!("training advanced past step {before} while the endpoints were under load"), || (steps(mport) > before).then_some(()));
    drop(held);
    // A learning rate that would wreck the weights is refused by the endpoint itself (a
    // client other than `pretune ctl` sends what it likes), and the run goes on.
    for bad in ["nan", "-1", "inf", "x"] {
        let code = request(cport, &format!("POST /lr?value={bad} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"));
        assert_eq!(code, 400, "lr={bad}");
    }
    let now = steps(mport);
    eventually(Duration::from_secs(120), "training went on after the refused learning rates", || (steps(mport) > now).then_some(()));
    let code = request(cport, "POST /stop HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(code, 200);
    assert!(wait_bounded(&mut child.0, Duration::from_secs(60)).success());
    let commands: Vec<_> = crate::util::records(&dir.path().join("run")).into_iter().filter(|r| matches!(r, pretune::actors::events::Record::Command(_))).collect();
    assert_eq!(commands.len(), 1, "only the stop reached the run: {commands:?}");
}

fn request_ok(port: u16) -> Option<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.contains("200").then_some(())
}
