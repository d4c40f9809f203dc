//! The override tier's loader: fmod_ret (`BPF_MODIFY_RETURN`) programs on the `security_*`
//! functions, which aya 0.14 cannot load (it has no such program type; see ARCHITECTURE.md,
//! "The override tier").
//!
//! The programs sit in the same object as everything else, in `fexit/security_*` sections (aya
//! parses those and leaves them alone until asked). Here the object is parsed a second time
//! with aya's own object crate, its map references are relocated to the maps aya already
//! created (so both tiers share every map), and each program is loaded and attached through
//! the `bpf(2)` system call: `BPF_PROG_LOAD` as `BPF_PROG_TYPE_TRACING` with expected attach
//! type `BPF_MODIFY_RETURN` and the target function's BTF id from the running kernel, then
//! `BPF_RAW_TRACEPOINT_OPEN` for the link (and `BPF_OBJ_PIN` in pinned mode).

use std::{
    collections::HashSet,
    ffi::CString,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    path::Path,
};

use aya::{Btf, Ebpf, maps::Map};
use aya_obj::{
    Object,
    btf::BtfKind,
    generated::{bpf_attach_type, bpf_cmd, bpf_insn, bpf_prog_type},
};

/// The object, parsed again, its map references pointing at the maps of the loaded [`Ebpf`].
pub struct Relocated {
    obj: Object,
}

/// The file descriptor of a map aya created (the kinds the sensor's object has).
fn map_fd(map: &Map) -> Option<RawFd> {
    let data = match map {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LpmTrie(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::RingBuf(d) => d,
        _ => return None,
    };
    Some(data.fd().as_fd().as_raw_fd())
}

impl Relocated {
    /// Parse `object` and relocate its map references to `ebpf`'s maps (by name).
    pub fn new(object: &[u8], ebpf: &Ebpf) -> Result<Self, String> {
        let mut obj = Object::parse(object).map_err(|e| format!("parsing the object: {e}"))?;
        let text_sections: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
        let maps = std::mem::take(&mut obj.maps);
        let fds: Vec<(&str, RawFd, &aya_obj::Map)> = ebpf
            .maps()
            .filter_map(|(name, map)| Some((name, map_fd(map)?, maps.get(name)?)))
            .collect();
        if fds.len() != maps.len() {
            let missing: Vec<&str> = maps
                .keys()
                .map(String::as_str)
                .filter(|m| !fds.iter().any(|(n, ..)| n == m))
                .collect();
            return Err(format!("maps not loaded: {}", missing.join(", ")));
        }
        obj.relocate_maps(fds.into_iter(), &text_sections)
            .map_err(|e| format!("relocating maps: {e}"))?;
        obj.relocate_calls(&text_sections)
            .map_err(|e| format!("relocating calls: {e}"))?;
        Ok(Self { obj })
    }

    /// Load `program` as fmod_ret on the kernel function `function` and attach it; pin the
    /// link at `pin` when given. The link detaches when the returned descriptor closes (unless
    /// pinned).
    pub fn attach(
        &self,
        program: &str,
        function: &str,
        btf: &Btf,
        pin: Option<&Path>,
    ) -> Result<OwnedFd, String> {
        let prog = self
            .obj
            .programs
            .get(program)
            .ok_or_else(|| format!("{program} is missing from the object"))?;
        let insns = &self
            .obj
            .functions
            .get(&prog.function_key())
            .ok_or_else(|| format!("{program}: no code"))?
            .instructions;
        let btf_id = btf
            .id_by_type_name_kind(function, BtfKind::Func)
            .map_err(|e| format!("{function} is not in the kernel's BTF: {e}"))?;
        let prog_fd = load(program, insns, btf_id)?;
        let link = raw_tracepoint_open(&prog_fd)?;
        if let Some(path) = pin {
            obj_pin(&link, path)?;
        }
        Ok(link)
    }
}

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `attach_btf_obj_fd` (a shorter attr is fine:
/// the kernel zero-fills what it knows beyond it).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_btf_obj_fd: u32,
    _pad: u32,
}
const _: () = assert!(std::mem::size_of::<ProgLoadAttr>() == 120);
const _: () = assert!(std::mem::offset_of!(ProgLoadAttr, attach_btf_id) == 108);

/// `union bpf_attr` for `BPF_RAW_TRACEPOINT_OPEN`.
#[repr(C)]
struct RawTracepointAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

/// `union bpf_attr` for `BPF_OBJ_PIN`.
#[repr(C)]
struct ObjPinAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `bpf(cmd, attr, size)`: a new descriptor, or the error.
fn bpf<T>(cmd: bpf_cmd, attr: &T) -> std::io::Result<i64> {
    // SAFETY: `attr` is a valid, initialised `union bpf_attr` prefix of the size given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            std::ptr::from_ref(attr),
            std::mem::size_of::<T>() as libc::c_long,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The bytes of the verifier log up to its NUL, its last lines.
fn log_tail(log: &[u8]) -> String {
    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

fn load(program: &str, insns: &[bpf_insn], btf_id: u32) -> Result<OwnedFd, String> {
    const LOG_BYTES: usize = 64 * 1024;
    let license = CString::new("GPL").expect("no NUL");
    let mut name = [0u8; 16];
    // The kernel keeps 15 bytes (and the NUL).
    for (slot, b) in name.iter_mut().zip(program.bytes().take(15)) {
        *slot = b;
    }
    let mut log = vec![0u8; LOG_BYTES];
    let mut attr = ProgLoadAttr {
        prog_type: bpf_prog_type::BPF_PROG_TYPE_TRACING as u32,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        expected_attach_type: bpf_attach_type::BPF_MODIFY_RETURN as u32,
        attach_btf_id: btf_id,
        ..Default::default()
    };
    let first = bpf(bpf_cmd::BPF_PROG_LOAD, &attr);
    let fd = match first {
        Ok(fd) => fd,
        // Again with the verifier's log, to say why.
        Err(first) => {
            attr.log_level = 1;
            attr.log_size = LOG_BYTES as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            match bpf(bpf_cmd::BPF_PROG_LOAD, &attr) {
                Ok(fd) => fd,
                Err(_) if log[0] == 0 => return Err(format!("BPF_PROG_LOAD: {first}")),
                Err(_) => return Err(format!("BPF_PROG_LOAD: {first}: {}", log_tail(&log))),
            }
        }
    };
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn raw_tracepoint_open(prog: &OwnedFd) -> Result<OwnedFd, String> {
    let attr = RawTracepointAttr {
        name: 0,
        prog_fd: prog.as_raw_fd() as u32,
        _pad: 0,
    };
    let fd = bpf(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN, &attr).map_err(|e| format!("attaching: {e}"))?;
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn obj_pin(fd: &OwnedFd, path: &Path) -> Result<(), String> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{}: a NUL in the path", path.display()))?;
    let attr = ObjPinAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
    };
    bpf(bpf_cmd::BPF_OBJ_PIN, &attr)
        .map(|_| ())
        .map_err(|e| format!("pinning {}: {e}", path.display()))
}
