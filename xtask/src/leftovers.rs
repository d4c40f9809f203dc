//! After the privileged suite: nothing the tests create may remain (network namespaces,
//! cgroups (v2, and v1 hierarchies where runc made some), bpffs pins, loaded sensor programs).

use std::{fs, path::Path};

use anyhow::Result;
use sensor_common::programs::PREFIX;

/// Name prefix of every netns and cgroup the tests create.
const TEST_PREFIX: &str = "sensor-test";
/// Cgroups the sensor itself makes: its own scope (`sensor run` without a scope) and the
/// throwaway cgroup of `sensor demo`.
const SENSOR_CGROUPS: [&str; 2] = ["sensor-protected", "sensor-demo"];

pub fn find() -> Result<Vec<String>> {
    let mut found = Vec::new();
    for name in dir_names(Path::new("/run/netns")) {
        if name.starts_with(TEST_PREFIX) {
            found.push(format!("network namespace {name}"));
        }
    }
    let mut roots = crate::setup::cgroup2_mounts()?;
    roots.extend(crate::setup::cgroup1_mounts()?);
    for root in roots {
        for name in dir_names(&root) {
            if name.starts_with(TEST_PREFIX) || SENSOR_CGROUPS.iter().any(|p| name.starts_with(p)) {
                found.push(format!("cgroup {}/{name}", root.display()));
            }
        }
    }
    for name in dir_names(Path::new("/sys/fs/bpf")) {
        if name.starts_with("sensor") {
            found.push(format!("bpffs pin /sys/fs/bpf/{name}"));
        }
    }
    if let Ok(entries) = fs::read_dir(std::env::temp_dir()) {
        for name in entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
        {
            if name.starts_with("sensor-demo-") {
                found.push(format!(
                    "sensor demo directory {}",
                    std::env::temp_dir().join(name).display()
                ));
            }
        }
    }
    for prog in aya::programs::loaded_programs() {
        let prog = prog?;
        if let Some(name) = prog.name_as_str().filter(|n| n.starts_with(PREFIX)) {
            found.push(format!("loaded BPF program {name} (id {})", prog.id()));
        }
    }
    Ok(found)
}

fn dir_names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
