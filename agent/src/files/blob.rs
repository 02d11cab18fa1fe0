//! HTTP(S) and the Blob REST API: a streamed GET of any URL, List Blobs, and Put Blob /
//! Put Block / Put Block List. The SAS travels in the URL's query and never reaches a log
//! or an error: every message names the URL through `redact_url`.

use berth_proto::common::redact_url;
use berth_proto::FailureCode;
use bytes::Bytes;
use std::time::Duration;

/// The Blob REST version berth speaks (Azurite 3.x and Azure both accept it).
pub const API_VERSION: &str = "2021-08-06";

/// Why a request failed, before it becomes a Batch failure code.
#[derive(Debug)]
pub enum HttpFailure {
    /// The server answered with a status outside 2xx; `code` is `x-ms-error-code`.
    Status {
        status: u16,
        code: String,
    },
    Timeout,
    /// Connecting or reading failed otherwise.
    Transport(String),
}

impl HttpFailure {
    /// Worth another try: timeouts, dropped connections, throttling and server errors.
    pub fn transient(&self) -> bool {
        match self {
            HttpFailure::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            HttpFailure::Timeout | HttpFailure::Transport(_) => true,
        }
    }

    /// The Batch code for this failure in a step whose codes are `codes`.
    pub fn code(&self, codes: &StepCodes) -> FailureCode {
        match self {
            HttpFailure::Status { status: 404, .. } => codes.not_found,
            HttpFailure::Status {
                status: 401 | 403, ..
            } => codes.denied,
            HttpFailure::Status {
                status: 409 | 412, ..
            } => codes.conflict,
            HttpFailure::Timeout => codes.timed_out,
            _ => codes.misc,
        }
    }

    /// A short description with the (redacted) URL.
    pub fn describe(&self, url: &str) -> String {
        let url = redact_url(url);
        match self {
            HttpFailure::Status { status, code } if code.is_empty() => {
                format!("{url}: HTTP {status}")
            }
            HttpFailure::Status { status, code } => format!("{url}: HTTP {status} ({code})"),
            HttpFailure::Timeout => format!("{url}: timed out"),
            HttpFailure::Transport(e) => format!("{url}: {e}"),
        }
    }
}

/// Batch's failure codes for one kind of transfer step.
pub struct StepCodes {
    pub not_found: FailureCode,
    pub denied: FailureCode,
    pub conflict: FailureCode,
    pub timed_out: FailureCode,
    pub misc: FailureCode,
}

pub const LIST: StepCodes = StepCodes {
    not_found: FailureCode::ResourceContainerNotFound,
    denied: FailureCode::ResourceContainerAccessDenied,
    conflict: FailureCode::ResourceContainerListMiscError,
    timed_out: FailureCode::ResourceContainerListTimedOut,
    misc: FailureCode::ResourceContainerListMiscError,
};

pub const DOWNLOAD: StepCodes = StepCodes {
    not_found: FailureCode::BlobNotFound,
    denied: FailureCode::BlobAccessDenied,
    conflict: FailureCode::BlobDownloadMiscError,
    timed_out: FailureCode::BlobDownloadTimedOut,
    misc: FailureCode::BlobDownloadMiscError,
};

pub const UPLOAD: StepCodes = StepCodes {
    not_found: FailureCode::FileUploadContainerNotFound,
    denied: FailureCode::FileUploadAccessDenied,
    conflict: FailureCode::FileUploadConflict,
    timed_out: FailureCode::FileUploadTimedOut,
    misc: FailureCode::FileUploadMiscError,
};

fn from_reqwest(e: reqwest::Error) -> HttpFailure {
    if e.is_timeout() {
        return HttpFailure::Timeout;
    }
    // reqwest's messages hold the URL, query included: keep only the causes, in words,
    // so that no later rendering can bring the URL back.
    HttpFailure::Transport(crate::error_chain::chain(&e.without_url()))
}

/// The client every transfer shares: connection reuse, the OS trust store, and timeouts
/// that bound each step rather than a whole multi-GB transfer.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
}

/// Connecting, and each read of a response: a stalled server fails instead of hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const READ_TIMEOUT: Duration = Duration::from_secs(120);

