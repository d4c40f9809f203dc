//! Types and names shared by the kernel programs (`sensor-ebpf`) and the daemon (`sensor`).
//!
//! Every type that crosses the kernel/userspace boundary is `#[repr(C)]`, has explicit padding,
//! no `bool`, and a size assertion next to it. Event kinds, verdicts, hooks and syscalls have
//! explicit numbers that are never reused. Userspace never transmutes kernel bytes into an enum:
//! it reads the `u32` and converts with `TryFrom`.
#![no_std]

use core::mem::{offset_of, size_of};

/// Map names: used by the `#[map]` attributes in `sensor-ebpf` and by the loader.
pub mod maps {
    /// The one ring buffer every event goes through.
    pub const EVENTS: &str = "SENSOR_EVENTS";
    /// LPM trie of blocked IPv4 destinations: `Key<[u8; 4]>` -> [`crate::DestRule`].
    pub const DEST_V4: &str = "SENSOR_DEST_V4";
    /// LPM trie of blocked IPv6 destinations: `Key<[u8; 16]>` -> [`crate::DestRule`].
    pub const DEST_V6: &str = "SENSOR_DEST_V6";
    /// Scope roots for the global (tracepoint) hooks: cgroup v2 id -> 1.
    pub const SCOPE: &str = "SENSOR_SCOPE";
    /// Policy membership (pod level): cgroup v2 id -> the policies (bits, [`crate::MAX_POLICIES`])
    /// whose scope holds the pod; a task at or below a pod's cgroup answers to those policies
    /// only (0: exempted from all). Key [`crate::OTHER_CGROUPS`] holds the policies of every
    /// cgroup no known pod claims.
    pub const MEMBERS: &str = "SENSOR_MEMBERS";
    /// Per-CPU kernel counters, indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "SENSOR_COUNTERS";
    /// Two [`crate::KernelRuleSet`] sets (double buffer); the daemon writes the inactive one, then
    /// flips [`CHMOD_ACTIVE`].
    pub const CHMOD_RULES: &str = "SENSOR_CHMOD_RULES";
    /// One `u32`: which of the two [`CHMOD_RULES`] sets the programs read.
    pub const CHMOD_ACTIVE: &str = "SENSOR_CHMOD_ACTIVE";
    /// Two [`crate::KernelRuleSet`] sets of privilege rules (`mode_bits` holds the raise kinds,
    /// [`crate::raise`]), double-buffered like [`CHMOD_RULES`].
    pub const PRIV_RULES: &str = "SENSOR_PRIV_RULES";
    /// One `u32`: which of the two [`PRIV_RULES`] sets the programs read.
    pub const PRIV_ACTIVE: &str = "SENSOR_PRIV_ACTIVE";
    /// One [`crate::KernelOffsets`]: kernel struct offsets for the LSM programs, read from
    /// the running kernel's BTF by the daemon before it attaches them.
    pub const OFFSETS: &str = "SENSOR_OFFSETS";
    /// One [`crate::DestRule`]: the metadata rule that decides about packet sockets (`rule` =
    /// [`crate::NO_RULE`]: none applies).
    pub const PACKET_RULE: &str = "SENSOR_PACKET_RULE";
    /// Kernel-only: connect/sendto calls on their way, waiting for a scoped cgroup hook.
    pub const PENDING: &str = "SENSOR_PENDING";
    /// Copies of killed set-id chmod/create events for the daemon's revert thread.
    pub const REVERTS: &str = "SENSOR_REVERTS";
    /// Kernel-only: the scope walk's result per cgroup (cgroup v2 id -> 1 inside, 0 outside),
    /// an LRU cache (a cgroup's ancestors never change, nor the scope roots of a loaded object).
    pub const SCOPE_CACHE: &str = "SENSOR_SCOPE_CACHE";
    /// Bench only (`sensor floor`): the hooked syscall numbers, a bitmap.
    pub const FLOOR_SYSCALLS: &str = "SENSOR_FLOOR_SYSCALLS";

