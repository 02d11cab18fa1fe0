//! GPUs, in the order berth uses them:
//! `discover` (NVML and the driver's files, once at start) -> `assign` (whole GPUs for each
//! running task, pure) -> `expose` (what a task's create body gains, pure).
//! RDMA devices (`/dev/infiniband`) are found here too and go to every container task.

pub mod assign;
pub mod discover;
pub mod expose;

use berth_proto::{NodeGpu, NodeGpus};
use std::path::PathBuf;
use std::sync::Mutex;

/// What the node has, found once at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub gpus: Vec<NodeGpu>,
    pub driver_version: String,
    pub cuda_version: String,
    /// `/dev/nvidiactl`, `/dev/nvidia-uvm`, `/dev/nvidia-uvm-tools`: those that exist.
    pub control_devices: Vec<PathBuf>,
    /// The driver's user-space libraries: (file name in the container, file on the host).
    pub libraries: Vec<(String, PathBuf)>,
    /// `nvidia-smi` and the other driver tools found on the host.
    pub binaries: Vec<PathBuf>,
    /// Character devices under `/dev/infiniband`.
    pub infiniband: Vec<PathBuf>,
    /// Why there are no GPUs, when there are none.
    pub none_reason: Option<String>,
}

/// How GPUs reach a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// The engine's `nvidia` device driver (toolkit hook installed): `DeviceRequests` by UUID.
    DeviceRequests,
    /// The engine has the `nvidia` runtime: `Runtime: nvidia` and `NVIDIA_VISIBLE_DEVICES`.
    Runtime,
    /// No toolkit: berth passes the device nodes and bind-mounts the driver's files.
    Manual,
    /// GPUs are not given to containers.
    Off,
}

impl Exposure {
    pub fn as_str(self) -> &'static str {
        match self {
            Exposure::DeviceRequests => "deviceRequests",
            Exposure::Runtime => "runtime",
            Exposure::Manual => "manual",
            Exposure::Off => "off",
        }
    }
}

/// The configured exposure: `auto` picks from what the engine offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExposureSetting {
    #[default]
    Auto,
    Fixed(Exposure),
}

impl std::str::FromStr for ExposureSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "auto" => ExposureSetting::Auto,
            "device-requests" | "devicerequests" => {
                ExposureSetting::Fixed(Exposure::DeviceRequests)
            }
            "runtime" => ExposureSetting::Fixed(Exposure::Runtime),
            "manual" => ExposureSetting::Fixed(Exposure::Manual),
            "off" => ExposureSetting::Fixed(Exposure::Off),
            _ => {
                return Err(format!(
                    "{s:?} is not a GPU exposure; use auto, device-requests, runtime, manual or off"
                ))
            }
        })
    }
}

/// What the engine offers, as far as GPUs go.
#[derive(Debug, Clone, Default)]
pub struct EngineGpuSupport {
    /// `nvidia` is among the engine's runtimes.
    pub nvidia_runtime: bool,
    /// `nvidia-container-runtime-hook` is installed, so the engine registers its `nvidia`
    /// device driver.
    pub nvidia_hook: bool,
}

/// `auto`: the toolkit's device driver, else its runtime, else berth's own way.
pub fn choose(setting: ExposureSetting, engine: &EngineGpuSupport, gpus: usize) -> Exposure {
    match setting {
        ExposureSetting::Fixed(e) => e,
        ExposureSetting::Auto if gpus == 0 => Exposure::Off,
        ExposureSetting::Auto if engine.nvidia_hook => Exposure::DeviceRequests,
        ExposureSetting::Auto if engine.nvidia_runtime => Exposure::Runtime,
        ExposureSetting::Auto => Exposure::Manual,
    }
}

/// The node's GPUs at run time: the inventory, the exposure, and who holds which GPU.
#[derive(Debug)]
pub struct Gpus {
    pub inventory: Inventory,
    pub exposure: Exposure,
    /// Whole GPUs per task slot (config); `None`: an equal share, or all with one slot.
    pub per_slot: Option<u32>,
    held: Mutex<assign::Holdings>,
}

/// GPUs given to one running task: positions in `Inventory::gpus`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reservation {
    pub gpus: Vec<usize>,
    /// Whether no other task may have them until released (false for shared GPUs).
    pub exclusive: bool,
}

impl Gpus {
    pub fn new(inventory: Inventory, exposure: Exposure, per_slot: Option<u32>) -> Self {
        let held = Mutex::new(assign::Holdings::new(inventory.gpus.len()));
        Gpus {
            inventory,
            exposure,
            per_slot,
            held,
        }
    }

