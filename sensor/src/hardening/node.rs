//! Node posture (`sensor posture`, the daemon's start-up line and `sensor_node_posture`): the
//! kernel, whether BPF LSM is active (and the boot parameter that turns it on), BTF, a pending
//! reboot, lockdown and the cgroup layout. Every file is read below a root prefix (`/` on a
//! node), so tests use fake trees.

use std::{
    cmp::Ordering,
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde_json::{Value, json};

use crate::kernel::catalog::{PROTECTIONS, Tier};

/// The cgroup layout, from the mounted file systems.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupLayout {
    /// cgroup2 only (the unified hierarchy).
    V2,
    /// cgroup v1 controllers and a cgroup2 mount.
    Hybrid,
    /// cgroup v1 only.
    V1,
    Unknown,
}

impl CgroupLayout {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V2 => "v2",
            Self::Hybrid => "hybrid",
            Self::V1 => "v1",
            Self::Unknown => "unknown",
        }
    }
}

/// What the node looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePosture {
    /// `uname -r` (from `/proc/sys/kernel/osrelease`).
    pub kernel: Option<String>,
    /// The active LSMs (`/sys/kernel/security/lsm`), None when unreadable.
    pub lsms: Option<Vec<String>>,
    /// `CONFIG_BPF_LSM`: Some(true) built, Some(false) not, None unknown.
    pub config_bpf_lsm: Option<bool>,
    /// `/sys/kernel/btf/vmlinux` exists.
    pub btf: bool,
    /// Why a reboot is pending (empty: none found).
    pub reboot_reasons: Vec<String>,
    /// Packages that asked for it (`/var/run/reboot-required.pkgs`).
    pub reboot_packages: Vec<String>,
    /// The bracketed entry of `/sys/kernel/security/lockdown`.
    pub lockdown: Option<String>,
    pub cgroup: CgroupLayout,
    /// The `lsm=` boot parameter (`/proc/cmdline`), when given.
    pub cmdline_lsm: Option<String>,
}

fn read(root: &Path, path: &str) -> Option<String> {
    std::fs::read_to_string(root.join(path.trim_start_matches('/'))).ok()
}

impl NodePosture {
    /// Read the node below `root`.
    pub fn read(root: &Path) -> Self {
        let mut node = Self::read_files(root);
        node.config_bpf_lsm = node.kernel.as_deref().and_then(|k| config_bpf_lsm(root, k));
        node
    }

    /// Read it again, keeping what cannot change without a reboot into another kernel
    /// (`CONFIG_BPF_LSM`, which may need `gzip` on `/proc/config.gz`): a few small files, no
    /// process spawned.
    pub fn reread(&self, root: &Path) -> Self {
        let mut node = Self::read_files(root);
        if node.kernel == self.kernel {
            node.config_bpf_lsm = self.config_bpf_lsm;
        } else {
            node.config_bpf_lsm = node.kernel.as_deref().and_then(|k| config_bpf_lsm(root, k));
        }
        node
    }

    fn read_files(root: &Path) -> Self {
        let kernel = read(root, "proc/sys/kernel/osrelease").map(|s| s.trim().to_owned());
        let lsms = read(root, "sys/kernel/security/lsm").map(|s| {
            s.trim()
                .split(',')
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        });
        // The kernel's own parameters: what follows `--` is for init.
        let cmdline_lsm = read(root, "proc/cmdline").and_then(|c| {
            c.split_whitespace()
                .take_while(|w| *w != "--")
                .filter_map(|w| w.strip_prefix("lsm="))
                .last()
                .map(str::to_owned)
        });
        let (reboot_reasons, reboot_packages) = reboot(root, kernel.as_deref());
        Self {
            config_bpf_lsm: None,
            kernel,
            lsms,
            btf: root.join("sys/kernel/btf/vmlinux").exists(),
            reboot_reasons,
            reboot_packages,
            lockdown: read(root, "sys/kernel/security/lockdown").and_then(|s| {
                let start = s.find('[')?;
                let end = s[start..].find(']')? + start;
                Some(s[start + 1..end].to_owned())
            }),
            cgroup: read(root, "proc/mounts").map_or(CgroupLayout::Unknown, |m| cgroup_layout(&m)),
            cmdline_lsm,
        }
    }