    /// Every map of the object, besides the sections of globals (a test of the daemon checks
    /// the object against it).
    pub const ALL: [&str; 16] = [
        EVENTS,
        DEST_V4,
        DEST_V6,
        SCOPE,
        MEMBERS,
        COUNTERS,
        CHMOD_RULES,
        CHMOD_ACTIVE,
        PRIV_RULES,
        PRIV_ACTIVE,
        OFFSETS,
        PACKET_RULE,
        PENDING,
        SCOPE_CACHE,
        FLOOR_SYSCALLS,
        REVERTS,
    ];
}

/// Program names (the kernel keeps the first 15 bytes).
pub mod programs {
    pub const CONNECT4: &str = "sensor_connect4";
    pub const CONNECT6: &str = "sensor_connect6";
    pub const SENDMSG4: &str = "sensor_sendmsg4";
    pub const SENDMSG6: &str = "sensor_sendmsg6";
    pub const EGRESS: &str = "sensor_egress";
    /// The egress program for kernels without current-task helpers in cgroup skb programs.
    pub const EGRESS_COMPAT: &str = "sensor_egress_compat";
    pub const CONN_ENTER: &str = "sensor_conn_enter";
    pub const CONN_EXIT: &str = "sensor_conn_exit";
    pub const SENDTO_ENTER: &str = "sensor_sendto_enter";
    pub const SENDTO_EXIT: &str = "sensor_sendto_exit";
    pub const CHMOD: &str = "sensor_chmod";
    pub const FCHMOD: &str = "sensor_fchmod";
    pub const FCHMODAT: &str = "sensor_fchmodat";
    pub const FCHMODAT2: &str = "sensor_fchmodat2";
    pub const SETUID: &str = "sensor_setuid";
    pub const SETFSUID: &str = "sensor_setfsuid";
    pub const SETREUID: &str = "sensor_setreuid";
    pub const SETRESUID: &str = "sensor_setresuid";
    pub const SETGID: &str = "sensor_setgid";
    pub const SETFSGID: &str = "sensor_setfsgid";
    pub const SETREGID: &str = "sensor_setregid";
    pub const SETRESGID: &str = "sensor_setresgid";
    pub const EXEC: &str = "sensor_exec";
    pub const EXIT: &str = "sensor_exit";
    /// Kill tier for what the LSM tier's path_mknod, inode_setxattr, capset and
    /// bprm_creds_from_file hooks cover: syscall tracepoints (and sched_process_exec).
    pub const OPEN: &str = "sensor_open";
    pub const OPENAT: &str = "sensor_openat";
    pub const OPENAT2: &str = "sensor_openat2";
    pub const CREAT: &str = "sensor_creat";
    pub const MKNOD: &str = "sensor_mknod";
    pub const MKNODAT: &str = "sensor_mknodat";
    pub const SETXATTR: &str = "sensor_setxattr";
    pub const LSETXATTR: &str = "sensor_lsetxattr";
    pub const FSETXATTR: &str = "sensor_fsetxattr";
    pub const SETXATTRAT: &str = "sensor_setxattrat";
    pub const CAPSET: &str = "sensor_capset";
    pub const SETID_EXEC: &str = "sensor_setid_exec";
    /// Packet sockets: kill tier (`sys_enter_socket`) and LSM tier (`socket_create`).
    pub const SOCKET: &str = "sensor_socket";
    pub const LSM_SOCKET_CREATE: &str = "sensor_lsm_socket_create";
    /// BPF LSM programs (the LSM tier), each named after its hook.
    pub const LSM_PATH_CHMOD: &str = "sensor_lsm_path_chmod";
    pub const LSM_PATH_MKNOD: &str = "sensor_lsm_path_mknod";
    pub const LSM_FIX_SETUID: &str = "sensor_lsm_fix_setuid";
    pub const LSM_FIX_SETGID: &str = "sensor_lsm_fix_setgid";
    pub const LSM_CAPSET: &str = "sensor_lsm_capset";
    pub const LSM_SETID_EXEC: &str = "sensor_lsm_setid_exec";
    pub const LSM_SETXATTR: &str = "sensor_lsm_setxattr";
    /// Listed destinations through a socket created outside the scope (LSM tier).
    pub const LSM_SOCKET_CONNECT: &str = "sensor_lsm_socket_connect";
    pub const LSM_SOCKET_SENDMSG: &str = "sensor_lsm_socket_sendmsg";
    /// The override tier (fmod_ret on the `security_*` function of each LSM hook, where BPF LSM
    /// is built but not active), each named after its hook.
    pub const OVR_PATH_CHMOD: &str = "sensor_ovr_path_chmod";
    pub const OVR_PATH_MKNOD: &str = "sensor_ovr_path_mknod";
    pub const OVR_FIX_SETUID: &str = "sensor_ovr_fix_setuid";
    pub const OVR_FIX_SETGID: &str = "sensor_ovr_fix_setgid";
    pub const OVR_CAPSET: &str = "sensor_ovr_capset";
    pub const OVR_SETID_EXEC: &str = "sensor_ovr_setid_exec";
    pub const OVR_SETXATTR: &str = "sensor_ovr_setxattr";
    pub const OVR_SOCKET_CREATE: &str = "sensor_ovr_socket_create";
    pub const OVR_SOCKET_CONNECT: &str = "sensor_ovr_socket_connect";
    pub const OVR_SOCKET_SENDMSG: &str = "sensor_ovr_socket_sendmsg";
    /// Bench only (`sensor floor`): empty kill-tier hooks, and the raw-syscall dispatcher.
    pub const FLOOR: &str = "sensor_floor";
    pub const FLOOR_SYS_ENTER: &str = "sensor_floor_sys_enter";
    pub const FLOOR_SYS_EXIT: &str = "sensor_floor_sys_exit";
    /// Every program name starts with this; leftover checks look for it.
    pub const PREFIX: &str = "sensor_";
}

