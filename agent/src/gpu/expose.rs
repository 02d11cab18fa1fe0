//! What a container's create body gains for its GPUs and the node's RDMA devices. Pure:
//! `additions` from the inventory and the task's GPUs, `apply` onto the body.
//!
//! A task's own `--gpus`, `--runtime nvidia` or `--device /dev/nvidia*` means the task chose
//! its GPUs itself: berth then adds no GPU device, mount, runtime or variable of its own.

use super::{Exposure, Inventory};
use berth_proto::NodeGpu;
use bollard::models::{ContainerCreateBody, DeviceMapping, DeviceRequest, HostConfig};

/// Where the driver's libraries go inside the container: the directory CUDA images already
/// have in `LD_LIBRARY_PATH`.
pub const LIB_DIR: &str = "/usr/local/nvidia/lib64";
/// Where the driver's tools go, as the toolkit does: on every image's default `PATH`.
pub const BIN_DIR: &str = "/usr/bin";

/// What a container gains.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Additions {
    pub devices: Vec<DeviceMapping>,
    pub binds: Vec<String>,
    pub device_requests: Vec<DeviceRequest>,
    pub runtime: Option<String>,
    /// Set over whatever the task or image set.
    pub env: Vec<(String, String)>,
    /// Set only where neither the task nor the image set them.
    pub default_env: Vec<(String, String)>,
    /// Added to the library path the container would otherwise have.
    pub library_dir: Option<String>,
}

/// The task chose its GPUs through its own options.
pub fn task_chose_gpus(host: &HostConfig) -> bool {
    host.device_requests.as_ref().is_some_and(|d| !d.is_empty())
        || host.runtime.as_deref() == Some("nvidia")
        || host.devices.as_ref().is_some_and(|d| {
            d.iter().any(|m| {
                m.path_on_host
                    .as_deref()
                    .is_some_and(|p| p.starts_with("/dev/nvidia"))
            })
        })
}

/// `NVIDIA_VISIBLE_DEVICES` and `CUDA_VISIBLE_DEVICES`, both the UUIDs of `gpus` (`void`
/// and empty when a task on a GPU node gets none, so that an image's `all` or an engine
/// whose default runtime is `nvidia` gives it nothing).
pub fn visible_env(gpus: &[NodeGpu]) -> Vec<(String, String)> {
    let uuids: Vec<&str> = gpus.iter().map(|g| g.uuid.as_str()).collect();
    let list = uuids.join(",");
    vec![
        (
            "NVIDIA_VISIBLE_DEVICES".into(),
            if list.is_empty() {
                "void".into()
            } else {
                list.clone()
            },
        ),
        ("CUDA_VISIBLE_DEVICES".into(), list),
    ]
}

fn device(path: &str) -> DeviceMapping {
    DeviceMapping {
        path_on_host: Some(path.into()),
        path_in_container: Some(path.into()),
        cgroup_permissions: Some("rwm".into()),
    }
}

/// What a container task given `gpus` gains on a node with `inv`, exposed per `exposure`.
impl Additions {
    /// Whether applying these needs the image's own `Env` (a library path to extend, or
    /// defaults set only where the image sets none).
    pub fn needs_image_env(&self) -> bool {
        self.library_dir.is_some() || !self.default_env.is_empty()
    }
}

