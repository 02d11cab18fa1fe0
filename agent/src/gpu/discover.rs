//! Finding the node's GPUs (NVML, loaded at run time: one binary runs with or without a
//! driver) and the driver's files a container needs when no toolkit is there to add them.

use super::Inventory;
use berth_proto::NodeGpu;
use std::path::{Path, PathBuf};

/// Driver tools a GPU container may want, looked up on the host (as the toolkit does).
const BINARIES: &[&str] = &[
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
];
const BIN_DIRS: &[&str] = &[
    "/usr/bin",
    "/usr/local/nvidia/bin",
    "/usr/local/bin",
    "/bin",
];
const CONTROL_DEVICES: &[&str] = &["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"];

/// Everything about the node's GPUs and RDMA devices. Never fails: without a driver or a
/// GPU the inventory is empty and `none_reason` says why.
pub fn discover(infiniband_dir: &Path) -> Inventory {
    let infiniband = char_devices(infiniband_dir);
    let (gpus, driver_version, cuda_version) = match nvml() {
        Ok(found) => found,
        Err(why) => {
            tracing::debug!(reason = %why, "no GPUs");
            return Inventory {
                infiniband,
                none_reason: Some(why),
                ..Default::default()
            };
        }
    };
    if gpus.is_empty() {
        return Inventory {
            infiniband,
            driver_version,
            cuda_version,
            none_reason: Some("NVML reports no GPU".into()),
            ..Default::default()
        };
    }
    ensure_uvm();
    let cache = std::process::Command::new("ldconfig")
        .arg("-p")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let libraries = driver_libraries(&parse_ldconfig(&cache), &driver_version);
    let binaries = find_binaries(
        &BIN_DIRS.iter().map(PathBuf::from).collect::<Vec<_>>(),
        BINARIES,
    );
    let inv = Inventory {
        gpus,
        driver_version,
        cuda_version,
        control_devices: CONTROL_DEVICES
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect(),
        libraries,
        binaries,
        infiniband,
        none_reason: None,
    };
    tracing::info!(
        gpus = inv.gpus.len(),
        driver = %inv.driver_version,
        cuda = %inv.cuda_version,
        libraries = inv.libraries.len(),
        binaries = inv.binaries.len(),
        "GPUs found"
    );
    inv
}

/// GPUs, driver version and CUDA version from NVML; `Err` says why there are none.
fn nvml() -> Result<(Vec<NodeGpu>, String, String), String> {
    use nvml_wrapper::Nvml;
    let nvml = Nvml::init().map_err(|e| format!("NVML: {e}"))?;
    let driver = nvml.sys_driver_version().unwrap_or_default();
    let cuda = nvml
        .sys_cuda_driver_version()
        .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10))
        .unwrap_or_default();
    let count = nvml
        .device_count()
        .map_err(|e| format!("NVML device count: {e}"))?;
    let mut gpus = Vec::new();
    for i in 0..count {
        let d = match nvml.device_by_index(i) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(index = i, error = %e, "GPU left out: NVML cannot open it");
                continue;
            }
        };
        let (Ok(uuid), Ok(minor)) = (d.uuid(), d.minor_number()) else {
            tracing::warn!(index = i, "GPU left out: no UUID or minor number");
            continue;
        };
        gpus.push(NodeGpu {
            index: i,
            uuid,
            name: d.name().unwrap_or_default(),
            memory_bytes: d.memory_info().map(|m| m.total).unwrap_or(0),
            minor_number: minor,
            mig_enabled: d.mig_mode().map(|m| m.current == 1).unwrap_or(false),
        });
    }
    Ok((gpus, driver, cuda))
}

/// `/dev/nvidia-uvm` appears only once the module is loaded; the driver's
/// `nvidia-modprobe` loads it (as the toolkit does). Best effort.
fn ensure_uvm() {
    if Path::new("/dev/nvidia-uvm").exists() {
        return;
    }
    if let Some(m) = find_binaries(
        &BIN_DIRS.iter().map(PathBuf::from).collect::<Vec<_>>(),
        &["nvidia-modprobe"],
    )
    .first()
    {
        let ok = std::process::Command::new(m)
            .args(["-u", "-c=0"])
            .status()
            .is_ok_and(|s| s.success());
        tracing::debug!(ok, "nvidia-modprobe -u -c=0");
    }
}

/// `ldconfig -p` lines (`\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/.../libcuda.so.1`) as
/// (name, path), 64-bit entries only.
pub fn parse_ldconfig(out: &str) -> Vec<(String, PathBuf)> {
    out.lines()
        .filter_map(|l| {
            let (left, path) = l.trim().split_once(" => ")?;
            let (name, flags) = left.split_once(" (")?;
            (flags.contains("x86-64") || flags.contains("AArch64") || flags.contains("64bit"))
                .then(|| (name.trim().to_string(), PathBuf::from(path.trim())))
        })
        .collect()
}

/// The driver's libraries: every file of the directory holding `libcuda.so.1` (else
/// `libnvidia-ml.so.1`) whose real file ends in `.so.<driver version>`, under its own name
/// and under each link name that points at it. Each pair is (name, real host file): the
/// engine refuses to mount the same target twice, and links would not resolve inside.
pub fn driver_libraries(
    cache: &[(String, PathBuf)],
    driver_version: &str,
) -> Vec<(String, PathBuf)> {
    let dir = ["libcuda.so.1", "libnvidia-ml.so.1"]
        .iter()
        .find_map(|want| cache.iter().find(|(n, _)| n == want))
        .and_then(|(_, p)| p.parent().map(Path::to_path_buf));
    let Some(dir) = dir else {
        return vec![];
    };
    let suffix = format!(".so.{driver_version}");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return vec![];
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if !name.contains(".so") {
                return None;
            }
            let real = std::fs::canonicalize(e.path()).ok()?;
            let real_name = real.file_name()?.to_str()?;
            (!driver_version.is_empty() && real_name.ends_with(&suffix) && real.is_file())
                .then_some((name, real))
        })
        .collect();
    out.sort();
    out
}

