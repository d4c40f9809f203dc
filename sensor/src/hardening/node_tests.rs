use super::*;
use crate::testing::TestDir;

/// A fake node: `files` (path, content) below a fresh root.
fn tree(files: &[(&str, &str)]) -> TestDir {
    let dir = TestDir::new("posture");
    for (path, content) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    dir
}

const MOUNTS_V2: &str = "proc /proc proc rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n";
const MOUNTS_HYBRID: &str = "tmpfs /sys/fs/cgroup tmpfs ro 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n";

#[test]
fn bpf_lsm_active_on_a_patched_v2_node() {
    let dir = tree(&[
        ("proc/sys/kernel/osrelease", "6.12.0-1-amd64\n"),
        (
            "sys/kernel/security/lsm",
            "lockdown,capability,landlock,yama,apparmor,bpf",
        ),
        ("sys/kernel/btf/vmlinux", ""),
        (
            "sys/kernel/security/lockdown",
            "[none] integrity confidentiality\n",
        ),
        ("proc/mounts", MOUNTS_V2),
        ("lib/modules/6.12.0-1-amd64/modules.dep", ""),
        (
            "boot/config-6.12.0-1-amd64",
            "CONFIG_BPF=y\nCONFIG_BPF_LSM=y\n",
        ),
    ]);
    let n = NodePosture::read(dir.path());
    assert_eq!(n.kernel.as_deref(), Some("6.12.0-1-amd64"));
    assert_eq!(n.bpf_lsm_active(), Some(true));
    assert_eq!(n.config_bpf_lsm, Some(true));
    assert_eq!(n.lsm_boot_parameter(), None);
    assert!(n.btf && !n.reboot_pending());
    assert_eq!(n.lockdown.as_deref(), Some("none"));
    assert_eq!(n.cgroup, CgroupLayout::V2);
    assert_eq!(
        n.gauges(),
        [
            ("bpf_lsm_active", 1),
            ("btf", 1),
            ("reboot_pending", 0),
            ("lockdown", 0),
            ("cgroup_v2", 1)
        ]
    );
    assert!(n.implied_tiers().contains(&("chmod", "lsm")));
    assert!(n.implied_tiers().contains(&("metadata-connect", "cgroup")));
}

#[test]
fn bpf_lsm_not_active_gets_the_exact_lsm_parameter() {
    let dir = tree(&[
        ("proc/sys/kernel/osrelease", "6.1.0-18-amd64\n"),
        (
            "proc/cmdline",
            "BOOT_IMAGE=/vmlinuz-6.1.0-18-amd64 root=UUID=x ro quiet\n",
        ),
        (
            "sys/kernel/security/lsm",
            "lockdown,capability,landlock,yama,apparmor",
        ),
        (
            "boot/config-6.1.0-18-amd64",
            "# CONFIG_BPF_LSM is not set\nCONFIG_BPF_LSM=y\n",
        ),
        ("proc/mounts", MOUNTS_HYBRID),
    ]);
    let n = NodePosture::read(dir.path());
    assert_eq!(n.bpf_lsm_active(), Some(false));
    assert_eq!(
        n.lsm_boot_parameter().as_deref(),
        Some("lsm=lockdown,capability,landlock,yama,apparmor,bpf")
    );
    assert!(
        n.lsm_advice().starts_with(
            "add lsm=lockdown,capability,landlock,yama,apparmor,bpf in GRUB_CMDLINE_LINUX"
        ),
        "{}",
        n.lsm_advice()
    );
    assert_eq!(n.cgroup, CgroupLayout::Hybrid);
    assert!(n.implied_tiers().contains(&("chmod", "override")));
    assert!(!n.btf);
}