/// Names of the global variables the loader sets before loading.
pub mod globals {
    /// The wakeup threshold: a submit wakes the reader when the unconsumed data crosses a
    /// multiple of it (0: every record); other records wait for the reader's timer.
    pub const WAKEUP_BYTES: &str = "SENSOR_WAKEUP_BYTES";
    /// Offset of the `__data_loc char[] filename` field in the `sched:sched_process_exec`
    /// record (read from its format file at start-up: the layout is not ABI).
    pub const EXEC_FILENAME_OFFSET: &str = "SENSOR_EXEC_FILENAME_OFFSET";
}

/// Scope walk depth for global hooks: ancestors checked from the cgroup v2 root down.
pub const MAX_SCOPE_DEPTH: u32 = 16;
/// Bytes of a chmod path argument carried in an event (including the NUL).
pub const PATH_BYTES: usize = 256;
/// `TASK_COMM_LEN`.
pub const COMM_BYTES: usize = 16;

/// Defines a `#[repr(u32)]` enum with explicit numbers, a `TryFrom<u32>` and a stable name.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $num:literal => $text:literal,)+ }) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $num,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The stable name used in JSON output.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl TryFrom<u32> for $name {
            type Error = u32;
            fn try_from(value: u32) -> Result<Self, u32> {
                match value {
                    $($num => Ok(Self::$variant),)+
                    other => Err(other),
                }
            }
        }
    };
}

wire_enum! {
    /// What an event reports. Numbers are never reused.
    EventKind {
        Connect = 1 => "connect",
        Chmod = 2 => "chmod",
        Exec = 3 => "exec",
        Exit = 4 => "exit",
        Privilege = 5 => "privilege",
    }
}