/// The first of each `names` found in `dirs` that is an ELF program, as real files. Some
/// hosts have `/usr/bin/nvidia-smi` as a script that runs the real one elsewhere: such a
/// script would fail inside an image, so it is passed over.
pub fn find_binaries(dirs: &[PathBuf], names: &[&str]) -> Vec<PathBuf> {
    names
        .iter()
        .filter_map(|n| {
            dirs.iter()
                .filter_map(|d| std::fs::canonicalize(d.join(n)).ok())
                .find(|p| is_elf(p))
        })
        .collect()
}

fn is_elf(p: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// The character devices directly in `dir` (none when it does not exist).
pub fn char_devices(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_char_device()))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wrapper script is passed over for the real program further down the list.
    #[test]
    fn binaries_are_programs_not_wrappers() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("nvidia-smi"), "#!/bin/sh\nexec /b/nvidia-smi\n").unwrap();
        std::fs::write(b.join("nvidia-smi"), b"\x7fELF\x02\x01").unwrap();
        std::fs::write(b.join("nvidia-debugdump"), b"#!").unwrap();
        let found = find_binaries(
            &[a, b.clone()],
            &["nvidia-smi", "nvidia-debugdump", "absent"],
        );
        assert_eq!(
            found,
            vec![std::fs::canonicalize(b.join("nvidia-smi")).unwrap()]
        );
    }

    #[test]
    fn ldconfig_lines() {
        let out = "1234 libs found in cache `/etc/ld.so.cache'\n\
            \tlibcuda.so.1 (libc6,x86-64) => /usr/local/nvidia/lib64/libcuda.so.1\n\
            \tlibcuda.so.1 (libc6) => /usr/lib32/libcuda.so.1\n\
            \tlibc.so.6 (libc6,x86-64, OS ABI: Linux 3.2.0) => /lib/x86_64-linux-gnu/libc.so.6\n\
            Cache generated by: ldconfig (GNU libc) stable release version 2.36\n";
        assert_eq!(
            parse_ldconfig(out),
            vec![
                (
                    "libcuda.so.1".into(),
                    PathBuf::from("/usr/local/nvidia/lib64/libcuda.so.1")
                ),
                (
                    "libc.so.6".into(),
                    PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6")
                ),
            ]
        );
    }

    /// A driver directory laid out like the real one, on the real filesystem: versioned
    /// files, soname links, a dev link, and unrelated libraries that must stay out.
    #[test]
    fn driver_libraries_from_a_directory() {
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n);
        for f in [
            "libcuda.so.580.1",
            "libnvidia-ml.so.580.1",
            "libz.so.1.2.13",
            "libold.so.570.9",
        ] {
            std::fs::write(p(f), b"x").unwrap();
        }
        for (link, to) in [
            ("libcuda.so.1", "libcuda.so.580.1"),
            ("libcuda.so", "libcuda.so.1"),
            ("libnvidia-ml.so.1", "libnvidia-ml.so.580.1"),
            ("libz.so.1", "libz.so.1.2.13"),
        ] {
            std::os::unix::fs::symlink(to, p(link)).unwrap();
        }
        let cache = vec![("libcuda.so.1".to_string(), p("libcuda.so.1"))];
        let real = |n: &str| std::fs::canonicalize(p(n)).unwrap();
        let names: Vec<(String, PathBuf)> = driver_libraries(&cache, "580.1");
        assert_eq!(
            names,
            vec![
                ("libcuda.so".into(), real("libcuda.so.580.1")),
                ("libcuda.so.1".into(), real("libcuda.so.580.1")),
                ("libcuda.so.580.1".into(), real("libcuda.so.580.1")),
                ("libnvidia-ml.so.1".into(), real("libnvidia-ml.so.580.1")),
                (
                    "libnvidia-ml.so.580.1".into(),
                    real("libnvidia-ml.so.580.1")
                ),
            ]
        );
        assert!(
            driver_libraries(&[], "580.1").is_empty(),
            "no driver in the cache"
        );
        assert!(driver_libraries(&cache, "").is_empty());
    }

    /// Character devices are found with a real `mknod`; other files are not devices.
    #[test]
    fn infiniband_devices() {
        let d = tempfile::tempdir().unwrap();
        assert!(char_devices(&d.path().join("absent")).is_empty());
        std::fs::write(d.path().join("not-a-device"), b"").unwrap();
        let dev = d.path().join("uverbs0");
        let made = nix::sys::stat::mknod(
            &dev,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(1, 3),
        );
        if made.is_err() {
            eprintln!("skipped the mknod half: not allowed to make device nodes here");
            return;
        }
        assert_eq!(char_devices(d.path()), vec![dev]);
    }

    /// Without a driver (CI), discovery reports no GPU and says why; it never fails.
    #[test]
    fn no_driver_no_gpus() {
        let inv = discover(Path::new("/nonexistent/infiniband"));
        if inv.gpus.is_empty() {
            assert!(inv.none_reason.is_some());
            assert!(inv.libraries.is_empty() && inv.control_devices.is_empty());
        } else {
            eprintln!(
                "this machine has {} GPUs; the no-driver half does not apply",
                inv.gpus.len()
            );
            assert!(inv.none_reason.is_none());
        }
        assert!(inv.infiniband.is_empty());
    }
}