pub fn additions(
    inv: &Inventory,
    exposure: Exposure,
    gpus: &[NodeGpu],
    task_chose: bool,
) -> Additions {
    let mut a = Additions {
        devices: inv
            .infiniband
            .iter()
            .map(|p| device(&p.to_string_lossy()))
            .collect(),
        ..Default::default()
    };
    if inv.gpus.is_empty() || exposure == Exposure::Off || task_chose {
        return a;
    }
    a.env = visible_env(gpus);
    if gpus.is_empty() {
        return a;
    }
    match exposure {
        Exposure::DeviceRequests => a.device_requests.push(DeviceRequest {
            driver: Some("nvidia".into()),
            device_ids: Some(gpus.iter().map(|g| g.uuid.clone()).collect()),
            capabilities: Some(vec![vec!["gpu".into(), "compute".into(), "utility".into()]]),
            ..Default::default()
        }),
        Exposure::Runtime => {
            a.runtime = Some("nvidia".into());
            a.default_env.push((
                "NVIDIA_DRIVER_CAPABILITIES".into(),
                "compute,utility".into(),
            ));
        }
        Exposure::Manual => {
            for p in &inv.control_devices {
                a.devices.push(device(&p.to_string_lossy()));
            }
            for g in gpus {
                a.devices
                    .push(device(&format!("/dev/nvidia{}", g.minor_number)));
            }
            for (name, host) in &inv.libraries {
                a.binds
                    .push(format!("{}:{LIB_DIR}/{name}:ro", host.to_string_lossy()));
            }
            for b in &inv.binaries {
                if let Some(name) = b.file_name() {
                    a.binds.push(format!(
                        "{}:{BIN_DIR}/{}:ro",
                        b.to_string_lossy(),
                        name.to_string_lossy()
                    ));
                }
            }
            a.library_dir = Some(LIB_DIR.into());
        }
        Exposure::Off => {}
    }
    a
}

fn env_get<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix(key)?.strip_prefix('='))
}