wire_enum! {
    /// The call (or LSM hook) of a privilege event: set*id, capset, set-id exec, file
    /// capabilities.
    PrivilegeCall {
        Setuid = 1 => "setuid",
        Setfsuid = 2 => "setfsuid",
        Setreuid = 3 => "setreuid",
        Setresuid = 4 => "setresuid",
        Setgid = 5 => "setgid",
        Setfsgid = 6 => "setfsgid",
        Setregid = 7 => "setregid",
        Setresgid = 8 => "setresgid",
        /// LSM tier: the hooks see the new credentials, not the syscall that asked.
        LsmFixSetuid = 9 => "lsm:task_fix_setuid",
        LsmFixSetgid = 10 => "lsm:task_fix_setgid",
        LsmCapset = 11 => "lsm:capset",
        LsmSetidExec = 12 => "lsm:bprm_creds_from_file",
        LsmSetxattr = 13 => "lsm:inode_setxattr",
        Setxattr = 14 => "setxattr",
        Lsetxattr = 15 => "lsetxattr",
        Fsetxattr = 16 => "fsetxattr",
        Capset = 17 => "capset",
        /// Kill tier: a completed exec that left the effective ids different from the real
        /// ones (checked at `sched_process_exec`, before the new program runs).
        Execve = 18 => "execve",
        Setxattrat = 19 => "setxattrat",
    }
}

wire_enum! {
    /// A kind of privilege raise: the policy's `raises` and the `raise` of a privilege event.
    /// Each value is a distinct bit, so a rule's kinds form a bit set (`KernelRule::mode_bits`).
    Raise {
        /// A process whose real uid is not 0 makes a uid (real, effective, saved or fs) 0.
        SetuidRoot = 1 => "setuid-root",
        /// A process whose real gid is not 0 makes a gid 0 that was not 0.
        SetgidRoot = 2 => "setgid-root",
        /// `capset` adds a capability to a set.
        Capset = 4 => "capset",
        /// An exec of a set-uid or set-gid file changes the process's ids.
        SetidExec = 8 => "setid-exec",
        /// Writing `security.capability` on a file (granting file capabilities).
        FileCaps = 16 => "file-caps",
    }
}

wire_enum! {
    /// The decision taken in the kernel.
    Verdict {
        /// Denied: the caller got an error.
        Blocked = 1 => "blocked",
        /// A rule in audit mode matched: allowed, and reported.
        Audited = 2 => "audited",
        /// Allowed (detection-only hooks, or rules that log allowed calls).
        Allowed = 3 => "allowed",
        /// The caller was killed (fallback tier; later issue).
        Killed = 4 => "killed",
    }
}

wire_enum! {
    /// What a matching destination rule does.
    Action {
        Enforce = 1 => "enforce",
        Audit = 2 => "audit",
    }
}

wire_enum! {
    /// The cgroup sock_addr hook that saw a connect-family call.
    ConnectHook {
        Connect4 = 1 => "connect4",
        Connect6 = 2 => "connect6",
        Sendmsg4 = 3 => "sendmsg4",
        Sendmsg6 = 4 => "sendmsg6",
        /// cgroup skb egress: a raw or ping socket's packet.
        Egress = 5 => "egress",
        /// connect/sendto syscall tracepoints: a socket the scope's cgroup hooks never saw
        /// (created outside the scope).
        Syscall = 6 => "syscall",
        /// A packet socket (AF_PACKET) refused at creation: no destination (0.0.0.0:0).
        Packet = 7 => "packet",
        /// LSM and override tiers, `socket_connect`: a socket created outside the scope.
        SocketConnect = 8 => "lsm:socket_connect",
        /// LSM and override tiers, `socket_sendmsg` (sendto, sendmsg, sendmmsg, io_uring): a
        /// socket created outside the scope.
        SocketSendmsg = 9 => "lsm:socket_sendmsg",
    }
}

