//! A loopback TCP proxy between the agents and the service that counts the node
//! protocol's requests by path (`POST /nodeagent/v1/<what>` in the agents' bytes): the
//! service round trips per task. It copies bytes and never parses HTTP otherwise.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

/// Listens on a free loopback port and forwards to `upstream` (`127.0.0.1:PORT`); the
/// proxy's address and its counts.
pub async fn start(upstream: String) -> (String, Counts) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let counts = Counts::default();
    let c = counts.clone();
    tokio::spawn(async move {
        while let Ok((down, _)) = l.accept().await {
            let (up, c) = (upstream.clone(), c.clone());
            tokio::spawn(async move {
                let Ok(up) = TcpStream::connect(&up).await else {
                    return;
                };
                down.set_nodelay(true).ok();
                up.set_nodelay(true).ok();
                let (mut dr, mut dw) = down.into_split();
                let (mut ur, mut uw) = up.into_split();
                let to_service = async move {
                    let (mut buf, mut tail) = (vec![0u8; 16 * 1024], vec![]);
                    while let Ok(n) = dr.read(&mut buf).await {
                        if n == 0 || uw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        c.scan(&mut tail, &buf[..n]);
                    }
                    uw.shutdown().await.ok();
                };
                let to_agent = async move {
                    tokio::io::copy(&mut ur, &mut dw).await.ok();
                    dw.shutdown().await.ok();
                };
                tokio::join!(to_service, to_agent);
            });
        }
    });
    (addr, counts)
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
}