impl Http {
    pub fn new() -> Result<Http, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Http { client })
    }

    /// GET with the body left to stream.
    pub async fn get(&self, url: &str) -> Result<reqwest::Response, HttpFailure> {
        let r = self
            .client
            .get(url)
            .header("x-ms-version", API_VERSION)
            .send()
            .await
            .map_err(from_reqwest)?;
        check(r).await
    }

    /// GET bytes `start..end` (end exclusive), only while the blob's ETag is still `etag`
    /// when one is given (a blob replaced mid-download is a 412, not a mixed file).
    pub async fn get_range(
        &self,
        url: &str,
        start: u64,
        end: u64,
        etag: Option<&str>,
    ) -> Result<reqwest::Response, HttpFailure> {
        let mut req = self
            .client
            .get(url)
            .header("x-ms-version", API_VERSION)
            .header("range", format!("bytes={start}-{}", end.saturating_sub(1)));
        if let Some(e) = etag {
            req = req.header("if-match", e);
        }
        let r = req.send().await.map_err(from_reqwest)?;
        check(r).await
    }

    /// PUT a body with the given headers.
    pub async fn put(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<(), HttpFailure> {
        let mut req = self
            .client
            .put(url)
            .header("x-ms-version", API_VERSION)
            .header("content-length", body.len());
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let r = req.body(body).send().await.map_err(from_reqwest)?;
        check(r).await.map(|_| ())
    }

    /// One page of List Blobs: the names and the marker of the next page.
    pub async fn list_page(
        &self,
        container: &str,
        prefix: Option<&str>,
        marker: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), HttpFailure> {
        let mut extra = String::from("restype=container&comp=list");
        if let Some(p) = prefix.filter(|p| !p.is_empty()) {
            extra.push_str("&prefix=");
            extra.push_str(&encode_query(p));
        }
        if let Some(m) = marker {
            extra.push_str("&marker=");
            extra.push_str(&encode_query(m));
        }
        let url = with_query(container, &extra);
        let body = self.get(&url).await?.bytes().await.map_err(from_reqwest)?;
        parse_list(&body).map_err(HttpFailure::Transport)
    }
}

async fn check(r: reqwest::Response) -> Result<reqwest::Response, HttpFailure> {
    if r.status().is_success() {
        return Ok(r);
    }
    let status = r.status().as_u16();
    let code = r
        .headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Err(HttpFailure::Status { status, code })
}

/// The total size in a `206` answer's `Content-Range: bytes 0-99/1234`.
pub fn range_total(r: &reqwest::Response) -> Option<u64> {
    let v = r.headers().get("content-range")?.to_str().ok()?;
    v.strip_prefix("bytes ")?.split_once('/')?.1.parse().ok()
}

/// Percent-encodes a blob name for a URL path, keeping `/` as the virtual directory
/// separator.
pub fn encode_path(name: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const PATH: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    utf8_percent_encode(name, PATH).to_string()
}

pub fn encode_query(v: &str) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    utf8_percent_encode(v, NON_ALPHANUMERIC).to_string()
}

/// `url` with `extra` added to its query (a SAS stays in place).
pub fn with_query(url: &str, extra: &str) -> String {
    let base = url.split('#').next().unwrap_or(url);
    match base.split_once('?') {
        Some((path, q)) if !q.is_empty() => format!("{path}?{q}&{extra}"),
        Some((path, _)) => format!("{path}?{extra}"),
        None => format!("{base}?{extra}"),
    }
}

