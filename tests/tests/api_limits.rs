//! What the daemon's API holds for its clients, bounded: a body of 1 MB or more is Batch's
//! 413 `RequestBodyTooLarge`; idle and slow connections are closed after the header
//! timeout; past the connection limit a client gets 503 `ServerBusy`; after a burst of
//! requests and 2,000 idle connections the agent's memory returns near its idle figure.

use berth_tests::agent::Agent;
use berth_tests::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

#[test]
fn a_body_of_1_mb_or_more_gets_batchs_413() {
    let n = TestNode::new("apibody");
    let a = Agent::start(&n);
    // Valid JSON padded with spaces to exactly `len` bytes.
    let padded = |v: Value, len: usize| {
        let mut b = v.to_string().into_bytes();
        b.resize(len, b' ');
        b
    };
    let job = |id: &str, len| padded(json!({"id": id}), len);
    let (st, b) = a.raw(
        "POST",
        "/jobs",
        "application/json",
        &job("justunder", (1 << 20) - 1),
    );
    assert_eq!(st, 201, "a body under 1 MB is taken: {b}");
    for path in [
        "/jobs",
        "/jobs/justunder/tasks",
        "/jobs/justunder/addtaskcollection",
    ] {
        for len in [8 << 20, (1 << 20) + 1, 1 << 20] {
            let (st, b) = a.raw("POST", path, "application/json", &job("big", len));
            assert_eq!(st, 413, "{path} {len}: {b}");
            let v: Value = serde_json::from_str(&b)
                .unwrap_or_else(|e| panic!("{path} {len}: not Batch's JSON body ({e}): {b:?}"));
            assert_eq!(v["code"], "RequestBodyTooLarge", "{b}");
            assert_eq!(v["message"]["lang"], "en-US", "{b}");
            let text = v["message"]["value"].as_str().unwrap();
            assert!(
                text.contains("1048576"),
                "the message says the limit: {text}"
            );
        }
    }
    assert_eq!(a.req("GET", "/jobs/big", None).0, 404, "nothing was added");
    assert_eq!(a.term(), Some(0));
}

/// The soft limit on open files, which the 2,000 client connections need.
fn open_files_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Whether the server closed `s` (end of file) within `limit`; what it sent first is
/// returned with the answer.
fn closed_by_server(s: &mut UnixStream, limit: Duration) -> (bool, String) {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = vec![];
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (true, String::from_utf8_lossy(&got).into()),
            Ok(k) => got.extend_from_slice(&buf[..k]),
            // A reset is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (true, String::from_utf8_lossy(&got).into())
            }
            Err(_) => return (false, String::from_utf8_lossy(&got).into()),
        }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// What one wave of idle connections came to.
struct Wave {
    served: usize,
    busy: usize,
    /// Served connections the agent had not closed 20 s after they were opened.
    lingering: usize,
    /// The agent's RSS (KiB) and open files while they were held.
    held_kib: u64,
    held_fds: usize,
}

/// Opens `want` connections and leaves them idle: a third send nothing, a third half a
/// request head, a third one whole keep-alive request. Then sees which were answered
/// 503 at once and whether the agent closed the others.
fn wave(a: &Agent, want: usize) -> Wave {
    let pid = a.child.id();
    let t0 = Instant::now();
    let mut conns = Vec::with_capacity(want);
    for i in 0..want {
        let mut s = UnixStream::connect(&a.sock).unwrap();
        // A refused connection may be closed before this is written.
        let head: &[u8] = match i % 3 {
            0 => b"",
            1 => b"GET /node HTTP/1.1\r\nHost: berth\r\n",
            _ => b"GET /node HTTP/1.1\r\nHost: berth\r\n\r\n",
        };
        if s.write_all(head).is_err() {
            assert!(i >= 256, "connection {i} was closed at once");
        }
        conns.push(s);
    }
    std::thread::sleep(Duration::from_secs(1));
    let (held_kib, _) = memory_kib(pid);
    let held_fds = open_fds(pid);
    // Those past the limit were answered 503 and closed at once.
    let mut busy = 0;
    let mut open = vec![];
    for mut s in conns {
        let (closed, said) = closed_by_server(&mut s, Duration::from_millis(20));
        if closed && said.contains(" 503 ") {
            assert!(said.contains("\"ServerBusy\""), "{said}");
            assert!(
                said.to_ascii_lowercase().contains("retry-after: "),
                "{said}"
            );
            busy += 1;
        } else {
            assert!(!closed, "closed without 503: {said:?}");
            open.push(s);
        }
    }
    // The rest are closed after the header timeout (10 s) from their last request.
    let mut lingering = 0;
    for s in &mut open {
        let left = Duration::from_secs(20).saturating_sub(t0.elapsed());
        if !closed_by_server(s, left.max(Duration::from_millis(10))).0 {
            lingering += 1;
        }
    }
    eprintln!(
        "{want} connections: {} served, {busy} answered 503, {lingering} still open {:.1?} after opening",
        open.len(),
        t0.elapsed()
    );
    Wave {
        served: open.len(),
        busy,
        lingering,
        held_kib,
        held_fds,
    }
}