    /// `bpf` is in the active LSM list (None: the list is unreadable).
    pub fn bpf_lsm_active(&self) -> Option<bool> {
        self.lsms
            .as_ref()
            .map(|l| l.iter().any(|name| name == "bpf"))
    }

    pub fn reboot_pending(&self) -> bool {
        !self.reboot_reasons.is_empty()
    }

    /// The boot parameter change that activates BPF LSM; None when it is active, or when the
    /// kernel is built without it (no parameter helps then) or nothing says what is active.
    pub fn lsm_boot_parameter(&self) -> Option<String> {
        if self.bpf_lsm_active() != Some(false) || self.config_bpf_lsm == Some(false) {
            return None;
        }
        let current = self
            .cmdline_lsm
            .clone()
            .or_else(|| self.lsms.as_ref().map(|l| l.join(",")))?;
        let mut list: Vec<&str> = current.split(',').filter(|l| !l.is_empty()).collect();
        // Asked for and still not active: the kernel lacks it, no parameter helps.
        if list.contains(&"bpf") {
            return None;
        }
        list.push("bpf");
        Some(format!("lsm={}", list.join(",")))
    }

    /// One sentence: how to activate BPF LSM, or why not needed or possible.
    pub fn lsm_advice(&self) -> String {
        match (self.bpf_lsm_active(), self.config_bpf_lsm) {
            (Some(true), _) => "BPF LSM is active".to_owned(),
            (None, _) => "the active LSM list is unreadable (is securityfs mounted at /sys/kernel/security?)".to_owned(),
            (Some(false), Some(false)) => {
                "the kernel is built without CONFIG_BPF_LSM: no boot parameter turns it on; the privilege hooks run at the kill tier".to_owned()
            }
            (Some(false), _)
                if self
                    .cmdline_lsm
                    .as_deref()
                    .is_some_and(|l| l.split(',').any(|n| n == "bpf")) =>
            {
                "the boot parameters ask for bpf (lsm=) and it is not active: the kernel is built without CONFIG_BPF_LSM; the privilege hooks run at the kill tier".to_owned()
            }
            (Some(false), _) => {
                let param = self.lsm_boot_parameter().unwrap_or_default();
                let change = match &self.cmdline_lsm {
                    Some(old) => format!("change lsm={old} to {param}"),
                    None => format!("add {param}"),
                };
                format!(
                    "{change} in GRUB_CMDLINE_LINUX (/etc/default/grub), run update-grub (grub2-mkconfig -o /boot/grub2/grub.cfg on RHEL), and reboot"
                )
            }
        }
    }

    /// The tier each protection would get from this kernel's features (a daemon's own answer
    /// is in `sensor status`): BPF LSM active gives `lsm`, BPF LSM built gives `override`,
    /// otherwise `kill`; cgroup programs are always there.
    pub fn implied_tiers(&self) -> Vec<(&'static str, &'static str)> {
        PROTECTIONS
            .iter()
            .map(|p| {
                let tier = p
                    .variants
                    .iter()
                    .map(|v| v.tier)
                    .find(|t| match t {
                        Tier::Lsm => self.bpf_lsm_active() == Some(true),
                        Tier::Override => self.config_bpf_lsm == Some(true),
                        _ => true,
                    })
                    .map_or("none", Tier::as_str);
                (p.name, tier)
            })
            .collect()
    }