/// The URL of blob `name` in the container at `container` (SAS query kept).
pub fn blob_url(container: &str, name: &str) -> String {
    let (path, query) = match container.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (container, None),
    };
    let mut out = format!(
        "{}/{}",
        path.trim_end_matches('/'),
        encode_path(name.trim_start_matches('/'))
    );
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The blob names and `NextMarker` of a List Blobs response.
pub fn parse_list(xml: &[u8]) -> Result<(Vec<String>, Option<String>), String> {
    use quick_xml::events::Event;
    let bad = |e: &dyn std::fmt::Display| format!("bad List Blobs response: {e}");
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut names = Vec::new();
    let mut next = None;
    let mut stack: Vec<Vec<u8>> = Vec::new();
    // An element's text arrives in pieces: plain runs and entity references.
    let mut text = String::new();
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf).map_err(|e| bad(&e))? {
            Event::Start(e) => {
                stack.push(e.name().as_ref().to_vec());
                text.clear();
            }
            Event::Text(t) => text.push_str(&t.decode().map_err(|e| bad(&e))?),
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref().map_err(|e| bad(&e))? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|e| bad(&e))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| bad(&format!("unknown entity &{name};")))?
                            .to_string()
                    }
                };
                text.push_str(&c);
            }
            Event::End(_) => {
                let parent = stack.len().checked_sub(2).map(|i| stack[i].as_slice());
                match (parent, stack.last().map(Vec::as_slice)) {
                    (Some(b"Blob"), Some(b"Name")) => names.push(std::mem::take(&mut text)),
                    (Some(b"EnumerationResults"), Some(b"NextMarker")) if !text.is_empty() => {
                        next = Some(std::mem::take(&mut text))
                    }
                    _ => {}
                }
                stack.pop();
                text.clear();
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok((names, next))
}

/// A block id: the same length for every block, as the service requires.
pub fn block_id(i: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("block-{i:08}"))
}

/// The Put Block List body.
pub fn block_list_xml(count: usize) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
    for i in 0..count {
        s.push_str("<Latest>");
        s.push_str(&block_id(i));
        s.push_str("</Latest>");
    }
    s.push_str("</BlockList>");
    s
}

/// Put Blob takes the standard content headers as the blob's properties; Put Block List
/// takes them as `x-ms-blob-*` (its own `Content-Type` describes the XML body).
pub fn block_list_header(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "content-type"
        | "content-encoding"
        | "content-language"
        | "content-disposition"
        | "cache-control"
        | "content-md5" => format!("x-ms-blob-{lower}"),
        _ => lower,
    }
}

/// A retry delay: 1 s, 2 s, 4 s ...
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_urls_keep_the_sas_and_encode_names() {
        assert_eq!(
            blob_url("http://h:1/acct/c?sv=1&sig=a%2Bb", "dir/a b#.txt"),
            "http://h:1/acct/c/dir/a%20b%23.txt?sv=1&sig=a%2Bb"
        );
        assert_eq!(blob_url("https://h/c/", "x"), "https://h/c/x");
        assert_eq!(
            with_query("https://h/c?sig=s", "restype=container&comp=list"),
            "https://h/c?sig=s&restype=container&comp=list"
        );
        assert_eq!(with_query("https://h/c", "a=b"), "https://h/c?a=b");
    }

    #[test]
    fn failures_never_show_the_query() {
        let f = HttpFailure::Status {
            status: 403,
            code: "AuthenticationFailed".into(),
        };
        let d = f.describe("https://h/c/b?sig=SECRET");
        assert_eq!(
            d,
            "https://h/c/b?<redacted>: HTTP 403 (AuthenticationFailed)"
        );
        assert!(!f.transient());
        assert!(HttpFailure::Status {
            status: 503,
            code: String::new()
        }
        .transient());
        assert!(HttpFailure::Timeout.transient());
    }

    #[test]
    fn list_blobs_response() {
        let xml = br#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="http://127.0.0.1:10000/devstoreaccount1" ContainerName="c">
<Prefix>d/</Prefix><Blobs>
<Blob><Name>d/a&amp;b&#x20;&lt;.txt</Name><Properties><Content-Length>3</Content-Length></Properties></Blob>
<Blob><Name>d/sub/c.txt</Name><Properties/></Blob>
</Blobs><NextMarker>m2</NextMarker></EnumerationResults>"#;
        let (names, next) = parse_list(xml).unwrap();
        assert_eq!(names, ["d/a&b <.txt", "d/sub/c.txt"]);
        assert_eq!(next.as_deref(), Some("m2"));
        let (_, none) =
            parse_list(b"<EnumerationResults><Blobs/><NextMarker/></EnumerationResults>").unwrap();
        assert_eq!(none, None);
    }

    #[test]
    fn blocks() {
        assert_eq!(block_id(0).len(), block_id(49_999).len());
        assert!(block_list_xml(2).contains(&format!("<Latest>{}</Latest>", block_id(1))));
        assert_eq!(block_list_header("Content-Type"), "x-ms-blob-content-type");
        assert_eq!(block_list_header("x-ms-meta-a"), "x-ms-meta-a");
    }
}