wire_enum! {
    /// The call (or LSM hook) that set a file's mode: the chmod family, or a file created with
    /// a mode (the `chmod` event kind covers both).
    ModeCall {
        Chmod = 1 => "chmod",
        Fchmod = 2 => "fchmod",
        Fchmodat = 3 => "fchmodat",
        Fchmodat2 = 4 => "fchmodat2",
        /// LSM tier: one hook for the whole family (the syscall is not known there).
        LsmPathChmod = 5 => "lsm:path_chmod",
        /// LSM tier: a file created with this mode (open with O_CREAT, mknod).
        LsmPathMknod = 6 => "lsm:path_mknod",
        /// Kill tier: files created with a set-id mode.
        Open = 7 => "open",
        Openat = 8 => "openat",
        Openat2 = 9 => "openat2",
        Creat = 10 => "creat",
        Mknod = 11 => "mknod",
        Mknodat = 12 => "mknodat",
    }
}

wire_enum! {
    /// Kernel-side counters (index into the per-CPU counter array).
    Counter {
        /// Connect-family calls denied.
        Blocked = 0 => "blocked",
        /// Connect-family calls that matched an audit rule.
        Audited = 1 => "audited",
        /// chmod-family calls seen in scope.
        ChmodSeen = 2 => "chmod_seen",
        /// Connect events lost: ring buffer reserve failed (the verdict still applied).
        RingbufFullConnect = 3 => "ringbuf_full_connect",
        /// chmod events lost: ring buffer reserve failed.
        RingbufFullChmod = 4 => "ringbuf_full_chmod",
        /// chmod path arguments that could not be read from user memory.
        PathReadFailed = 5 => "path_read_failed",
        /// exec/exit events lost: ring buffer reserve failed.
        RingbufFullProcess = 6 => "ringbuf_full_process",
        /// Calls matching an enforcing rule let through by an exemption (connect and chmod).
        Exempted = 7 => "exempted",
        /// chmod-family callers killed by an enforcing chmod rule (kill tier).
        ChmodKilled = 8 => "chmod_killed",
        /// chmod-family calls that matched an audit rule.
        ChmodAudited = 9 => "chmod_audited",
        /// Kills the kernel refused (`bpf_send_signal` failed): the call went through and is
        /// reported `audited`.
        KillFailed = 10 => "kill_failed",
        /// Callers killed by an enforcing privilege rule (set*id to root).
        PrivKilled = 11 => "priv_killed",
        /// set*id-to-root calls that matched an audit rule.
        PrivAudited = 12 => "priv_audited",
        /// Privilege events lost: ring buffer reserve failed (the verdict still applied).
        RingbufFullPriv = 13 => "ringbuf_full_priv",
        /// Callers killed for a listed destination through a socket created outside the scope.
        LateSocketKilled = 14 => "late_socket_killed",
        /// The same, audit rules.
        LateSocketAudited = 15 => "late_socket_audited",
        /// LSM tier: chmod-family calls and set-id file creations denied (EPERM).
        LsmChmodDenied = 16 => "lsm_chmod_denied",
        /// LSM tier: the same, audit rules (allowed and reported).
        LsmChmodAudited = 17 => "lsm_chmod_audited",
        /// LSM tier: privilege raises denied (EPERM).
        LsmPrivDenied = 18 => "lsm_priv_denied",
        /// LSM tier: privilege raises that matched an audit rule.
        LsmPrivAudited = 19 => "lsm_priv_audited",
        /// Packet sockets refused (LSM tier, EPERM) while a metadata rule enforces.
        PacketDenied = 20 => "packet_denied",
        /// Packet socket creators killed (kill tier).
        PacketKilled = 21 => "packet_killed",
        /// Packet sockets created under an audit metadata rule (allowed, reported).
        PacketAudited = 22 => "packet_audited",
        /// Kill tier: killed set-id calls whose revert copy found the revert ring full (the
        /// pipeline reverts from the event instead, after the events queued before it).
        RingbufFullRevert = 23 => "ringbuf_full_revert",
    }
}

/// Number of slots in the counter array.
pub const COUNTER_SLOTS: u32 = Counter::ALL.len() as u32;
const _: () = {
    // The counters index the array: their numbers are 0, 1, 2, ... in declaration order.
    let mut i = 0;
    while i < Counter::ALL.len() {
        assert!(Counter::ALL[i] as usize == i);
        i += 1;
    }
};

