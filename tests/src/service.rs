//! A real `berth service` for pool mode's tests: the binary on a free loopback port
//! (`--listen 127.0.0.1:0`, the bound address read from its `listening on ADDR` line),
//! with its own token and enrolment secret files; stopped (SIGTERM) on drop. Requests go
//! through curl, which speaks HTTPS with a test CA as well, with berth's `api-version`
//! unless they name one ([`Service::raw`] sends a request exactly as given).

use crate::berth_bin;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The client token every test service accepts.
pub const CLIENT_TOKEN: &str = "test-client-token-0123456789";
/// The enrolment secret every test service accepts.
pub const ENROLMENT_SECRET: &str = "test-enrolment-secret-0123456789";

pub struct Service {
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub url: String,
    child: Child,
    dir: tempfile::TempDir,
    /// `--cacert` for curl when the service speaks TLS.
    ca: Option<PathBuf>,
}

impl Service {
    /// A plain-HTTP service (`--insecure-http`) on `database_url`.
    pub fn start(database_url: &str) -> Service {
        Service::start_with(database_url, &["--insecure-http"], None)
    }

    /// A service with `extra` flags; `ca` is the certificate curl trusts (TLS).
    pub fn start_with(database_url: &str, extra: &[&str], ca: Option<&Path>) -> Service {
        let dir = tempfile::Builder::new()
            .prefix("berth-svc-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("tokens"), format!("{CLIENT_TOKEN}\n")).unwrap();
        std::fs::write(dir.path().join("secret"), format!("{ENROLMENT_SECRET}\n")).unwrap();
        std::fs::write(dir.path().join("proxy"), "test-proxy-secret-0123456789\n").unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(berth_bin())
            .args(["service", "--database-url", database_url])
            .args(["--listen", "127.0.0.1:0", "--token-file"])
            .arg(dir.path().join("tokens"))
            .arg("--enrolment-secret-file")
            .arg(dir.path().join("secret"))
            .arg("--proxy-secret-file")
            .arg(dir.path().join("proxy"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start berth service");
        let mut s = Service {
            url: String::new(),
            child,
            dir,
            ca: ca.map(Path::to_path_buf),
        };
        let scheme = if s.ca.is_some() { "https" } else { "http" };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if let Some(addr) = s
                .log()
                .lines()
                .find_map(|l| l.strip_prefix("listening on ").map(str::to_string))
            {
                s.url = format!("{scheme}://{addr}");
                return s;
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("berth service exited ({st}): {}", s.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("berth service did not listen: {}", s.log());
    }

    /// What the service wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// One request with the client token; (status, JSON body or Null).
    pub fn req(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.req_as(Some(CLIENT_TOKEN), method, path, body)
    }

    /// One request with `token` (None: no Authorization header).
    pub fn req_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let (status, body) = self.text_as(token, method, path, body);
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// One request with the client token; (status, the body as text): file reads.
    pub fn text(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        self.text_as(Some(CLIENT_TOKEN), method, path, body)
    }

    fn text_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, String) {
        let (status, _, body) = self.raw(token, method, &with_api_version(path), &[], body);
        (status, body)
    }

    /// One request exactly as given (`path` with its query, no `api-version` added;
    /// `headers` as `Name: value`); (status, the response head, the body).
    pub fn raw(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        headers: &[&str],
        body: Option<&Value>,
    ) -> (u16, String, String) {
        let head = tempfile::NamedTempFile::new().unwrap();
        let mut c = Command::new("curl");
        c.args([
            "-sS",
            "-m",
            "30",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
            "-D",
        ])
        .arg(head.path());
        if let Some(ca) = &self.ca {
            c.arg("--cacert").arg(ca);
        }
        if let Some(t) = token {
            c.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        for h in headers {
            c.args(["-H", h]);
        }
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(b.to_string());
        }
        c.arg(format!("{}{path}", self.url));
        let out = c.output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        let status = code.trim().parse().unwrap_or(0);
        let head = std::fs::read_to_string(head.path()).unwrap_or_default();
        (status, head, body.to_string())
    }

    /// GET `path`, which must answer 200; its JSON.
    pub fn json(&self, path: &str) -> Value {
        let (st, v) = self.req("GET", path, None);
        assert_eq!(st, 200, "GET {path}: {v}");
        v
    }

    /// Stops the service (SIGTERM) and waits for it; its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).ok();
        self.child.wait().unwrap()
    }
}

/// `path` with berth's `api-version`, unless it names one (clients must send it).
fn with_api_version(path: &str) -> String {
    if path.contains("api-version=") {
        return path.to_string();
    }
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}api-version={}", berth_agent::api::API_VERSION)
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            eprintln!("--- service log {} ---\n{tail}", self.url);
        }
    }
}
