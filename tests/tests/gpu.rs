//! GPUs on a node without any (CI): discovery finds none and says nothing is wrong, tasks
//! that ask for GPUs fail with a clear code, and no GPU variable or device is added.
//! The GPU half runs on a GPU machine with `scripts/gpu-test.sh` (README, "GPUs").

use berth_tests::*;
use serde_json::{json, Value};

fn has_gpu() -> bool {
    std::path::Path::new("/dev/nvidiactl").exists()
}

fn with_env(mut t: Value, name: &str, value: &str) -> Value {
    t["environmentSettings"] = json!([{"name": name, "value": value}]);
    t
}

#[test]
fn gpu_requests_on_a_node_without_gpus() {
    if has_gpu() {
        eprintln!("skipped: this machine has a GPU; scripts/gpu-test.sh covers it");
        return;
    }
    let n = TestNode::new("nogpu");
    let tasks = json!([
        with_env(task("one", "true", ""), "BERTH_GPUS", "1"),
        with_env(task("words", "true", ""), "BERTH_GPUS", "two"),
        with_env(task("zero", "true", ""), "BERTH_GPUS", "0"),
        task("plain", "env", ""),
    ]);
    let r = n.run(&["--gpu-exposure", "manual"], &tasks);
    assert_eq!(r.code, Some(1), "two tasks fail: {}", r.stderr);
    for (id, msg) in [
        ("one", "BERTH_GPUS=1 asks for 1 GPUs; this node has 0"),
        ("words", "BERTH_GPUS=\"two\" is not a number of GPUs"),
    ] {
        let t = r.task(id);
        let f = &t["executionInfo"]["failureInfo"];
        assert_eq!(f["code"], "GpuRequestInvalid", "{t}");
        assert_eq!(f["category"], "usererror");
        assert!(
            f["details"][0]["value"].as_str().unwrap().contains(msg),
            "{t}"
        );
        assert!(
            t["executionInfo"].get("exitCode").is_none(),
            "never started: {t}"
        );
    }
    assert_eq!(r.task("zero")["executionInfo"]["result"], "success");
    let env = n.read("berthjob", "plain", "stdout.txt");
    assert!(
        !env.contains("NVIDIA_VISIBLE_DEVICES")
            && !env.contains("CUDA_VISIBLE_DEVICES")
            && !env.contains("LD_LIBRARY_PATH"),
        "{env}"
    );
    assert!(n.containers_left().is_empty());

    // The node reports no GPUs: the key is absent, as for any node without them.
    let node = n.pool_start(&json!({"id": "p"}), &[]);
    assert_eq!(node.code, Some(0), "{}", node.stderr);
    let node: Value = serde_json::from_str(&node.stdout).unwrap();
    assert!(node.get("gpus").is_none(), "{node}");
}

#[test]
fn bad_gpu_exposure_is_refused() {
    let n = TestNode::new("gpuflag");
    let r = n.run(&["--gpu-exposure", "cuda"], &json!([task("t", "true", "")]));
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "\"cuda\" is not a GPU exposure; use auto, device-requests, runtime, manual or off"
        ),
        "{}",
        r.stderr
    );
}
