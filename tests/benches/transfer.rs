//! Resource-file download and output-file upload of one large file against Azurite on
//! loopback, measured in the same run two ways:
//!
//! * curl:  `curl -o` of the blob's SAS URL; `curl -T` with one Put Blob
//! * berth: the agent's own transfer code (`files::resources::download`,
//!   `files::outputs::upload_file`), in this process
//!
//! Prints MB/s (median of R rounds, alternating who goes first), berth/curl ratios, and
//! the growth of this process's peak RSS during berth's transfers (VmHWM reset through
//! /proc/self/clear_refs before each). Targets: ratio >= 0.8, RSS growth < 32 MiB.
//!
//! Run: `cargo bench -p berth-tests --bench transfer` (env BERTH_BENCH_MB, default 512;
//! BERTH_BENCH_ROUNDS, default 3; BERTH_BENCH_BLOCK_KB and BERTH_BENCH_BLOCKS override the
//! upload's block size and blocks in flight).
#![allow(clippy::disallowed_types)]

use berth_agent::files::{outputs, resources, Limits, Transfers};
use berth_proto::{ResourceFile, SecretUrl};
use berth_tests::azurite::Azurite;
use berth_tests::env_usize as env;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs `f` and returns how far the peak RSS rose above the RSS before it, in KiB.
async fn rss_growth<F: std::future::Future<Output = ()>>(f: F) -> u64 {
    // Writing 5 resets VmHWM to the current RSS (proc(5)).
    std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
    let before = status_kib("VmRSS:");
    f.await;
    status_kib("VmHWM:").saturating_sub(before)
}

fn curl(args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "--fail"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

#[tokio::main]
async fn main() {
    let mb = env("BERTH_BENCH_MB", 512);
    let rounds = env("BERTH_BENCH_ROUNDS", 3).max(1);
    let az = Azurite::start();
    az.create_container("bench");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.bin");
    let made = Command::new("sh")
        .arg("-c")
        .arg(format!("head -c {mb}M /dev/urandom > {}", src.display()))
        .status()
        .unwrap();
    assert!(made.success());
    let bytes = std::fs::metadata(&src).unwrap().len() as f64;
    az.put_blob_file("bench", "src.bin", &src);
    let defaults = Limits::default();
    let limits = Limits {
        block_size: env("BERTH_BENCH_BLOCK_KB", defaults.block_size >> 10) << 10,
        block_concurrency: env("BERTH_BENCH_BLOCKS", defaults.block_concurrency),
        ..defaults
    };
    println!(
        "berth: blocks of {} KiB, {} in flight",
        limits.block_size >> 10,
        limits.block_concurrency
    );
    let t = Transfers::new(limits).unwrap();
    let cancel = CancellationToken::new();
    let (mut curl_down, mut berth_down, mut curl_up, mut berth_up) =
        (vec![], vec![], vec![], vec![]);
    let (mut rss_down, mut rss_up) = (0u64, 0u64);
    let mbps = |d: Duration| bytes / 1e6 / d.as_secs_f64();
    println!(
        "transfer: {mb} MB, {rounds} rounds, Azurite on 127.0.0.1:{}",
        az.port
    );
    for round in 0..rounds {
        let wd = dir.path().join(format!("wd{round}"));
        std::fs::create_dir_all(&wd).unwrap();
        let src_url = az.blob_url("bench", "src.bin", "r");
        let curl_dl = |name: &str| curl(&["-o", &wd.join(name).to_string_lossy(), &src_url]);
        let file = ResourceFile {
            http_url: Some(SecretUrl::new(src_url.clone())),
            file_path: Some("berth.bin".into()),
            ..Default::default()
        };
        let berth_dl = || async {
            let t0 = Instant::now();
            let growth = rss_growth(async {
                let wd = berth_agent::node::Beneath::open(&wd).unwrap();
                resources::download(&t, std::slice::from_ref(&file), &wd, None, &cancel)
                    .await
                    .unwrap();
            })
            .await;
            (t0.elapsed(), growth)
        };
        let up = |who: &str| outputs::Upload {
            file: src.file_name().unwrap().into(),
            url: az.blob_url("bench", &format!("{who}-{round}.bin"), "rwc"),
            headers: vec![],
        };
        let curl_ul = || {
            let u = up("curl");
            curl(&[
                "-X",
                "PUT",
                "-H",
                "x-ms-blob-type: BlockBlob",
                "-T",
                &src.to_string_lossy(),
                &u.url,
            ])
        };
        let berth_ul = || async {
            let u = up("berth");
            let t0 = Instant::now();
            let growth = rss_growth(async {
                let dir = berth_agent::node::Beneath::open(src.parent().unwrap()).unwrap();
                outputs::upload_file(&t, &u, &dir).await.unwrap();
            })
            .await;
            (t0.elapsed(), growth)
        };
        // Alternate who goes first, so neither always meets a warmer cache.
        if round % 2 == 0 {
            curl_down.push(mbps(curl_dl("curl.bin")));
            let (d, g) = berth_dl().await;
            berth_down.push(mbps(d));
            rss_down = rss_down.max(g);
            curl_up.push(mbps(curl_ul()));
            let (d, g) = berth_ul().await;
            berth_up.push(mbps(d));
            rss_up = rss_up.max(g);
        } else {
            let (d, g) = berth_dl().await;
            berth_down.push(mbps(d));
            rss_down = rss_down.max(g);
            curl_down.push(mbps(curl_dl("curl.bin")));
            let (d, g) = berth_ul().await;
            berth_up.push(mbps(d));
            rss_up = rss_up.max(g);
            curl_up.push(mbps(curl_ul()));
        }
        assert_eq!(
            std::fs::metadata(wd.join("berth.bin")).unwrap().len() as f64,
            bytes
        );
        std::fs::remove_dir_all(&wd).unwrap();
    }
    let (cd, bd, cu, bu) = (
        median(curl_down),
        median(berth_down),
        median(curl_up),
        median(berth_up),
    );
    println!("download  curl {cd:8.1} MB/s   berth {bd:8.1} MB/s   berth/curl {:.2}   berth peak RSS growth {:.1} MiB", bd / cd, rss_down as f64 / 1024.0);
    println!("upload    curl {cu:8.1} MB/s   berth {bu:8.1} MB/s   berth/curl {:.2}   berth peak RSS growth {:.1} MiB", bu / cu, rss_up as f64 / 1024.0);
    println!("targets: berth/curl >= 0.80, RSS growth < 32 MiB");
}
