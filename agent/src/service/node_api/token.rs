//! Node tokens: `<epoch>.<32 random bytes, base64url>`. The epoch finds the enrolment;
//! the service keeps only the SHA-256 of the whole token.

use base64::Engine;
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
}