#[test]
fn an_lsm_boot_parameter_is_extended_and_a_kernel_without_bpf_lsm_is_said_so() {
    let dir = tree(&[
        ("proc/sys/kernel/osrelease", "5.15.0-1\n"),
        ("proc/cmdline", "ro lsm=landlock,yama,selinux quiet"),
        (
            "sys/kernel/security/lsm",
            "capability,landlock,yama,selinux",
        ),
    ]);
    let n = NodePosture::read(dir.path());
    assert_eq!(n.config_bpf_lsm, None, "no config readable: unknown");
    assert_eq!(
        n.lsm_boot_parameter().as_deref(),
        Some("lsm=landlock,yama,selinux,bpf")
    );
    assert!(
        n.lsm_advice()
            .starts_with("change lsm=landlock,yama,selinux to lsm=landlock,yama,selinux,bpf")
    );
    assert_eq!(n.cgroup, CgroupLayout::Unknown);

    let dir = tree(&[
        ("proc/sys/kernel/osrelease", "5.10.0\n"),
        ("sys/kernel/security/lsm", "capability,apparmor"),
        ("boot/config-5.10.0", "# CONFIG_BPF_LSM is not set\n"),
    ]);
    let n = NodePosture::read(dir.path());
    assert_eq!(n.config_bpf_lsm, Some(false));
    assert_eq!(n.lsm_boot_parameter(), None);
    assert!(n.lsm_advice().contains("built without CONFIG_BPF_LSM"));
    assert!(n.implied_tiers().contains(&("chmod", "kill")));
}

#[test]
fn reboot_required_with_its_packages() {
    let dir = tree(&[
        ("proc/sys/kernel/osrelease", "6.1.0-18-amd64\n"),
        (
            "var/run/reboot-required",
            "*** System restart required ***\n",
        ),
        (
            "var/run/reboot-required.pkgs",
            "linux-image-6.1.0-21-amd64\nlibc6\n",
        ),
    ]);
    let n = NodePosture::read(dir.path());
    assert!(n.reboot_pending());
    assert_eq!(n.reboot_reasons, ["/var/run/reboot-required exists"]);
    assert_eq!(n.reboot_packages, ["linux-image-6.1.0-21-amd64", "libc6"]);
    assert_eq!(n.gauges()[2], ("reboot_pending", 1));
}

#[test]
fn a_running_kernel_older_than_the_installed_one_is_a_pending_reboot() {
    let dir = tree(&[
        ("proc/sys/kernel/osrelease", "5.14.0-362.8.1.el9_3.x86_64\n"),
        ("lib/modules/5.14.0-362.8.1.el9_3.x86_64/modules.dep", ""),
        ("lib/modules/5.14.0-427.13.1.el9_4.x86_64/modules.dep", ""),
        ("boot/vmlinuz-5.14.0-362.8.1.el9_3.x86_64", ""),
        (
            "sys/kernel/security/lockdown",
            "none [integrity] confidentiality\n",
        ),
    ]);
    let n = NodePosture::read(dir.path());
    assert_eq!(
        n.reboot_reasons,
        [
            "running kernel 5.14.0-362.8.1.el9_3.x86_64 is older than the newest installed one, 5.14.0-427.13.1.el9_4.x86_64"
        ]
    );
    assert_eq!(n.lockdown.as_deref(), Some("integrity"));
    assert_eq!(n.gauges()[3], ("lockdown", 1));

    // Only older kernels installed: nothing pending.
    let dir = tree(&[
        ("proc/sys/kernel/osrelease", "6.1.0-21-amd64\n"),
        ("boot/vmlinuz-6.1.0-9-amd64", ""),
        ("lib/modules/6.1.0-21-amd64/modules.dep", ""),
    ]);
    assert!(!NodePosture::read(dir.path()).reboot_pending());
}

#[test]
fn kernel_releases_order_numerically() {
    assert_eq!(
        version_cmp("6.1.0-21-amd64", "6.1.0-9-amd64"),
        Ordering::Greater
    );
    assert_eq!(version_cmp("6.10.0", "6.9.12"), Ordering::Greater);
    assert_eq!(version_cmp("6.1.0", "6.1.0"), Ordering::Equal);
    assert_eq!(version_cmp("6.1", "6.1.0"), Ordering::Less);
}

#[test]
fn an_empty_tree_knows_nothing() {
    let dir = tree(&[]);
    let n = NodePosture::read(dir.path());
    assert_eq!((n.kernel.clone(), n.bpf_lsm_active()), (None, None));
    assert!(n.lsm_advice().contains("unreadable"));
    assert!(!n.reboot_pending());
}
