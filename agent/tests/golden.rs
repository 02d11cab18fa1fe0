//! Golden create bodies: representative Batch tasks through the whole pure create stage
//! (plan -> run options -> `create::request`, GPUs included) compared with the JSON in
//! `tests/golden/<case>.json`, byte for byte. A change to what berth asks the engine for
//! shows here as a diff to review. `BERTH_BLESS=1 cargo test -p berth-agent --test golden`
//! rewrites the files after a deliberate change.

use berth_agent::gpu::expose;
use berth_agent::gpu::{Exposure, Inventory};
use berth_agent::node::{NodeLayout, ResolvedUser};
use berth_agent::task::create::{self, ContainerIdentity};
use berth_agent::task::plan::{self, NodeFacts};
use berth_agent::task::run_options;
use berth_proto::{JobSpec, NodeGpu, TaskSpec};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn node() -> NodeFacts {
    NodeFacts {
        node_id: "node-1".into(),
        pool_id: "pool-1".into(),
        account_name: "berth".into(),
        layout: NodeLayout::new("/mnt/batch/tasks"),
    }
}

fn user(admin: bool) -> ResolvedUser {
    ResolvedUser {
        name: if admin { "root" } else { "_azbatch" }.into(),
        uid: if admin { 0 } else { 4399 },
        gid: if admin { 0 } else { 4398 },
        admin,
        identity: if admin { "PoolAdmin" } else { "PoolNonAdmin" }.into(),
    }
}

/// Two GPUs, their control devices, the driver's library and tool, one RDMA device.
fn inventory() -> Inventory {
    let gpu = |i: u32| NodeGpu {
        index: i,
        uuid: format!("GPU-{i}"),
        name: "NVIDIA H100".into(),
        memory_bytes: 80 << 30,
        minor_number: i,
        mig_enabled: false,
    };
    Inventory {
        gpus: vec![gpu(0), gpu(1)],
        driver_version: "580.1".into(),
        cuda_version: "13.0".into(),
        control_devices: vec!["/dev/nvidiactl".into(), "/dev/nvidia-uvm".into()],
        libraries: vec![("libcuda.so.1".into(), "/drv/libcuda.so.580.1".into())],
        binaries: vec![PathBuf::from("/usr/bin/nvidia-smi")],
        infiniband: vec!["/dev/infiniband/uverbs0".into()],
        none_reason: None,
    }
}

struct Case {
    name: &'static str,
    job: Value,
    task: Value,
    admin: bool,
    /// GPUs given (positions in the inventory) and how they are exposed.
    gpus: Vec<usize>,
    exposure: Exposure,
    image_env: Vec<&'static str>,
}

fn case(name: &'static str, task: Value) -> Case {
    Case {
        name,
        job: json!({"id": "job-1"}),
        task,
        admin: false,
        gpus: vec![],
        exposure: Exposure::Off,
        image_env: vec![],
    }
}

fn cases() -> Vec<Case> {
    vec![
        case(
            "minimal",
            json!({"id": "t1", "commandLine": "/bin/sh -c 'echo hello'",
                "containerSettings": {"imageName": "busybox"}}),
        ),
        case(
            "image_default_workdir",
            json!({"id": "t2", "commandLine": "python train.py --epochs 3",
                "containerSettings": {"imageName": "myregistry.azurecr.io/ml/train:1.2",
                    "workingDirectory": "containerImageDefault"}}),
        ),
        Case {
            job: json!({"id": "job-1", "commonEnvironmentSettings": [
                {"name": "STAGE", "value": "job"}, {"name": "SHARED", "value": "from-job"}]}),
            ..case(
                "environment_layers",
                json!({"id": "t3", "commandLine": "env",
                    "environmentSettings": [{"name": "STAGE", "value": "task"},
                        {"name": "ONLY_TASK", "value": "1"}],
                    "containerSettings": {"imageName": "busybox",
                        "containerRunOptions": "-e STAGE=flag -e FROM_FLAG=1"}}),
            )
        },
        Case {
            admin: true,
            ..case(
                "admin_elevation",
                json!({"id": "t4", "commandLine": "apt-get update",
                    "userIdentity": {"autoUser": {"scope": "pool", "elevationLevel": "admin"}},
                    "containerSettings": {"imageName": "debian:12"}}),
            )
        },
        case(
            "run_options",
            json!({"id": "t5", "commandLine": "/app/run",
                "constraints": {"maxWallClockTime": "PT1H", "maxTaskRetryCount": 2},
                "containerSettings": {"imageName": "busybox",
                    "containerRunOptions": "--rm --memory 512m --cpus 1.5 --shm-size 1g --ulimit nofile=1024:2048 -v /mnt/batch/tasks/shared:/data:ro --user 1000:1000 --entrypoint '' --label team=ml --stop-timeout 30 --network none --init --read-only --tmpfs /tmp:size=64m"}}),
        ),
        Case {
            gpus: vec![1],
            exposure: Exposure::DeviceRequests,
            ..case(
                "gpu_device_requests",
                json!({"id": "t6", "commandLine": "nvidia-smi",
                    "containerSettings": {"imageName": "nvidia/cuda:12.4.0-base-ubuntu22.04"}}),
            )
        },
        Case {
            gpus: vec![0, 1],
            exposure: Exposure::Manual,
            image_env: vec!["LD_LIBRARY_PATH=/opt/lib", "PATH=/usr/bin"],
            ..case(
                "gpu_manual",
                json!({"id": "t7", "commandLine": "nvidia-smi",
                    "containerSettings": {"imageName": "nvidia/cuda:12.4.0-base-ubuntu22.04"}}),
            )
        },
    ]
}

/// The create body of `c`, as the JSON the engine receives (keys sorted).
fn request(c: &Case) -> Value {
    let spec: TaskSpec = serde_json::from_value(c.task.clone()).unwrap();
    let job: JobSpec = serde_json::from_value(c.job.clone()).unwrap();
    let node = node();
    let mut plan = plan::task(&spec, &job, &node, user(c.admin)).unwrap();
    let inv = inventory();
    plan.gpus = c.gpus.iter().map(|&i| inv.gpus[i].clone()).collect();
    let opts = run_options::parse(&plan.container.as_ref().unwrap().run_options).unwrap();
    let who = ContainerIdentity {
        node_id: node.node_id.clone(),
        pool_id: node.pool_id.clone(),
        attempt: 0,
        pool_attempt: None,
    };
    let add = expose::additions(
        &inv,
        c.exposure,
        &plan.gpus,
        expose::task_chose_gpus(&opts.host),
    );
    let image_env: Vec<String> = c.image_env.iter().map(|s| s.to_string()).collect();
    let (body, _notes) = create::request(&plan, &opts, &who, Some(4096), &add, &image_env).unwrap();
    serde_json::to_value(&body).unwrap()
}

#[test]
fn create_bodies_match_their_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var_os("BERTH_BLESS").is_some();
    let mut differ = vec![];
    for c in cases() {
        let got = serde_json::to_string_pretty(&request(&c)).unwrap() + "\n";
        let file = dir.join(format!("{}.json", c.name));
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&file, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e} (BERTH_BLESS=1 writes it)", file.display()));
        if got != want {
            eprintln!("--- {} differs; got:\n{got}", file.display());
            differ.push(c.name);
        }
    }
    assert!(differ.is_empty(), "create bodies changed: {differ:?}");
}
