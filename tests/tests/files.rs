//! Resource files in and output files out, against Azure Blob storage's emulator
//! (Azurite) on loopback, through `berth run` on a real engine.

use berth_tests::azurite::Azurite;
use berth_tests::*;
use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

fn failure_code(t: &Value) -> &str {
    t["executionInfo"]["failureInfo"]["code"]
        .as_str()
        .unwrap_or("")
}

fn message(t: &Value) -> String {
    t["executionInfo"]["failureInfo"]["details"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|x| x["value"].as_str().unwrap_or("").to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

fn azbatch() -> (u32, u32) {
    let u = nix::unistd::User::from_name("_azbatch")
        .unwrap()
        .expect("berth creates _azbatch for non-admin tasks");
    (u.uid.as_raw(), u.gid.as_raw())
}

/// The SAS signature must appear in no output and no file berth wrote.
fn assert_no_sas(n: &TestNode, r: &RunResult) {
    for (what, text) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
        assert!(!text.contains("sig="), "a SAS reached {what}:\n{text}");
    }
    let hits: Vec<_> = n
        .files_containing("sig=")
        .into_iter()
        // The store holds the task as submitted (root only, 0600): it must keep the SAS.
        .filter(|p| !p.to_string_lossy().contains("/state/"))
        .collect();
    assert!(hits.is_empty(), "a SAS reached files: {hits:?}");
}

/// httpUrl with fileMode, a container with and without blobPrefix, nested blob paths,
/// into a non-admin container task and into the pool's start task on the host.
#[test]
fn resource_files_reach_container_and_host_tasks() {
    let az = Azurite::start();
    az.create_container("inputs");
    az.put_blob("inputs", "single.txt", b"one file\n");
    az.put_blob("inputs", "data/a.txt", b"A\n");
    az.put_blob("inputs", "data/deep/b.txt", b"B\n");
    az.put_blob("inputs", "other/c.txt", b"C\n");
    let n = TestNode::new("resfiles");
    let files = json!([
        {"httpUrl": az.blob_url("inputs", "single.txt", "r"), "filePath": "in/one.txt", "fileMode": "0640"},
        {"storageContainerUrl": az.container_url("inputs", "rl"), "filePath": "all"},
        {"storageContainerUrl": az.container_url("inputs", "rl"), "blobPrefix": "data/"}
    ]);
    let pool = n.file(
        "pool.json",
        &json!({"id": "fpool",
            "virtualMachineConfiguration": {"containerConfiguration": {"type": "dockerCompatible"}},
            "startTask": {"commandLine": "/bin/sh -c 'cat in/one.txt all/other/c.txt data/deep/b.txt'",
                "resourceFiles": files, "waitForSuccess": true}}),
    );
    let mut t = task(
        "reader",
        "/bin/sh -c 'cat in/one.txt all/single.txt all/data/a.txt all/data/deep/b.txt all/other/c.txt data/a.txt && id -u'",
        "",
    );
    t["resourceFiles"] = files.clone();
    let r = n.run(&["--pool", pool.to_str().unwrap()], &json!([t]));
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let t = r.task("reader");
    assert_eq!(t["executionInfo"]["result"], "success", "{t}");
    let (uid, gid) = azbatch();
    assert_eq!(
        n.read("berthjob", "reader", "stdout.txt"),
        format!("one file\none file\nA\nB\nC\nA\n{uid}\n")
    );
    // Only the prefix's blobs, with their full names.
    let wd = n.task_dir("berthjob", "reader").join("wd");
    assert!(!wd.join("other").exists() && !wd.join("data/../other").exists());
    let one = std::fs::metadata(wd.join("in/one.txt")).unwrap();
    assert_eq!(one.permissions().mode() & 0o7777, 0o640);
    assert_eq!((one.uid(), one.gid()), (uid, gid), "owned by the task user");
    let a = std::fs::metadata(wd.join("all/data/a.txt")).unwrap();
    assert_eq!(
        a.permissions().mode() & 0o7777,
        0o770,
        "Batch's default mode"
    );
    assert_eq!(std::fs::metadata(wd.join("all/data")).unwrap().uid(), uid);
    // The host start task got the same files in its own working directory.
    assert_eq!(
        std::fs::read_to_string(n.root().join("startup/stdout.txt")).unwrap(),
        "one file\nC\nB\n"
    );
    assert_no_sas(&n, &r);
}

/// Every download failure fails the task before its container exists, with Batch's
/// code and the URL without its query; a path escape never gets that far.
#[test]
fn resource_file_failures_are_reported() {
    let az = Azurite::start();
    az.create_container("inputs");
    az.put_blob("inputs", "here.txt", b"x");
    let n = TestNode::new("resfail");
    let with = |id: &str, f: Value| {
        let mut t = task(id, "true", "");
        t["resourceFiles"] = json!([f]);
        t
    };
    let forged = az
        .blob_url("inputs", "here.txt", "r")
        .replace("sig=", "sig=AAAA");
    let r = n.run(
        &[],
        &json!([
            with(
                "missing",
                json!({"httpUrl": az.blob_url("inputs", "nope.txt", "r"), "filePath": "x"})
            ),
            with("forged", json!({"httpUrl": forged, "filePath": "x"})),
            with(
                "nocontainer",
                json!({"storageContainerUrl": az.container_url("absent", "rl")})
            ),
            with(
                "cannotlist",
                json!({"storageContainerUrl": az.container_url("inputs", "r")})
            ),
            with(
                "refused",
                json!({"httpUrl": "http://127.0.0.1:1/x?sig=s", "filePath": "x"})
            ),
        ]),
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    for (id, code) in [
        ("missing", "BlobNotFound"),
        ("forged", "BlobAccessDenied"),
        ("nocontainer", "ResourceContainerNotFound"),
        ("cannotlist", "ResourceContainerAccessDenied"),
        ("refused", "BlobDownloadMiscError"),
    ] {
        let t = r.task(id);
        assert_eq!(failure_code(&t), code, "{id}: {t}");
        assert_eq!(t["executionInfo"]["exitCode"], Value::Null, "{id}");
        assert!(
            !n.task_dir("berthjob", id).join("stdout.txt").exists(),
            "{id}: no container ran"
        );
    }
    assert!(
        message(&r.task("missing")).contains(&format!(
            "{}/inputs/nope.txt?<redacted>: HTTP 404",
            az.endpoint()
        )),
        "{}",
        message(&r.task("missing"))
    );
    assert_no_sas(&n, &r);
    assert!(n.containers_left().is_empty());

    // Escapes are refused at validation: exit 2, the field named, nothing run.
    let r = n.run(
        &[],
        &json!([
            with("abs", json!({"httpUrl": az.blob_url("inputs", "here.txt", "r"), "filePath": "/etc/x"})),
            with("up", json!({"httpUrl": az.blob_url("inputs", "here.txt", "r"), "filePath": "a/../../x"})),
            with("mode", json!({"httpUrl": az.blob_url("inputs", "here.txt", "r"), "filePath": "x", "fileMode": "rwx"})),
        ]),
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    for needle in [
        "$[0].resourceFiles[0].filePath: \"/etc/x\" is absolute",
        "$[1].resourceFiles[0].filePath: \"a/../../x\" has a \"..\" component",
        "$[2].resourceFiles[0].fileMode: \"rwx\" is not an octal file mode",
    ] {
        assert!(r.stderr.contains(needle), "{needle}\n{}", r.stderr);
    }
    assert!(!r.stderr.contains("sig="), "{}", r.stderr);
}

/// Conditions, `**` with the hidden-file rule, a literal file to an exact blob name with
/// upload headers, stdout/stderr through `../std*.txt`, and a file large enough to go
/// up in blocks.
#[test]
fn output_files_follow_batch_rules() {
    let az = Azurite::start();
    az.create_container("outs");
    let n = TestNode::new("outfiles");
    let dest = |path: Option<&str>| {
        let mut c = json!({"containerUrl": az.container_url("outs", "rwc")});
        if let Some(p) = path {
            c["path"] = json!(p);
        }
        c
    };
    let outputs = |prefix: &str| {
        json!([
            {"filePattern": "out/**/*.txt", "destination": {"container": dest(Some(&format!("{prefix}/all")))},
             "uploadOptions": {"uploadCondition": "taskSuccess"}},
            {"filePattern": "out/**/.*.txt", "destination": {"container": dest(Some(&format!("{prefix}/hidden")))},
             "uploadOptions": {"uploadCondition": "TaskCompletion"}},
            {"filePattern": "result.json", "destination": {"container": {
                "containerUrl": az.container_url("outs", "rwc"), "path": format!("{prefix}/exact/name.json"),
                "uploadHeaders": [{"name": "Content-Type", "value": "application/json"},
                                  {"name": "x-ms-meta-origin", "value": "berth"}]}},
             "uploadOptions": {"uploadCondition": "taskFailure"}},
            {"filePattern": "../std*.txt", "destination": {"container": dest(Some(&format!("{prefix}/logs")))},
             "uploadOptions": {"uploadCondition": "taskcompletion"}},
            {"filePattern": "$BIGNAME", "destination": {"container": dest(Some(&format!("{prefix}/big.bin")))},
             "uploadOptions": {"uploadCondition": "taskCompletion"}}
        ])
    };
    let script = "mkdir -p out/sub/.h && echo a > out/a.txt && echo b > out/sub/b.txt && echo h > out/.hidden.txt && echo hh > out/sub/.h/c.txt && echo '{}' > result.json && head -c 9437185 /dev/zero | tr '\\\\0' x > big.bin && echo done && echo warn >&2; exit $CODE";
    let mk = |id: &str, code: i32| {
        let mut t = task(id, &format!("/bin/sh -c \"{script}\""), "");
        t["environmentSettings"] = json!([{"name": "CODE", "value": code.to_string()}, {"name": "BIGNAME", "value": "big.bin"}]);
        t["outputFiles"] = outputs(id);
        t
    };
    let r = n.run(&[], &json!([mk("ok", 0), mk("bad", 3)]));
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    let ok = r.task("ok");
    assert_eq!(ok["executionInfo"]["result"], "success", "{ok}");
    let bad = r.task("bad");
    assert_eq!(bad["executionInfo"]["exitCode"], 3);
    assert_eq!(failure_code(&bad), "FailureExitCode");

    let mut blobs = az.list("outs");
    blobs.sort();
    let expect = [
        "bad/big.bin",
        "bad/exact/name.json",
        "bad/hidden/.hidden.txt",
        "bad/logs/stderr.txt",
        "bad/logs/stdout.txt",
        "ok/all/a.txt",
        "ok/all/sub/b.txt",
        "ok/big.bin",
        "ok/hidden/.hidden.txt",
        "ok/logs/stderr.txt",
        "ok/logs/stdout.txt",
    ];
    assert_eq!(
        blobs, expect,
        "`**` skips hidden files and directories; conditions hold"
    );
    assert_eq!(az.get_blob("outs", "ok/all/sub/b.txt").unwrap(), b"b\n");
    assert_eq!(
        az.get_blob("outs", "ok/logs/stdout.txt").unwrap(),
        b"done\n"
    );
    let big = az.get_blob("outs", "ok/big.bin").unwrap();
    assert_eq!(
        big.len(),
        9437185,
        "three blocks of 4 MiB, the last one byte"
    );
    assert!(big.iter().all(|b| *b == b'x'));
    let headers = az.blob_headers("outs", "bad/exact/name.json");
    let get = |k: &str| {
        headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("content-type"), Some("application/json"), "{headers:?}");
    assert_eq!(get("x-ms-meta-origin"), Some("berth"), "{headers:?}");
    // The upload log sits in the task directory, without the SAS.
    let log = n.read("berthjob", "ok", "fileuploadout.txt");
    assert!(log.contains("ok/all/a.txt?<redacted>"), "{log}");
    assert_eq!(n.read("berthjob", "ok", "fileuploaderr.txt"), "");
    assert_no_sas(&n, &r);
}

/// A failed upload fails a task whose process succeeded, keeps its exit code, and says
/// why in fileuploaderr.txt; a task with no condition met writes no upload log.
#[test]
fn upload_failures_keep_the_exit_code() {
    let az = Azurite::start();
    az.create_container("readonly");
    let n = TestNode::new("upfail");
    let with = |id: &str, url: String, cond: &str| {
        let mut t = task(id, "/bin/sh -c 'echo r > r.txt'", "");
        t["outputFiles"] = json!([{"filePattern": "r.txt",
            "destination": {"container": {"containerUrl": url}},
            "uploadOptions": {"uploadCondition": cond}}]);
        t
    };
    let r = n.run(
        &[],
        &json!([
            with(
                "nocontainer",
                az.container_url("missing", "rwc"),
                "taskCompletion"
            ),
            with(
                "denied",
                az.container_url("readonly", "rl"),
                "taskCompletion"
            ),
            with("skipped", az.container_url("missing", "rwc"), "taskFailure"),
        ]),
    );
    for (id, code) in [
        ("nocontainer", "FileUploadContainerNotFound"),
        ("denied", "FileUploadAccessDenied"),
    ] {
        let t = r.task(id);
        assert_eq!(failure_code(&t), code, "{id}: {t}");
        assert_eq!(
            t["executionInfo"]["exitCode"], 0,
            "{id}: the exit code is kept"
        );
        assert_eq!(t["executionInfo"]["result"], "failure", "{id}");
        assert_eq!(t["executionInfo"]["failureInfo"]["category"], "usererror");
        let err = n.read("berthjob", id, "fileuploaderr.txt");
        assert!(
            err.contains("r.txt") && err.contains("<redacted>"),
            "{id}: {err}"
        );
    }
    let skipped = r.task("skipped");
    assert_eq!(skipped["executionInfo"]["result"], "success");
    assert!(!n
        .task_dir("berthjob", "skipped")
        .join("fileuploadout.txt")
        .exists());
    assert_no_sas(&n, &r);
}

/// Peak resident memory of a running process, in KiB (VmHWM only grows).
fn peak_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A file of several hundred MB (BERTH_TEST_BIG_MB, default 300) in and out: the bytes
/// arrive intact and berth's peak memory is that of a 1 MB transfer measured in the same
/// run plus at most 96 MiB (the parallel 8 MiB ranges in flight; memory that grew with
/// the file would add 300 MiB). The baseline makes the bound independent of the binary's
/// size.
#[test]
fn large_files_stream_in_constant_memory() {
    let mb = env_usize("BERTH_TEST_BIG_MB", 300);
    let az = Azurite::start();
    az.create_container("big");
    let small = transfer_peak(&az, "bigbase", 1);
    let peak = transfer_peak(&az, "bigfile", mb);
    println!(
        "{mb} MB in and out: berth peak RSS {} MiB (1 MB: {} MiB)",
        peak / 1024,
        small / 1024
    );
    assert!(
        peak < small + 96 * 1024,
        "berth's peak RSS was {} MiB for a {mb} MB file, {} MiB for 1 MB",
        peak / 1024,
        small / 1024
    );
}

/// Runs one task that downloads an `mb` MB resource file, copies it and uploads the copy;
/// checks both arrive intact; berth's peak RSS meanwhile, in KiB.
fn transfer_peak(az: &Azurite, name: &str, mb: usize) -> u64 {
    let n = TestNode::new(name);
    let src = n.dir.path().join("src.bin");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("head -c {}M /dev/urandom > {}", mb, src.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let blob_in = format!("{name}-in.bin");
    let blob_out = format!("{name}-out.bin");
    az.put_blob_file("big", &blob_in, &src);
    let mut t = task("big", "/bin/sh -c 'cp in.bin out.bin'", "");
    t["resourceFiles"] =
        json!([{"httpUrl": az.blob_url("big", &blob_in, "r"), "filePath": "in.bin"}]);
    t["outputFiles"] = json!([{"filePattern": "out.bin",
        "destination": {"container": {"containerUrl": az.container_url("big", "rwc"), "path": blob_out}},
        "uploadOptions": {"uploadCondition": "taskSuccess"}}]);
    let f = n.file("tasks.json", &json!([t]));
    let mut child = n
        .command()
        .arg("--json")
        .arg(&f)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(peak_kib(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wd = n.task_dir("berthjob", "big").join("wd");
    let want = std::fs::read(&src).unwrap();
    assert!(
        std::fs::read(wd.join("in.bin")).unwrap() == want,
        "download corrupted"
    );
    assert!(
        az.get_blob("big", &blob_out).unwrap() == want,
        "upload corrupted"
    );
    peak
}

/// A loopback web server for one test: `body` at any path, with `Range` honoured when
/// `ranges` is set, and the first answer for the range starting at `cut` dropped halfway
/// (a lost connection). Counts requests.
struct Origin {
    url: String,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn origin(body: Vec<u8>, ranges: bool, cut: Option<u64>) -> Origin {
    use std::io::{BufRead, Write};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/data.bin?sig=secret", l.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let (body, counter, was_cut) = (
        Arc::new(body),
        hits.clone(),
        Arc::new(AtomicBool::new(false)),
    );
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let (body, counter, was_cut) = (body.clone(), counter.clone(), was_cut.clone());
            std::thread::spawn(move || {
                let mut r = std::io::BufReader::new(s.try_clone().unwrap());
                let mut range = None;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end().to_ascii_lowercase();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.strip_prefix("range: bytes=") {
                        let (a, b) = v.split_once('-').unwrap();
                        range = Some((a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()));
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let len = body.len() as u64;
                let (head, part) = match range.filter(|_| ranges) {
                    Some((a, _)) if a >= len => {
                        let h = format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        (h, &body[0..0])
                    }
                    Some((a, b)) => {
                        let end = (b + 1).min(len);
                        let h = format!("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{}/{len}\r\nContent-Length: {}\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n", end - 1, end - a);
                        let mut part = &body[a as usize..end as usize];
                        if cut == Some(a) && !was_cut.swap(true, Ordering::SeqCst) {
                            part = &part[..part.len() / 2];
                        }
                        (h, part)
                    }
                    None => {
                        let h = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                        );
                        (h, &body[..])
                    }
                };
                s.write_all(head.as_bytes()).ok();
                s.write_all(part).ok();
            });
        }
    });
    Origin { url, hits }
}

/// Large downloads go in parallel ranges: a range whose connection drops is fetched
/// again on its own, a server that ignores `Range` still gives the whole file, and
/// empty files (which have no first range) arrive empty.
#[test]
fn ranged_downloads_retry_a_dropped_range() {
    let big: Vec<u8> = (0..(16u64 << 20) + 12345)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    // Ranges are 8 MiB: three of them, the second cut once.
    let ranged = origin(big.clone(), true, Some(8 << 20));
    let plain = origin(big.clone(), false, None);
    let empty_origin = origin(Vec::new(), true, None);
    let az = Azurite::start();
    az.create_container("inputs");
    az.put_blob("inputs", "empty.txt", b"");
    let n = TestNode::new("ranges");
    let mut t = task(
        "ranges",
        "/bin/sh -c 'wc -c < ranged.bin; wc -c < plain.bin; wc -c < empty.txt; wc -c < empty.bin'",
        "",
    );
    t["resourceFiles"] = json!([
        {"httpUrl": ranged.url, "filePath": "ranged.bin"},
        {"httpUrl": plain.url, "filePath": "plain.bin"},
        {"httpUrl": az.blob_url("inputs", "empty.txt", "r"), "filePath": "empty.txt"},
        {"httpUrl": empty_origin.url, "filePath": "empty.bin"},
    ]);
    let r = n.run(&[], &json!([t]));
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    let len = big.len();
    assert_eq!(
        n.read("berthjob", "ranges", "stdout.txt")
            .split_whitespace()
            .collect::<Vec<_>>(),
        [len.to_string(), len.to_string(), "0".into(), "0".into()]
    );
    let wd = n.task_dir("berthjob", "ranges").join("wd");
    assert!(
        std::fs::read(wd.join("ranged.bin")).unwrap() == big,
        "ranged download corrupted"
    );
    assert!(
        std::fs::read(wd.join("plain.bin")).unwrap() == big,
        "plain download corrupted"
    );
    use std::sync::atomic::Ordering::SeqCst;
    assert_eq!(ranged.hits.load(SeqCst), 4, "three ranges and one retry");
    assert_eq!(
        plain.hits.load(SeqCst),
        1,
        "one GET when ranges are ignored"
    );
    // The 416 for an empty file's first range, then a plain GET.
    assert_eq!(empty_origin.hits.load(SeqCst), 2);
    assert_no_sas(&n, &r);
}

/// A host task (a pool without containers) gets its resource files as its own user and
/// sends its outputs up, a failed one with `taskFailure` too.
#[test]
fn host_tasks_download_and_upload() {
    let az = Azurite::start();
    az.create_container("hin");
    az.create_container("hout");
    az.put_blob("hin", "input.txt", b"from blob\n");
    let n = TestNode::new("hostfiles");
    let pool = n.file("pool.json", &json!({"id": "hostpool"}));
    // A wildcard's `path` is a prefix; a literal file's is its blob name.
    let out = |pattern: &str, path: &str, cond: &str| {
        json!({"filePattern": pattern,
            "destination": {"container": {"containerUrl": az.container_url("hout", "rwc"), "path": path}},
            "uploadOptions": {"uploadCondition": cond}})
    };
    let ok = json!({"id": "hostok",
        "commandLine": "/bin/sh -c 'mkdir -p res/sub && cp in.txt res/copy.txt && id -u > res/sub/uid.txt'",
        "resourceFiles": [{"httpUrl": az.blob_url("hin", "input.txt", "r"), "filePath": "in.txt"}],
        "outputFiles": [out("res/**/*.txt", "host", "taskSuccess"), out("../stdout.txt", "host/stdout.txt", "taskFailure")]});
    let bad = json!({"id": "hostbad",
        "commandLine": "/bin/sh -c 'echo partial > part.txt; exit 3'",
        "outputFiles": [out("part.txt", "host/part.txt", "taskFailure"), out("never.txt", "host/never.txt", "taskSuccess")]});
    let r = n.run(&["--pool", pool.to_str().unwrap()], &json!([ok, bad]));
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.task("hostok")["executionInfo"]["result"], "success");
    let t = r.task("hostbad");
    assert_eq!(t["executionInfo"]["exitCode"], 3, "{t}");
    assert_eq!(failure_code(&t), "FailureExitCode", "{t}");
    let (uid, _) = azbatch();
    let mut blobs = az.list("hout");
    blobs.sort();
    assert_eq!(
        blobs,
        ["host/copy.txt", "host/part.txt", "host/sub/uid.txt"],
        "only the conditions that held"
    );
    assert_eq!(
        az.get_blob("hout", "host/copy.txt").unwrap(),
        b"from blob\n"
    );
    assert_eq!(
        String::from_utf8(az.get_blob("hout", "host/sub/uid.txt").unwrap()).unwrap(),
        format!("{uid}\n"),
        "the host task ran as the task user"
    );
    let wd = n.task_dir("berthjob", "hostok").join("wd");
    assert_eq!(std::fs::metadata(wd.join("in.txt")).unwrap().uid(), uid);
    assert!(n
        .read("berthjob", "hostbad", "fileuploadout.txt")
        .contains("part.txt"));
    assert_no_sas(&n, &r);
}