    /// The `sensor_node_posture` gauges: (check, 0/1).
    pub fn gauges(&self) -> [(&'static str, u8); 5] {
        [
            (
                "bpf_lsm_active",
                u8::from(self.bpf_lsm_active() == Some(true)),
            ),
            ("btf", u8::from(self.btf)),
            ("reboot_pending", u8::from(self.reboot_pending())),
            (
                "lockdown",
                u8::from(self.lockdown.as_deref().is_some_and(|l| l != "none")),
            ),
            ("cgroup_v2", u8::from(self.cgroup == CgroupLayout::V2)),
        ]
    }

    /// Its `sensor.v1` form for posture records, with the daemon's tiers.
    pub fn to_proto(&self, tiers: &BTreeMap<String, String>) -> sensor_proto::v1::NodePosture {
        sensor_proto::v1::NodePosture {
            kernel: self.kernel.clone().unwrap_or_default(),
            bpf_lsm_active: self.bpf_lsm_active(),
            bpf_lsm_boot_parameter: self.lsm_boot_parameter().unwrap_or_default(),
            bpf_lsm_advice: self.lsm_advice(),
            btf: self.btf,
            reboot_pending: self.reboot_pending(),
            reboot_reasons: self.reboot_reasons.clone(),
            lockdown: self.lockdown.clone().unwrap_or_default(),
            cgroup: self.cgroup.as_str().to_owned(),
            tiers: tiers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }

    /// `sensor posture -o json` (without the tiers, which the command adds).
    pub fn to_json(&self) -> Value {
        json!({
            "kernel": self.kernel,
            "bpf_lsm": {
                "active": self.bpf_lsm_active(),
                "lsms": self.lsms,
                "config_bpf_lsm": match self.config_bpf_lsm { Some(true) => "y", Some(false) => "n", None => "unknown" },
                "boot_parameter": self.lsm_boot_parameter(),
                "advice": self.lsm_advice(),
            },
            "btf": self.btf,
            "reboot": {"pending": self.reboot_pending(), "reasons": self.reboot_reasons, "packages": self.reboot_packages},
            "lockdown": self.lockdown,
            "cgroup": self.cgroup.as_str(),
        })
    }
}

/// `CONFIG_BPF_LSM` from `/boot/config-RELEASE`, else `/proc/config.gz` (through `gzip -dc`).
fn config_bpf_lsm(root: &Path, kernel: &str) -> Option<bool> {
    let text = read(root, &format!("boot/config-{kernel}")).or_else(|| {
        let gz = root.join("proc/config.gz");
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&gz)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())?;
        String::from_utf8(out.stdout).ok()
    })?;
    Some(text.lines().any(|l| l.trim() == "CONFIG_BPF_LSM=y"))
}

fn cgroup_layout(mounts: &str) -> CgroupLayout {
    let types: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let v2 = types.contains(&"cgroup2");
    let v1 = types.contains(&"cgroup");
    match (v1, v2) {
        (false, true) => CgroupLayout::V2,
        (true, true) => CgroupLayout::Hybrid,
        (true, false) => CgroupLayout::V1,
        (false, false) => CgroupLayout::Unknown,
    }
}