/// Puts `add` into `body`. `image_env` is the image's `Env`, so that a library path the
/// image sets is extended rather than replaced. Returns notes worth logging.
pub fn apply(body: &mut ContainerCreateBody, add: &Additions, image_env: &[String]) -> Vec<String> {
    let mut notes = vec![];
    let host = body.host_config.get_or_insert_with(HostConfig::default);
    if !add.devices.is_empty() {
        let devices = host.devices.get_or_insert_with(Vec::new);
        for d in &add.devices {
            if !devices.iter().any(|m| m.path_on_host == d.path_on_host) {
                devices.push(d.clone());
            }
        }
    }
    if !add.binds.is_empty() {
        host.binds
            .get_or_insert_with(Vec::new)
            .extend(add.binds.iter().cloned());
    }
    if !add.device_requests.is_empty() {
        host.device_requests
            .get_or_insert_with(Vec::new)
            .extend(add.device_requests.iter().cloned());
    }
    if add.runtime.is_some() && host.runtime.is_none() {
        host.runtime = add.runtime.clone();
    }
    let env = body.env.get_or_insert_with(Vec::new);
    for (k, v) in &add.env {
        if env_get(env, k).is_some_and(|old| old != v) {
            notes.push(format!(
                "{k} is set by berth from the task's GPUs; the task's own value was replaced"
            ));
        }
        env.retain(|e| e.split_once('=').map(|(n, _)| n) != Some(k));
        env.push(format!("{k}={v}"));
    }
    for (k, v) in &add.default_env {
        if env_get(env, k).is_none() && env_get(image_env, k).is_none() {
            env.push(format!("{k}={v}"));
        }
    }
    if let Some(dir) = &add.library_dir {
        let current = env_get(env, "LD_LIBRARY_PATH")
            .or_else(|| env_get(image_env, "LD_LIBRARY_PATH"))
            .unwrap_or("")
            .to_string();
        if !current.split(':').any(|p| p == dir) {
            let path = if current.is_empty() {
                dir.clone()
            } else {
                format!("{current}:{dir}")
            };
            env.retain(|e| !e.starts_with("LD_LIBRARY_PATH="));
            env.push(format!("LD_LIBRARY_PATH={path}"));
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::path::PathBuf;

    fn gpu(i: u32) -> NodeGpu {
        NodeGpu {
            index: i,
            uuid: format!("GPU-{i}"),
            name: "NVIDIA H100".into(),
            memory_bytes: 80 << 30,
            minor_number: i + 4,
            mig_enabled: false,
        }
    }

    /// A fake inventory: two GPUs, the control devices, two libraries, one tool, one RDMA
    /// device.
    fn inventory() -> Inventory {
        Inventory {
            gpus: vec![gpu(0), gpu(1)],
            driver_version: "580.1".into(),
            cuda_version: "13.0".into(),
            control_devices: vec!["/dev/nvidiactl".into(), "/dev/nvidia-uvm".into()],
            libraries: vec![
                ("libcuda.so.1".into(), "/drv/libcuda.so.580.1".into()),
                ("libcuda.so.580.1".into(), "/drv/libcuda.so.580.1".into()),
            ],
            binaries: vec![PathBuf::from("/usr/bin/nvidia-smi")],
            infiniband: vec!["/dev/infiniband/uverbs0".into()],
            none_reason: None,
        }
    }

    fn body(env: &[&str], host: HostConfig) -> ContainerCreateBody {
        ContainerCreateBody {
            env: Some(env.iter().map(|s| s.to_string()).collect()),
            host_config: Some(host),
            ..Default::default()
        }
    }

    /// One row per exposure mode: the create body's GPU fields on the wire.
    #[test]
    fn bodies_per_mode() {
        let inv = inventory();
        let second = [gpu(1)];
        let rdma = json!({"PathOnHost": "/dev/infiniband/uverbs0", "PathInContainer": "/dev/infiniband/uverbs0", "CgroupPermissions": "rwm"});
        let rows: Vec<(Exposure, Value)> = vec![
            (
                Exposure::DeviceRequests,
                json!({
                    "Devices": [rdma],
                    "DeviceRequests": [{"Driver": "nvidia", "DeviceIDs": ["GPU-1"], "Capabilities": [["gpu", "compute", "utility"]]}],
                }),
            ),
            (
                Exposure::Runtime,
                json!({"Devices": [rdma], "Runtime": "nvidia"}),
            ),
            (
                Exposure::Manual,
                json!({
                    "Devices": [rdma,
                        {"PathOnHost": "/dev/nvidiactl", "PathInContainer": "/dev/nvidiactl", "CgroupPermissions": "rwm"},
                        {"PathOnHost": "/dev/nvidia-uvm", "PathInContainer": "/dev/nvidia-uvm", "CgroupPermissions": "rwm"},
                        {"PathOnHost": "/dev/nvidia5", "PathInContainer": "/dev/nvidia5", "CgroupPermissions": "rwm"}],
                    "Binds": ["/nr:/nr:rw",
                        "/drv/libcuda.so.580.1:/usr/local/nvidia/lib64/libcuda.so.1:ro",
                        "/drv/libcuda.so.580.1:/usr/local/nvidia/lib64/libcuda.so.580.1:ro",
                        "/usr/bin/nvidia-smi:/usr/bin/nvidia-smi:ro"],
                }),
            ),
            (Exposure::Off, json!({"Devices": [rdma]})),
        ];
        for (mode, want) in rows {
            let mut b = body(
                &["A=1"],
                HostConfig {
                    binds: Some(vec!["/nr:/nr:rw".into()]),
                    ..Default::default()
                },
            );
            apply(&mut b, &additions(&inv, mode, &second, false), &[]);
            let v = serde_json::to_value(&b).unwrap();
            let host = &v["HostConfig"];
            for key in ["Devices", "DeviceRequests", "Runtime"] {
                assert_eq!(host.get(key), want.get(key), "{mode:?} {key}");
            }
            if let Some(binds) = want.get("Binds") {
                assert_eq!(&host["Binds"], binds, "{mode:?}");
            }
            let env: Vec<String> = serde_json::from_value(v["Env"].clone()).unwrap();
            if mode == Exposure::Off {
                assert_eq!(env, vec!["A=1"]);
                continue;
            }
            assert!(
                env.contains(&"NVIDIA_VISIBLE_DEVICES=GPU-1".into()),
                "{mode:?} {env:?}"
            );
            assert!(
                env.contains(&"CUDA_VISIBLE_DEVICES=GPU-1".into()),
                "{mode:?}"
            );
            assert_eq!(
                env.contains(&"NVIDIA_DRIVER_CAPABILITIES=compute,utility".into()),
                mode == Exposure::Runtime
            );
            assert_eq!(
                env.contains(&"LD_LIBRARY_PATH=/usr/local/nvidia/lib64".into()),
                mode == Exposure::Manual,
                "{mode:?} {env:?}"
            );
        }
    }

    #[test]
    fn no_gpus_for_this_task_hides_them() {
        let inv = inventory();
        for mode in [
            Exposure::DeviceRequests,
            Exposure::Runtime,
            Exposure::Manual,
        ] {
            let a = additions(&inv, mode, &[], false);
            assert_eq!(a.device_requests, vec![]);
            assert_eq!(a.runtime, None);
            assert_eq!(a.devices.len(), 1, "only the RDMA device");
            assert_eq!(
                a.env,
                vec![
                    ("NVIDIA_VISIBLE_DEVICES".into(), "void".into()),
                    ("CUDA_VISIBLE_DEVICES".into(), "".into())
                ]
            );
        }
        // A node without GPUs adds no variable at all.
        let bare = Inventory::default();
        assert_eq!(
            additions(&bare, Exposure::Manual, &[], false),
            Additions::default()
        );
    }

    #[test]
    fn task_options_win() {
        let inv = inventory();
        for opts in ["--gpus all", "--runtime nvidia", "--device /dev/nvidia0"] {
            let o = crate::task::run_options::parse(opts).unwrap();
            assert!(task_chose_gpus(&o.host), "{opts}");
            let a = additions(&inv, Exposure::Manual, &[gpu(0)], task_chose_gpus(&o.host));
            assert!(a.env.is_empty() && a.binds.is_empty(), "{opts}");
            assert_eq!(a.devices.len(), 1, "RDMA still added: {opts}");
        }
        let o = crate::task::run_options::parse("--device /dev/fuse").unwrap();
        assert!(!task_chose_gpus(&o.host));
        // A device the task passes itself is not passed twice.
        let mut b = body(&[], o.host.clone());
        let mut a = additions(&inv, Exposure::Off, &[], false);
        a.devices.push(device("/dev/fuse"));
        apply(&mut b, &a, &[]);
        assert_eq!(b.host_config.unwrap().devices.unwrap().len(), 2);
    }

    #[test]
    fn library_path_extends_the_task_or_image_path() {
        let inv = inventory();
        let a = additions(&inv, Exposure::Manual, &[gpu(0)], false);
        let lib = |env: &[&str], image: &[&str]| {
            let mut b = body(env, HostConfig::default());
            let image: Vec<String> = image.iter().map(|s| s.to_string()).collect();
            let notes = apply(&mut b, &a, &image);
            (
                env_get(b.env.as_ref().unwrap(), "LD_LIBRARY_PATH").map(String::from),
                notes,
            )
        };
        assert_eq!(
            lib(&[], &["LD_LIBRARY_PATH=/opt/x"]).0.as_deref(),
            Some("/opt/x:/usr/local/nvidia/lib64")
        );
        assert_eq!(
            lib(&["LD_LIBRARY_PATH=/t"], &["LD_LIBRARY_PATH=/opt/x"])
                .0
                .as_deref(),
            Some("/t:/usr/local/nvidia/lib64")
        );
        // CUDA images already have the directory: nothing is set, the image's path stays.
        assert_eq!(
            lib(
                &[],
                &["LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64"]
            )
            .0,
            None
        );
        let (_, notes) = lib(&["CUDA_VISIBLE_DEVICES=3"], &[]);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("CUDA_VISIBLE_DEVICES"));
    }
}
