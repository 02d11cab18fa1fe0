//! A loopback TCP proxy between the agents and the service: one listener per agent, so
//! that one agent's way to the service can be cut ([`Proxy::cut`]) while the others' stays
//! open, and counts of the node protocol's requests by path (`POST /nodeagent/v1/<what>`
//! in the agents' bytes): the service round trips per task. It copies bytes and never
//! parses HTTP otherwise.
//!
//! A cut, for a set time:
//! - [`Cut::Drop`]: the agent's open connections are reset (RST, as a lost route or a
//!   restarted middlebox would) and new ones are accepted only to be reset at once;
//! - [`Cut::Stall`]: connections stay open and new ones are accepted, but no byte passes
//!   either way until the cut ends (a black hole: what was sent is held, not lost).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const NEEDLE: &[u8] = b"POST /nodeagent/v1/";

/// Requests seen, by the word after [`NEEDLE`] (`claim`, `heartbeat`, `report`, ...).
#[derive(Clone, Default)]
pub struct Counts(Arc<Mutex<BTreeMap<String, u64>>>);

impl Counts {
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap().clone()
    }

    /// Counts every request head in `buf`, a stream's next bytes after `tail` (the last
    /// bytes of the previous read, so that a head split across reads is seen once).
    fn scan(&self, tail: &mut Vec<u8>, buf: &[u8]) {
        tail.extend_from_slice(buf);
        let mut i = 0;
        let mut m = self.0.lock().unwrap();
        while let Some(p) = find(&tail[i..], NEEDLE) {
            let start = i + p + NEEDLE.len();
            let Some(end) = tail[start..]
                .iter()
                .position(|b| !b.is_ascii_alphanumeric())
                .map(|e| start + e)
            else {
                break; // the word goes on in the next read
            };
            let word = String::from_utf8_lossy(&tail[start..end]).into_owned();
            *m.entry(word).or_default() += 1;
            i = end;
        }
        // Keep only what an unfinished head needs (never a counted one: the cut is past
        // the last counted word).
        let cut = tail.len().saturating_sub(NEEDLE.len() + 16).max(i);
        tail.drain(..cut);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A cut of one agent's way to the service (see the module's doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    Drop,
    Stall,
}

/// The proxy: the service's address, the shared counts, and a gate per agent.
pub struct Proxy {
    upstream: String,
    pub counts: Counts,
    gates: Mutex<Vec<watch::Sender<Option<Cut>>>>,
}

impl Proxy {
    /// A proxy to `upstream` (`127.0.0.1:PORT`), with no listener yet.
    pub fn new(upstream: String) -> Proxy {
        Proxy {
            upstream,
            counts: Counts::default(),
            gates: Mutex::new(vec![]),
        }
    }

    /// A new listener on a free loopback port for one agent: its address (`127.0.0.1:PORT`)
    /// and its index for [`Proxy::cut`].
    pub async fn listen(&self) -> (String, usize) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (tx, rx) = watch::channel(None);
        let i = {
            let mut g = self.gates.lock().unwrap();
            g.push(tx);
            g.len() - 1
        };
        let (up, c) = (self.upstream.clone(), self.counts.clone());
        tokio::spawn(async move {
            while let Ok((down, _)) = l.accept().await {
                tokio::spawn(connection(down, up.clone(), c.clone(), rx.clone()));
            }
        });
        (addr, i)
    }

    /// Cuts agent `i`'s way to the service for `d` (returns at once; the way opens again
    /// by itself).
    pub fn cut(&self, i: usize, cut: Cut, d: Duration) {
        let gate = self.gates.lock().unwrap()[i].clone();
        gate.send_replace(Some(cut));
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            gate.send_replace(None);
        });
    }
}

/// One agent connection: forwarded while the gate is open, held while it stalls, reset
/// when it drops.
async fn connection(
    mut down: TcpStream,
    upstream: String,
    counts: Counts,
    mut gate: watch::Receiver<Option<Cut>>,
) {
    down.set_nodelay(true).ok();
    // A stall holds even the connect; a drop refuses.
    if pass(&mut gate).await.is_err() {
        return reset(&down);
    }
    let Ok(mut up) = TcpStream::connect(&upstream).await else {
        return;
    };
    up.set_nodelay(true).ok();
    let cut = {
        let (mut dr, mut dw) = down.split();
        let (mut ur, mut uw) = up.split();
        let (g1, g2) = (gate.clone(), gate.clone());
        let to_service = async {
            pump(&mut dr, &mut uw, g1, Some(&counts)).await?;
            uw.shutdown().await.ok();
            Ok::<_, Dropped>(())
        };
        let to_agent = async {
            pump(&mut ur, &mut dw, g2, None).await?;
            dw.shutdown().await.ok();
            Ok::<_, Dropped>(())
        };
        tokio::try_join!(to_service, to_agent).is_err()
    };
    if cut {
        reset(&down);
        reset(&up);
    }
}

