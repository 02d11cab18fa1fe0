//! Node tokens: `<epoch>.<32 random bytes, base64url>`. The epoch finds the enrolment;
//! the service keeps only the SHA-256 of the whole token.
//!
//! File-proxy credentials (what the service shows a node's file API when it proxies a
//! client's file read): `bpx1.<HMAC-SHA256(proxy key, pool, node, epoch), base64url>`.
//! Derived, not stored: every replica computes the same one, and a database dump holds
//! none. A new enrolment (a new epoch) gives a new one.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// A fresh token for `epoch`; errors only when the kernel's random source cannot be read.
pub fn mint(epoch: i64) -> std::io::Result<String> {
    let mut secret = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut secret))?;
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    Ok(format!("{epoch}.{b}"))
}

/// The token's epoch and secret part; None when it is not of the token's shape.
pub fn parse(token: &str) -> Option<(i64, &str)> {
    let (epoch, secret) = token.split_once('.')?;
    let epoch = epoch.parse().ok()?;
    (!secret.is_empty()).then_some((epoch, secret))
}

/// The file-proxy credential of `node` of `pool` in enrolment `epoch`, under `key`.
pub fn proxy(key: &[u8], pool: &str, node: &str, epoch: i64) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    // Lengths first: no two (pool, node) pairs give the same bytes.
    for part in [pool.as_bytes(), node.as_bytes()] {
        m.update(&(part.len() as u64).to_be_bytes());
        m.update(part);
    }
    m.update(&epoch.to_be_bytes());
    let mac = m.finalize().into_bytes();
    format!(
        "bpx1.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac)
    )
}

/// What the service stores of a token.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_epoch_and_differs_every_time() {
        let a = mint(42).unwrap();
        let b = mint(42).unwrap();
        assert_ne!(a, b);
        assert_eq!(parse(&a).map(|p| p.0), Some(42));
        assert_eq!(parse(&a).unwrap().1.len(), 43);
        assert_eq!(hash(&a).len(), 32);
        assert_ne!(hash(&a), hash(&b));
        for bad in ["", "42", "x.abc", "42.", ".abc"] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn proxy_credentials_are_derived_per_node_and_epoch() {
        let a = proxy(b"key", "p", "n1", 7);
        assert_eq!(a, proxy(b"key", "p", "n1", 7), "every replica agrees");
        assert!(a.starts_with("bpx1.") && a.len() == 5 + 43, "{a}");
        for other in [
            proxy(b"key", "p", "n1", 8),
            proxy(b"key", "p", "n2", 7),
            proxy(b"key", "q", "n1", 7),
            proxy(b"key", "pn", "1", 7),
            proxy(b"yek", "p", "n1", 7),
        ] {
            assert_ne!(a, other);
        }
    }
}