/// `S_ISUID | S_ISGID`.
pub const SETID_BITS: u32 = 0o6000;
/// `AT_FDCWD`.
pub const AT_FDCWD: i32 = -100;

/// Most policies in force at once: a policy is one bit of a `u32` mask in the kernel maps.
pub const MAX_POLICIES: usize = 32;

/// [`maps::MEMBERS`] key of the policies that apply to a cgroup no known pod claims (cgroup
/// ids start at 1).
pub const OTHER_CGROUPS: u64 = 0;

/// Value of a destination LPM trie entry: which policies cover the prefix (merged with every
/// shorter prefix that contains it), as policy bits, on every port or on listed ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestRule {
    /// Policies with an enforcing rule for every port.
    pub enforce: u32,
    /// Policies with an audit rule for every port.
    pub audit: u32,
    /// Index of the entry in the daemon's table (names the prefix in events).
    pub rule: u32,
    /// How many of `ports` are used.
    pub nports: u32,
    /// Ports (host order) some policy lists, the first `nports` of them, each with the policies
    /// that enforce or audit it ([`Self::port_enforce`], [`Self::port_audit`]).
    pub ports: [u16; MAX_RULE_PORTS],
    pub port_enforce: [u32; MAX_RULE_PORTS],
    pub port_audit: [u32; MAX_RULE_PORTS],
}
const _: () = assert!(size_of::<DestRule>() == 16 + 2 * MAX_RULE_PORTS + 8 * MAX_RULE_PORTS);

impl DestRule {
    /// The policies (enforcing, auditing) whose rules cover `port`.
    #[inline(always)]
    pub fn policies_at(&self, port: u16) -> (u32, u32) {
        let (mut enforce, mut audit) = (self.enforce, self.audit);
        let mut i = 0;
        while i < MAX_RULE_PORTS {
            if (i as u32) < self.nports && self.ports[i] == port {
                enforce |= self.port_enforce[i];
                audit |= self.port_audit[i];
            }
            i += 1;
        }
        (enforce, audit)
    }
}

/// A chmod rule as the kernel evaluates it: a call matches when its requested mode has any of
/// `mode_bits`, or always with [`rule_flags::MATCH_ALL`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KernelRule {
    /// Index the event reports (names the rule in userspace).
    pub rule: u32,
    /// [`Action`] as `u32`; anything but `Audit` enforces.
    pub action: u32,
    pub mode_bits: u32,
    /// [`rule_flags`].
    pub flags: u32,
    /// The policy the rule belongs to, as its bit ([`maps::MEMBERS`]).
    pub policy: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<KernelRule>() == 24);

pub mod rule_flags {
    /// Every call matches, whatever the mode.
    pub const MATCH_ALL: u32 = 1;
    /// The rule also names paths: the tracepoint tier cannot match them in the kernel, so the
    /// kernel skips it and userspace matches it for the report (never enforced at this tier).
    pub const USERSPACE_PATHS: u32 = 2;
}

pub mod set_flags {
    /// Some rule is [`super::rule_flags::USERSPACE_PATHS`]: an event no kernel rule decided
    /// carries the caller's policies, for userspace to match those rules against.
    pub const USERSPACE_PATHS: u32 = 1;
}

/// Most chmod rules (and, separately, privilege rules) the kernel evaluates, summed over the
/// policies in force (the daemon refuses a set with more).
pub const MAX_KERNEL_RULES: usize = 32;

/// One set of chmod rules (value of a [`maps::CHMOD_RULES`] slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelRuleSet {
    /// Rules in use, the first `count` of `rules`: each policy's in its file order.
    pub count: u32,
    /// [`set_flags`].
    pub flags: u32,
    pub rules: [KernelRule; MAX_KERNEL_RULES],
}
const _: () = assert!(size_of::<KernelRuleSet>() == 8 + 24 * MAX_KERNEL_RULES);