/// A burst of 200 requests, then twice 2,000 connections opened and left idle. Those
/// past the connection limit get 503 `ServerBusy` at once; the agent closes every other
/// one after its header timeout; its open files come back down and its memory near its
/// idle figure, after either wave.
#[test]
fn idle_connections_are_bounded_and_memory_returns() {
    let want = 2000;
    assert!(
        open_files_limit() >= want as u64 + 200,
        "this test holds {want} connections: raise the open-files limit (ulimit -n)"
    );
    let n = TestNode::new("apiconns");
    let a = Agent::start(&n);
    let pid = a.child.id();
    for i in 0..20 {
        assert_eq!(a.req("GET", "/node", None).0, 200);
        assert_eq!(a.req("GET", &format!("/jobs/w{i}"), None).0, 404);
    }
    std::thread::sleep(Duration::from_secs(1));
    let (idle, _) = memory_kib(pid);

    // The burst: 8 clients, 25 requests each.
    let sock = a.sock.clone();
    let burst: Vec<_> = (0..8)
        .map(|c| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let mut s = UnixStream::connect(&sock).unwrap();
                    let body = json!({"id": format!("b{c}x{i}")}).to_string();
                    write!(s, "POST /jobs?api-version=2024-07-01.20.0 HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
                    let mut out = String::new();
                    s.read_to_string(&mut out).unwrap();
                    assert!(out.starts_with("HTTP/1.0 201"), "{out}");
                }
            })
        })
        .collect();
    burst.into_iter().for_each(|t| t.join().unwrap());
    let (after_burst, _) = memory_kib(pid);

    let first = wave(&a, want);
    std::thread::sleep(Duration::from_secs(2));
    let (after_first, _) = memory_kib(pid);
    let second = wave(&a, want);
    std::thread::sleep(Duration::from_secs(2));
    let (after_second, peak) = memory_kib(pid);
    let fds_after = open_fds(pid);
    eprintln!(
        "RSS idle {:.1} MiB, after 200 requests {:.1} MiB; with {want} idle connections {:.1} MiB, after they closed {:.1} MiB; again {:.1} MiB, after {:.1} MiB; peak {:.1} MiB; agent fds {} and {} -> {fds_after}",
        mib(idle),
        mib(after_burst),
        mib(first.held_kib),
        mib(after_first),
        mib(second.held_kib),
        mib(after_second),
        mib(peak),
        first.held_fds,
        second.held_fds,
    );
    for w in [&first, &second] {
        assert_eq!(w.lingering, 0, "idle connections stay open");
        assert_eq!(w.served + w.busy, want);
        assert!(
            w.served <= 256,
            "at most 256 connections are served at once: {}",
            w.served
        );
    }
    assert!(fds_after < 64, "{fds_after} fds left open");
    // What the connection limit lets connections hold (about 12 KiB each) and what glibc
    // keeps of it once freed (it reuses it; `malloc_trim` would give it back), with room.
    // Before the limits, 2,000 idle connections held 38 MiB for good.
    for (after, which) in [(after_first, "first"), (after_second, "second")] {
        assert!(
            after <= idle + 8 * 1024,
            "RSS {:.1} MiB after the {which} wave closed, {:.1} MiB idle",
            mib(after),
            mib(idle)
        );
    }
    // Still serving.
    assert_eq!(a.req("GET", "/node", None).0, 200);
    assert_eq!(a.term(), Some(0));
}