/// Why a reboot is pending: Debian's `/var/run/reboot-required` (with its `.pkgs`), or a
/// kernel newer than the running one under `/lib/modules` or `/boot/vmlinuz-*`.
fn reboot(root: &Path, running: Option<&str>) -> (Vec<String>, Vec<String>) {
    let mut reasons = Vec::new();
    let mut packages = Vec::new();
    if root.join("var/run/reboot-required").exists() {
        reasons.push("/var/run/reboot-required exists".to_owned());
        packages = read(root, "var/run/reboot-required.pkgs")
            .map(|s| {
                s.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        packages.dedup();
    }
    if let Some(running) = running {
        let mut installed: Vec<String> = names(&root.join("lib/modules"))
            .into_iter()
            .filter(|n| root.join("lib/modules").join(n).is_dir())
            .chain(
                names(&root.join("boot"))
                    .into_iter()
                    .filter_map(|n| n.strip_prefix("vmlinuz-").map(str::to_owned)),
            )
            .collect();
        // Only kernels of the running one's flavour (`-amd64`, `-cloud-amd64`, `-rt-amd64`,
        // `-azure`, `+debug`): another flavour installed beside it is not an update of it.
        // Digits left in a flavour are a distribution's minor release (`el9_3` -> `el9_4`), not
        // another flavour.
        let kind = |k: &str| flavour(k).replace(|c: char| c.is_ascii_digit(), "");
        let running_kind = kind(running);
        installed.retain(|k| kind(k) == running_kind);
        installed.sort_by(|a, b| version_cmp(a, b));
        if let Some(newest) = installed.last()
            && version_cmp(newest, running) == Ordering::Greater
        {
            reasons.push(format!(
                "running kernel {running} is older than the newest installed one, {newest}"
            ));
        }
    }
    (reasons, packages)
}

/// What follows a kernel release's version numbers: `6.1.0-21-cloud-amd64` -> `cloud-amd64`,
/// `5.15.0-1064-azure` -> `azure`, `6.8.0+debug` -> `+debug`, `5.14.0-427.el9.x86_64` ->
/// `el9.x86_64`.
pub fn flavour(release: &str) -> &str {
    let mut rest = release;
    loop {
        let trimmed = rest.trim_start_matches(|c: char| c.is_ascii_digit());
        match trimmed.strip_prefix(['.', '-']) {
            Some(next) if trimmed.len() < rest.len() => rest = next,
            _ if trimmed.len() < rest.len() => return trimmed,
            _ => return rest,
        }
    }
}

fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Kernel release order: runs of digits compare as numbers, the rest as text
/// (`6.1.0-21-amd64` > `6.1.0-9-amd64`; `5.14.0-427.el9` > `5.14.0-362.8.1.el9`).
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    fn parts(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let o = match (x, y) {
            ((true, x), (true, y)) => x
                .trim_start_matches('0')
                .len()
                .cmp(&y.trim_start_matches('0').len())
                .then_with(|| x.trim_start_matches('0').cmp(y.trim_start_matches('0'))),
            ((_, x), (_, y)) => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

/// The root the daemon and `sensor posture` read by default.
pub fn default_root() -> PathBuf {
    PathBuf::from("/")
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;

#[cfg(test)]
mod flavour_tests {
    use super::*;

    #[test]
    fn releases_of_another_flavour_are_not_updates() {
        assert_eq!(flavour("6.1.0-21-cloud-amd64"), "cloud-amd64");
        assert_eq!(flavour("6.1.0-21-amd64"), "amd64");
        assert_eq!(flavour("5.15.0-1064-azure"), "azure");
        assert_eq!(flavour("5.14.0-427.el9.x86_64"), "el9.x86_64");
        assert_eq!(flavour("6.8.0+debug"), "+debug");
        assert_eq!(flavour("6.18.0"), "");
    }

    #[test]
    fn lsm_advice_after_dash_dash_and_with_bpf_already_asked_for() {
        let dir = std::env::temp_dir().join(format!("sensor-posture-lsm-{}", std::process::id()));
        let write = |path: &str, text: &str| {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write("proc/sys/kernel/osrelease", "6.1.0-21-amd64\n");
        write("sys/kernel/security/lsm", "lockdown,capability,apparmor");
        // An lsm= after `--` is init's, not the kernel's.
        write("proc/cmdline", "root=/dev/vda1 ro -- lsm=bogus\n");
        let n = NodePosture::read(&dir);
        assert_eq!(n.cmdline_lsm, None);
        assert_eq!(
            n.lsm_boot_parameter().as_deref(),
            Some("lsm=lockdown,capability,apparmor,bpf")
        );
        write(
            "proc/cmdline",
            "root=/dev/vda1 lsm=lockdown,capability,bpf\n",
        );
        let n = NodePosture::read(&dir);
        assert_eq!(n.lsm_boot_parameter(), None);
        assert!(
            n.lsm_advice().contains("built without CONFIG_BPF_LSM"),
            "{}",
            n.lsm_advice()
        );
        // A cloud kernel installed beside the running generic one is no pending update.
        write("lib/modules/6.1.0-21-amd64/modules.dep", "");
        write("lib/modules/6.1.0-23-cloud-amd64/modules.dep", "");
        assert!(!NodePosture::read(&dir).reboot_pending());
        write("lib/modules/6.1.0-23-amd64/modules.dep", "");
        assert!(NodePosture::read(&dir).reboot_pending());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