    /// A node with no GPUs and nothing to pass (tests, `--gpu-exposure off` machines).
    pub fn none() -> Self {
        Gpus::new(Inventory::default(), Exposure::Off, None)
    }

    /// What a task gets now: `Ok(None)` when it must wait for GPUs to free up.
    pub fn reserve(
        &self,
        request: Option<&str>,
        required_slots: u32,
        slots_per_node: u32,
    ) -> Result<Option<Reservation>, String> {
        let need = assign::need(
            request,
            required_slots,
            slots_per_node,
            self.inventory.gpus.len() as u32,
            self.per_slot,
        )?;
        Ok(self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(need))
    }

    /// Holds the GPUs with these UUIDs (unknown ones are left out): those of a task an
    /// earlier agent process started, taken over after a restart.
    pub fn reserve_uuids<'a>(&self, uuids: impl Iterator<Item = &'a str>) -> Reservation {
        let gpus: Vec<usize> = uuids
            .filter_map(|u| self.inventory.gpus.iter().position(|g| g.uuid == u))
            .collect();
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .hold(&gpus);
        Reservation {
            gpus,
            exclusive: true,
        }
    }

    /// Whole GPUs a task would hold once it starts (0 for none, shared, or a request
    /// it cannot get: it is refused when it would start).
    pub fn whole_need(
        &self,
        request: Option<&str>,
        required_slots: u32,
        slots_per_node: u32,
    ) -> u32 {
        let total = self.inventory.gpus.len() as u32;
        match assign::need(
            request,
            required_slots,
            slots_per_node,
            total,
            self.per_slot,
        ) {
            Ok(assign::Need::Whole(n)) => n,
            _ => 0,
        }
    }

    /// Whole GPUs no task holds now.
    pub fn free(&self) -> u32 {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        u32::try_from(held.free()).unwrap_or(u32::MAX)
    }

    pub fn release(&self, r: &Reservation) {
        if r.exclusive {
            self.held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .give_back(&r.gpus);
        }
    }

    /// The GPUs of a reservation.
    pub fn devices(&self, r: &Reservation) -> Vec<NodeGpu> {
        r.gpus
            .iter()
            .filter_map(|i| self.inventory.gpus.get(*i).cloned())
            .collect()
    }

    /// How the node reports its GPUs.
    pub fn report(&self) -> Option<NodeGpus> {
        (!self.inventory.gpus.is_empty()).then(|| NodeGpus {
            driver_version: self.inventory.driver_version.clone(),
            cuda_version: self.inventory.cuda_version.clone(),
            exposure: self.exposure.as_str().into(),
            devices: self.inventory.gpus.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_engine() {
        let none = EngineGpuSupport::default();
        let hook = EngineGpuSupport {
            nvidia_hook: true,
            nvidia_runtime: true,
        };
        let runtime = EngineGpuSupport {
            nvidia_runtime: true,
            nvidia_hook: false,
        };
        let auto = ExposureSetting::Auto;
        assert_eq!(choose(auto, &hook, 2), Exposure::DeviceRequests);
        assert_eq!(choose(auto, &runtime, 2), Exposure::Runtime);
        assert_eq!(choose(auto, &none, 2), Exposure::Manual);
        assert_eq!(choose(auto, &hook, 0), Exposure::Off);
        let manual: ExposureSetting = "manual".parse().unwrap();
        assert_eq!(choose(manual, &hook, 2), Exposure::Manual);
        let e = "gpus".parse::<ExposureSetting>().unwrap_err();
        assert!(
            e.contains("auto, device-requests, runtime, manual or off"),
            "{e}"
        );
    }

    #[test]
    fn free_and_whole_needs() {
        let gpu = |i: u32| NodeGpu {
            index: i,
            uuid: format!("GPU-{i}"),
            name: "g".into(),
            memory_bytes: 1,
            minor_number: i,
            mig_enabled: false,
        };
        let inv = Inventory {
            gpus: (0..4).map(gpu).collect(),
            ..Default::default()
        };
        let g = Gpus::new(inv, Exposure::Manual, None);
        assert_eq!(g.free(), 4);
        assert_eq!(g.whole_need(None, 1, 2), 2, "an equal share per slot");
        assert_eq!(g.whole_need(Some("1"), 1, 2), 1);
        assert_eq!(g.whole_need(Some("x"), 1, 2), 0, "refused at start");
        let r = g.reserve(Some("3"), 1, 2).unwrap().unwrap();
        assert_eq!(g.free(), 1);
        g.release(&r);
        assert_eq!(g.free(), 4);
    }
}