/// `ChmodEvent::rule` when no kernel rule matched.
pub const NO_RULE: u32 = u32::MAX;

/// Most ports one destination rule may list (the policy parser refuses more).
pub const MAX_RULE_PORTS: usize = 16;

/// Fixed header at the start of every event.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// [`EventKind`] as `u32`.
    pub kind: u32,
    /// Total size of the event in bytes, header included.
    pub size: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ktime_ns: u64,
    /// cgroup v2 id of the task.
    pub cgroup_id: u64,
    /// Thread id (kernel `pid`).
    pub tid: u32,
    /// Process id (kernel `tgid`).
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// [`Verdict`] as `u32`.
    pub verdict: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_BYTES],
}
const _: () = assert!(size_of::<EventHeader>() == 64);
const _: () = assert!(offset_of!(EventHeader, ktime_ns) == 8);
const _: () = assert!(offset_of!(EventHeader, cgroup_id) == 16);
const _: () = assert!(offset_of!(EventHeader, verdict) == 40);
const _: () = assert!(offset_of!(EventHeader, comm) == 48);

/// A connect-family call to a listed destination.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnectEvent {
    pub header: EventHeader,
    /// [`ConnectHook`] as `u32`.
    pub hook: u32,
    /// Socket family (`AF_INET` / `AF_INET6`).
    pub sock_family: u32,
    /// Socket type (`SOCK_STREAM`, `SOCK_DGRAM`, ...).
    pub sock_type: u32,
    /// Socket protocol (`IPPROTO_TCP`, `IPPROTO_UDP`, ...).
    pub protocol: u32,
    /// Family of the matched destination: `AF_INET` also for a v4-mapped IPv6 address.
    pub dst_family: u32,
    /// Destination port, host byte order.
    pub dst_port: u32,
    /// Rule index from [`DestRule::rule`].
    pub rule: u32,
    /// The policies (bits) whose rules matched and apply to the caller.
    pub policies: u32,
    /// Destination address in network byte order; IPv4 uses the first 4 bytes.
    pub dst_addr: [u8; 16],
}
const _: () = assert!(size_of::<ConnectEvent>() == 112);
const _: () = assert!(offset_of!(ConnectEvent, hook) == 64);
const _: () = assert!(offset_of!(ConnectEvent, dst_addr) == 96);

/// Path argument status in a [`ChmodEvent`].
pub mod path_status {
    /// `path` holds the whole argument.
    pub const OK: u32 = 0;
    /// The argument did not fit: `path` holds its first `PATH_BYTES - 1` bytes.
    pub const TRUNCATED: u32 = 1;
    /// Reading user memory failed.
    pub const FAULT: u32 = 2;
    /// The syscall has no path argument (fchmod).
    pub const NONE: u32 = 3;
    /// LSM tier: `path` holds the file's own name (last component), read from its dentry.
    pub const NAME: u32 = 4;
}

/// A chmod-family syscall entered by a task in scope.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ChmodEvent {
    pub header: EventHeader,
    /// [`ModeCall`] as `u32`.
    pub syscall: u32,
    /// Requested mode (`& 0o7777`).
    pub mode: u32,
    /// The fd (fchmod) or dirfd (fchmodat, fchmodat2; `AT_FDCWD` = -100); -1 for chmod.
    pub fd: i32,
    /// fchmodat2 flags; 0 otherwise.
    pub flags: u32,
    /// One of [`path_status`].
    pub path_status: u32,
    /// Bytes of `path` in use, without the NUL.
    pub path_len: u32,
    /// [`KernelRule::rule`] of the deciding rule, [`NO_RULE`] when none matched.
    pub rule: u32,
    /// The policies (bits) whose rules matched and apply to the caller.
    pub policies: u32,
    pub path: [u8; PATH_BYTES],
}
const _: () = assert!(size_of::<ChmodEvent>() == 64 + 32 + PATH_BYTES);
const _: () = assert!(offset_of!(ChmodEvent, path) == 96);

