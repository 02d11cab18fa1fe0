//! Image prefetch against a local registry, measured in the same run three ways:
//!
//! * sequential: `docker pull` of each image, one after another
//! * parallel:   `docker pull` of every image at once
//! * berth:      `berth pool start` with the images as `containerImageNames`
//!
//! K images (default 4) of L layers (default 3) of S MB of random data (default 20) are
//! built offline and pushed to Debian's docker-registry on loopback. Before every timed
//! pull the images are removed, so every layer is downloaded and extracted again. Prints
//! the median of R rounds (default 3) and the ratios, for two registries:
//!
//! * loopback: the registry itself (no network cost: the machine's CPUs bound everything)
//! * remote-like: the same registry behind a proxy that lets each connection carry at most
//!   M MB/s (default 16), as a registry across a WAN does
//!
//! Run: `cargo bench -p berth-tests --bench prefetch` (env BERTH_BENCH_K, _LAYERS, _MB,
//! _ROUNDS, _MBPS).
#![allow(clippy::disallowed_types)]

use berth_tests::{berth_bin, docker, engine_host, env_usize as env, TestRegistry};
use std::process::Command;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ok(out: std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn remove(images: &[String]) {
    let mut args = vec!["rmi", "-f"];
    args.extend(images.iter().map(String::as_str));
    docker(&args);
}

fn build(reg: &TestRegistry, k: usize, layers: usize, mb: usize) -> Vec<String> {
    let mut out = vec![];
    for i in 0..k {
        let ctx = tempfile::tempdir().unwrap();
        let mut dockerfile = String::from("FROM scratch\n");
        for l in 0..layers {
            let f = ctx.path().join(format!("l{l}"));
            ok(
                Command::new("head")
                    .args(["-c", &format!("{}", mb << 20), "/dev/urandom"])
                    .stdout(std::fs::File::create(&f).unwrap())
                    .output()
                    .unwrap(),
                "random data",
            );
            dockerfile.push_str(&format!("COPY l{l} /l{l}\n"));
        }
        std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
        let tag = format!("berth-bench-prefetch-{i}");
        let mut c = Command::new("docker");
        c.arg("-H")
            .arg(engine_host())
            .args(["build", "-q", "-t", &tag])
            .arg(ctx.path());
        ok(c.output().unwrap(), "docker build");
        out.push(reg.push(&tag, &format!("bench/img{i}:1")));
        docker(&["rmi", &tag]);
    }
    out
}

fn pull(image: &str) -> Command {
    let mut c = Command::new("docker");
    c.arg("-H").arg(engine_host()).args(["pull", "-q", image]);
    c
}

fn sequential(images: &[String]) -> Duration {
    let t = Instant::now();
    for i in images {
        ok(pull(i).output().unwrap(), "docker pull");
    }
    t.elapsed()
}

fn parallel(images: &[String]) -> Duration {
    let t = Instant::now();
    let children: Vec<_> = images.iter().map(|i| pull(i).spawn().unwrap()).collect();
    for c in children {
        assert!(c.wait_with_output().unwrap().status.success());
    }
    t.elapsed()
}

fn berth(images: &[String], k: usize) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let pool = serde_json::json!({"id": "bench", "virtualMachineConfiguration": {"containerConfiguration": {
        "type": "dockerCompatible", "containerImageNames": images}}});
    let f = dir.path().join("pool.json");
    std::fs::write(&f, pool.to_string()).unwrap();
    let t = Instant::now();
    let out = Command::new(berth_bin())
        .args(["pool", "start", "--engine", engine_host(), "--node-root"])
        .arg(dir.path().join("root"))
        .arg("--pool")
        .arg(&f)
        .args(["--prefetch-concurrency", &k.to_string()])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let d = t.elapsed();
    ok(out, "berth pool start");
    d
}

/// A TCP proxy to `upstream` that sends each connection's answers at most `bytes_per_s`.
fn throttled_proxy(upstream: String, bytes_per_s: u64) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for client in l.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                std::io::copy(&mut c_in, &mut s_out).ok();
                s_out.shutdown(std::net::Shutdown::Write).ok();
            });
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut sent = 0u64;
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n) = s_in.read(&mut buf) {
                    if n == 0 || c_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n as u64;
                    let due = Duration::from_secs_f64(sent as f64 / bytes_per_s as f64);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                c_out.shutdown(std::net::Shutdown::Write).ok();
            });
        }
    });
    addr
}

fn measure(label: &str, images: &[String], k: usize, rounds: usize) {
    // Warm the registry's page cache; untimed.
    remove(images);
    parallel(images);
    let (mut s, mut p, mut b) = (vec![], vec![], vec![]);
    for r in 0..rounds {
        remove(images);
        s.push(sequential(images));
        remove(images);
        p.push(parallel(images));
        remove(images);
        b.push(berth(images, k));
        eprintln!(
            "{label} round {r}: sequential {:?}, parallel {:?}, berth {:?}",
            s[r], p[r], b[r]
        );
    }
    remove(images);
    let (s, p, b) = (median(s), median(p), median(b));
    println!("{label}:");
    println!("  sequential docker pull: {:8.2} s", s.as_secs_f64());
    println!("  parallel docker pull:   {:8.2} s", p.as_secs_f64());
    println!("  berth pool start:       {:8.2} s", b.as_secs_f64());
    println!(
        "  berth / parallel:   {:.2}x (target <= 1.0, i.e. no slower)",
        b.as_secs_f64() / p.as_secs_f64()
    );
    println!(
        "  sequential / berth: {:.2}x (target >= 2.0)",
        s.as_secs_f64() / b.as_secs_f64()
    );
}

fn main() {
    let (k, layers, mb, rounds) = (
        env("BERTH_BENCH_K", 4),
        env("BERTH_BENCH_LAYERS", 3),
        env("BERTH_BENCH_MB", 20),
        env("BERTH_BENCH_ROUNDS", 3),
    );
    let reg = TestRegistry::start();
    eprintln!("building and pushing {k} images of {layers} x {mb} MB...");
    let images = build(&reg, k, layers, mb);
    let mbps = env("BERTH_BENCH_MBPS", 16);
    println!("prefetch of {k} images x {layers} layers x {mb} MB, median of {rounds} rounds");
    measure("loopback registry", &images, k, rounds);
    let proxy = throttled_proxy(reg.addr.clone(), (mbps as u64) << 20);
    let remote: Vec<String> = images
        .iter()
        .map(|i| i.replacen(&reg.addr, &proxy, 1))
        .collect();
    measure(
        &format!("remote-like registry ({mbps} MB/s per connection)"),
        &remote,
        k,
        rounds,
    );
}
