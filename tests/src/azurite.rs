//! Azure Blob storage for the task-file tests: Microsoft's emulator, Azurite, on loopback
//! with a temporary location, stopped on drop. Containers and blobs are made through its
//! real REST API with curl and account SAS tokens signed here (HMAC-SHA256 with the
//! emulator's well-known key), exactly as a user's SAS URLs are made for Azure.

use crate::free_port;
use base64::Engine;
use hmac::{Hmac, Mac};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The emulator's fixed development account and key (published by Microsoft).
pub const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The SAS version the tests sign (its string-to-sign has no encryption-scope line).
const SAS_VERSION: &str = "2019-12-12";

/// The `azurite-blob` that `scripts/install-deps.sh` installs, or `BERTH_AZURITE`.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("BERTH_AZURITE") {
        return PathBuf::from(p);
    }
    let p = crate::workspace().join(".tools/azurite/node_modules/.bin/azurite-blob");
    assert!(
        p.exists(),
        "{} is missing: run ./scripts/install-deps.sh (it installs Azurite with npm)",
        p.display()
    );
    p
}

pub struct Azurite {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Azurite {
    pub fn start() -> Azurite {
        let dir = tempfile::Builder::new()
            .prefix("berth-azurite-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let child = Command::new(binary())
            .args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(port.to_string())
            .arg("--location")
            .arg(dir.path())
            .args(["--silent", "--skipApiVersionCheck", "--disableTelemetry"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
        let a = Azurite {
            port,
            child,
            _dir: dir,
        };
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return a;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("azurite did not listen on 127.0.0.1:{port} within 30 s");
    }

    /// `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// An account SAS query for blobs with permissions `sp` (`r`, `w`, `l`, `c`, `a`, `d`).
    pub fn sas(&self, sp: &str) -> String {
        account_sas(sp, "sco", "2099-01-01T00:00:00Z")
    }

    /// The container's URL with a SAS of permissions `sp`.
    pub fn container_url(&self, name: &str, sp: &str) -> String {
        format!("{}/{name}?{}", self.endpoint(), self.sas(sp))
    }

    /// A blob's URL with a SAS of permissions `sp`.
    pub fn blob_url(&self, container: &str, blob: &str, sp: &str) -> String {
        format!("{}/{container}/{blob}?{}", self.endpoint(), self.sas(sp))
    }

    pub fn create_container(&self, name: &str) {
        let url = format!(
            "{}/{name}?restype=container&{}",
            self.endpoint(),
            self.sas("rwlc")
        );
        curl(&["-X", "PUT", "-H", "Content-Length: 0", &url], 201);
    }

    pub fn put_blob(&self, container: &str, name: &str, body: &[u8]) {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), body).unwrap();
        self.put_blob_file(container, name, f.path());
    }

    pub fn put_blob_file(&self, container: &str, name: &str, file: &Path) {
        let url = self.blob_url(container, name, "rwc");
        curl(
            &[
                "-X",
                "PUT",
                "-H",
                "x-ms-blob-type: BlockBlob",
                "-T",
                &file.to_string_lossy(),
                &url,
            ],
            201,
        );
    }

    /// A blob's content, or `None` when it does not exist.
    pub fn get_blob(&self, container: &str, name: &str) -> Option<Vec<u8>> {
        let url = self.blob_url(container, name, "r");
        let out = Command::new("curl")
            .args(["-sS", "-w", "\n%{http_code}", &url])
            .output()
            .unwrap();
        let mut body = out.stdout;
        let split = body.iter().rposition(|b| *b == b'\n').unwrap();
        let code = String::from_utf8_lossy(&body[split + 1..]).to_string();
        body.truncate(split);
        match code.as_str() {
            "200" => Some(body),
            "404" => None,
            c => panic!("GET {name}: HTTP {c}: {}", String::from_utf8_lossy(&body)),
        }
    }

    /// The response headers of a blob (names lower-case).
    pub fn blob_headers(&self, container: &str, name: &str) -> Vec<(String, String)> {
        let url = self.blob_url(container, name, "r");
        let out = Command::new("curl")
            .args(["-sS", "-I", &url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect()
    }

    /// Every blob name in a container.
    pub fn list(&self, container: &str) -> Vec<String> {
        let url = format!(
            "{}/{container}?restype=container&comp=list&{}",
            self.endpoint(),
            self.sas("rl")
        );
        let out = Command::new("curl").args(["-sS", &url]).output().unwrap();
        let (names, _) = berth_agent::files::blob::parse_list(&out.stdout).unwrap();
        names
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Signs an account SAS (Blob service) the way Azure's SDKs do.
pub fn account_sas(sp: &str, srt: &str, expiry: &str) -> String {
    let to_sign = format!("{ACCOUNT}\n{sp}\nb\n{srt}\n\n{expiry}\n\nhttps,http\n{SAS_VERSION}\n");
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!(
        "sv={SAS_VERSION}&ss=b&srt={srt}&sp={sp}&se={}&spr=https,http&sig={}",
        enc(expiry),
        enc(&sig)
    )
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn curl(args: &[&str], want: u16) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/stderr", "-w", "%{http_code}"])
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        code,
        want.to_string(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