/// A task in scope asked a set*id syscall for uid/gid 0 while its real uid/gid is not 0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrivilegeEvent {
    pub header: EventHeader,
    /// [`PrivilegeCall`] as `u32`.
    pub syscall: u32,
    /// A [`raise`] bit.
    pub raise: u32,
    /// The requested ids, as many as the syscall takes (`u32::MAX` = unchanged).
    pub ids: [u32; 3],
    pub nids: u32,
    /// Index of the deciding privilege rule ([`NO_RULE`]: none).
    pub rule: u32,
    /// The policies (bits) whose rules matched and apply to the caller.
    pub policies: u32,
}
const _: () = assert!(size_of::<PrivilegeEvent>() == 64 + 32);

/// A task in scope completed an exec (`sched:sched_process_exec`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// One of [`path_status`] for `filename`.
    pub filename_status: u32,
    /// Bytes of `filename` in use, without the NUL.
    pub filename_len: u32,
    pub _pad: [u32; 2],
    /// The executed file as passed to exec.
    pub filename: [u8; PATH_BYTES],
}
const _: () = assert!(size_of::<ExecEvent>() == 64 + 16 + PATH_BYTES);
const _: () = assert!(offset_of!(ExecEvent, filename) == 80);

/// A process in scope exited (its thread-group leader, `sched:sched_process_exit`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitEvent {
    pub header: EventHeader,
}
const _: () = assert!(size_of::<ExitEvent>() == 64);

/// Offsets (bytes) of the kernel struct fields the LSM programs read, from the running
/// kernel's BTF (the layouts differ between kernels and configs: nothing is compiled in).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `struct path.dentry`
    pub path_dentry: u32,
    /// `struct dentry.d_inode`
    pub dentry_inode: u32,
    /// `struct dentry.d_name` + `struct qstr.name`
    pub dentry_name: u32,
    /// `struct inode.i_mode`
    pub inode_mode: u32,
    /// `struct inode.i_uid`
    pub inode_uid: u32,
    /// `struct inode.i_gid`
    pub inode_gid: u32,
    /// `struct file.f_inode`
    pub file_inode: u32,
    /// `struct cred`: uid, gid, suid, sgid, euid, egid, fsuid, fsgid.
    pub cred_uid: u32,
    pub cred_gid: u32,
    pub cred_suid: u32,
    pub cred_sgid: u32,
    pub cred_euid: u32,
    pub cred_egid: u32,
    pub cred_fsuid: u32,
    pub cred_fsgid: u32,
    /// `struct cred`: cap_inheritable, cap_permitted, cap_effective (`kernel_cap_t`, 8 bytes).
    pub cred_cap_inheritable: u32,
    pub cred_cap_permitted: u32,
    pub cred_cap_effective: u32,
    /// `struct task_struct.cred`
    pub task_cred: u32,
    /// `struct socket`: sk, type.
    pub socket_sk: u32,
    pub socket_type: u32,
    /// `struct sock`: `__sk_common.skc_family`, `sk_protocol`, `sk_cgrp_data.cgroup`.
    pub sock_family: u32,
    pub sock_protocol: u32,
    pub sock_cgroup: u32,
    /// `struct cgroup`: level, kn, ancestors (the array).
    pub cgroup_level: u32,
    pub cgroup_kn: u32,
    pub cgroup_ancestors: u32,
    /// `struct kernfs_node.id` (the cgroup id).
    pub kernfs_id: u32,
    /// `struct msghdr`: msg_name, msg_namelen.
    pub msghdr_name: u32,
    pub msghdr_namelen: u32,
    /// 1 once the daemon wrote the offsets (programs act on nothing before).
    pub valid: u32,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, `#[repr(C)]`, all fields u32.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: plain-old-data, `#[repr(C)]`, no padding bytes left implicit.
    unsafe impl aya::Pod for super::DestRule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelRuleSet {}
}
