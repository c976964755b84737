//! No client can stall an endpoint: `/metrics` and `[control]` answer within a second while
//! hundreds of connections hang half-open or send garbage, and an oversized header is refused
//! without being read whole.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{bin, free_port, root, tiny_config, KillOnDrop};

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

/// One request; the status code and how long the answer took.
fn request(port: u16, head: &str) -> (u16, Duration) {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    (text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), t0.elapsed())
}

#[test]
fn endpoints_answer_within_a_second_while_hostile_clients_hold_connections() {
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
    let deadline = Instant::now() + Duration::from_secs(60);
    while request_ok(mport).is_none() {
        assert!(Instant::now() < deadline, "the metrics endpoint never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let steps = |port| -> f64 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.lines().find(|l| l.starts_with("pretune_steps_total")).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
    };
    // Training has started (the series exists) before anything is measured.
    let deadline = Instant::now() + Duration::from_secs(180);
    while steps(mport) < 1.0 {
        assert!(Instant::now() < deadline, "no training step within 180 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Step rate over 3 s without, then with, the hostile clients.
    let rate = |secs: f64| -> f64 {
        let (a, t0) = (steps(mport), Instant::now());
        std::thread::sleep(Duration::from_secs_f64(secs));
        (steps(mport) - a) / t0.elapsed().as_secs_f64()
    };
    let quiet = rate(3.0);
    let before = steps(mport);
    let held = [hostile(mport, 100, 200), hostile(cport, 100, 200)];
    let loaded = rate(3.0);
    // Printed, not asserted: timings do not go in tests (the test binary shares 2 cores with
    // other tests); the quiet-machine measurement is in the README's reliability section.
    eprintln!("steps/s: {quiet:.2} quiet, {loaded:.2} with 600 hostile connections");
    assert!(held.iter().all(|h| h.len() == 300), "all hostile connections opened");
    for _ in 0..5 {
        let (code, took) = request(mport, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(code, 200);
        assert!(took < Duration::from_secs(1), "a scrape took {took:?} with 600 hostile connections open");
        let (code, took) = request(cport, "GET /stop HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(code, 405, "the control endpoint answers (GET is refused)");
        assert!(took < Duration::from_secs(1), "control took {took:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A header of 8 MB is refused early: the server answers (431) or hangs up long before the
    // client could have sent it all.
    let t0 = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", mport)).unwrap();
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
    assert!(t0.elapsed() < Duration::from_secs(5));
    // Training goes on with the hostile clients still connected (polled: a loaded CI machine
    // may take a while per step).
    let deadline = Instant::now() + Duration::from_secs(120);
    while steps(mport) <= before {
        assert!(Instant::now() < deadline, "training did not advance past step {before} while the endpoints were under load");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(held);
    let (code, _) = request(cport, "POST /stop HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(code, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(Instant::now() < deadline, "the run did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn request_ok(port: u16) -> Option<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.contains("200").then_some(())
}