/// The gate dropped the connection.
struct Dropped;

/// Waits while the gate stalls; `Err` when it drops.
async fn pass(gate: &mut watch::Receiver<Option<Cut>>) -> Result<(), Dropped> {
    loop {
        match *gate.borrow_and_update() {
            None => return Ok(()),
            Some(Cut::Drop) => return Err(Dropped),
            Some(Cut::Stall) => {}
        }
        if gate.changed().await.is_err() {
            return Ok(());
        }
    }
}

/// Copies `from` to `to` until EOF, each read held while the gate stalls; `Err` as soon
/// as the gate drops (even mid-read).
async fn pump(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    mut gate: watch::Receiver<Option<Cut>>,
    counts: Option<&Counts>,
) -> Result<(), Dropped> {
    let (mut buf, mut tail) = (vec![0u8; 16 * 1024], vec![]);
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(n) if n > 0 => n,
                _ => return Ok(()),
            },
            _ = dropped(gate.clone()) => return Err(Dropped),
        };
        pass(&mut gate).await?;
        if to.write_all(&buf[..n]).await.is_err() {
            return Ok(());
        }
        if let Some(c) = counts {
            c.scan(&mut tail, &buf[..n]);
        }
    }
}

/// Resolves when the gate drops.
async fn dropped(mut gate: watch::Receiver<Option<Cut>>) {
    while *gate.borrow_and_update() != Some(Cut::Drop) {
        if gate.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Closes with a reset rather than a FIN: linger 0, then the drop.
fn reset(s: &TcpStream) {
    s.set_zero_linger().ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_counted_once_even_split_across_reads() {
        let c = Counts::default();
        let mut tail = vec![];
        let stream = b"POST /nodeagent/v1/claim HTTP/1.1\r\n\r\n{}POST /nodeagent/v1/heartbeat HTTP/1.1\r\n\r\n{\"a\":1}POST /nodeagent/v1/claim HTTP/1.1\r\n";
        for chunk in stream.chunks(7) {
            c.scan(&mut tail, chunk);
        }
        let m = c.snapshot();
        assert_eq!(m.get("claim"), Some(&2), "{m:?}");
        assert_eq!(m.get("heartbeat"), Some(&1), "{m:?}");
        let whole = Counts::default();
        whole.scan(&mut vec![], stream);
        assert_eq!(whole.snapshot(), m);
    }

    /// An echo server on loopback: its address.
    async fn echo() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    tokio::io::copy(&mut r, &mut w).await.ok();
                });
            }
        });
        addr
    }

    /// Sends `b"ping"` and reads the echo within `limit`.
    async fn ping(s: &mut TcpStream, limit: Duration) -> std::io::Result<Vec<u8>> {
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        match tokio::time::timeout(limit, s.read_exact(&mut buf)).await {
            Ok(r) => r.map(|_| buf.to_vec()),
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }

    #[tokio::test]
    async fn a_drop_resets_and_refuses_then_the_way_opens_again() {
        let p = Proxy::new(echo().await);
        let (a, i) = p.listen().await;
        let (b, _) = p.listen().await;
        let mut open = TcpStream::connect(&a).await.unwrap();
        let mut other = TcpStream::connect(&b).await.unwrap();
        let second = Duration::from_secs(1);
        assert_eq!(ping(&mut open, second).await.unwrap(), b"ping");
        p.cut(i, Cut::Drop, Duration::from_millis(500));
        let e = ping(&mut open, second).await.unwrap_err();
        assert_ne!(e.kind(), std::io::ErrorKind::TimedOut, "reset, not held");
        let mut new = TcpStream::connect(&a).await.unwrap();
        assert!(ping(&mut new, second).await.is_err(), "refused while cut");
        assert_eq!(
            ping(&mut other, second).await.unwrap(),
            b"ping",
            "one agent only"
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        let mut again = TcpStream::connect(&a).await.unwrap();
        assert_eq!(ping(&mut again, second).await.unwrap(), b"ping");
    }

    #[tokio::test]
    async fn a_stall_holds_every_byte_until_it_ends() {
        let p = Proxy::new(echo().await);
        let (a, i) = p.listen().await;
        let mut open = TcpStream::connect(&a).await.unwrap();
        assert_eq!(
            ping(&mut open, Duration::from_secs(1)).await.unwrap(),
            b"ping"
        );
        p.cut(i, Cut::Stall, Duration::from_millis(800));
        let short = Duration::from_millis(300);
        let e = ping(&mut open, short).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "held, not reset");
        let mut new = TcpStream::connect(&a).await.unwrap();
        let e = ping(&mut new, short).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "accepted, held");
        // Once open, both connections get what they sent: nothing was lost.
        let mut buf = [0u8; 4];
        open.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        new.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    }
}
