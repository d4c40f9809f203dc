//! Kernel struct offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The LSM programs read a few fields of `struct path`, `dentry`, `inode`, `file` and `cred`.
//! Their offsets change between kernel versions and configurations (6.1 and 6.12 differ in
//! `struct cred`), so they are looked up here at start-up and handed to the programs through a
//! map, never compiled in. The reader covers the part of the BTF format this needs: the type
//! section (every kind, to walk it) and the member lists of structs and unions.

use std::{collections::HashMap, path::Path};

use sensor_common::KernelOffsets;

/// Where the kernel exposes its own BTF.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not BTF data ({what})")]
    Format { path: String, what: String },
    #[error("{path}: no struct {ty} with a field {field}")]
    Missing {
        path: String,
        ty: &'static str,
        field: &'static str,
    },
}

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

/// One struct or union member: name, type id, offset in bits.
#[derive(Clone, Debug)]
struct Member {
    name: String,
    type_id: u32,
    bit_offset: u32,
}

/// The structs and unions of a BTF blob, with their members.
pub struct Btf {
    path: String,
    /// Named structs: name -> type ids (several when the name is reused).
    by_name: HashMap<String, Vec<u32>>,
    /// Members of every struct and union, by type id.
    members: HashMap<u32, Vec<Member>>,
}

impl Btf {
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data, &path.display().to_string())
    }

    /// Parse a BTF blob (native endianness, as the kernel exposes it).
    pub fn parse(data: &[u8], path: &str) -> Result<Self, BtfError> {
        let bad = |what: &str| BtfError::Format {
            path: path.to_owned(),
            what: what.to_owned(),
        };
        let u32_at = |at: usize| -> Result<u32, BtfError> {
            data.get(at..at + 4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| bad("truncated"))
        };
        if data.len() < 24 || u16::from_ne_bytes([data[0], data[1]]) != MAGIC {
            return Err(bad("bad magic"));
        }
        let hdr_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let types_start = hdr_len + type_off;
        let strings_start = hdr_len + str_off;
        let strings = data
            .get(strings_start..strings_start + str_len)
            .ok_or_else(|| bad("string section out of bounds"))?;
        let name = |off: u32| -> String {
            let rest = strings.get(off as usize..).unwrap_or_default();
            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end]).into_owned()
        };
        let end = types_start + type_len;
        if end > data.len() {
            return Err(bad("type section out of bounds"));
        }
        let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
        let mut members = HashMap::new();
        let mut at = types_start;
        let mut id = 1u32;
        while at < end {
            let name_off = u32_at(at)?;
            let info = u32_at(at + 4)?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            at += 12;
            let extra = match kind {
                1 => 4,                                      // INT
                3 => 12,                                     // ARRAY
                KIND_STRUCT | KIND_UNION => 12 * vlen,       // members
                6 => 8 * vlen,                               // ENUM
                13 => 8 * vlen,                              // FUNC_PROTO params
                14 => 4,                                     // VAR
                15 => 12 * vlen,                             // DATASEC
                17 => 4,                                     // DECL_TAG
                19 => 12 * vlen,                             // ENUM64
                2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0, // PTR FWD TYPEDEF qualifiers FUNC FLOAT TYPE_TAG
                other => return Err(bad(&format!("unknown type kind {other} (type {id})"))),
            };
            if kind == KIND_STRUCT || kind == KIND_UNION {
                let mut list = Vec::with_capacity(vlen);
                for m in 0..vlen {
                    let base = at + 12 * m;
                    let offset = u32_at(base + 8)?;
                    list.push(Member {
                        name: name(u32_at(base)?),
                        type_id: u32_at(base + 4)?,
                        // With kind_flag set, the top 8 bits are a bitfield size.
                        bit_offset: if kind_flag {
                            offset & 0x00ff_ffff
                        } else {
                            offset
                        },
                    });
                }
                if kind == KIND_STRUCT && name_off != 0 && vlen > 0 {
                    by_name.entry(name(name_off)).or_default().push(id);
                }
                members.insert(id, list);
            }
            at += extra;
            id += 1;
        }
        Ok(Self {
            path: path.to_owned(),
            by_name,
            members,
        })
    }

    /// Byte offset of `field` in `struct ty`, looking into anonymous struct/union members.
    pub fn offset(&self, ty: &'static str, field: &'static str) -> Result<u32, BtfError> {
        self.by_name
            .get(ty)
            .into_iter()
            .flatten()
            .find_map(|&id| self.find(id, field, 0))
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::Missing {
                path: self.path.clone(),
                ty,
                field,
            })
    }

    fn find(&self, id: u32, field: &str, base_bits: u32) -> Option<u32> {
        let members = self.members.get(&id)?;
        if let Some(m) = members.iter().find(|m| m.name == field) {
            return Some(base_bits + m.bit_offset);
        }
        members
            .iter()
            .filter(|m| m.name.is_empty())
            .find_map(|m| self.find(m.type_id, field, base_bits + m.bit_offset))
    }
}

/// The offsets the LSM programs need, from `btf`.
pub fn kernel_offsets(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    Ok(KernelOffsets {
        path_dentry: btf.offset("path", "dentry")?,
        dentry_inode: btf.offset("dentry", "d_inode")?,
        dentry_name: btf.offset("dentry", "d_name")? + btf.offset("qstr", "name")?,
        inode_mode: btf.offset("inode", "i_mode")?,
        inode_uid: btf.offset("inode", "i_uid")?,
        inode_gid: btf.offset("inode", "i_gid")?,
        file_inode: btf.offset("file", "f_inode")?,
        cred_uid: btf.offset("cred", "uid")?,
        cred_gid: btf.offset("cred", "gid")?,
        cred_suid: btf.offset("cred", "suid")?,
        cred_sgid: btf.offset("cred", "sgid")?,
        cred_euid: btf.offset("cred", "euid")?,
        cred_egid: btf.offset("cred", "egid")?,
        cred_fsuid: btf.offset("cred", "fsuid")?,
        cred_fsgid: btf.offset("cred", "fsgid")?,
        cred_cap_inheritable: btf.offset("cred", "cap_inheritable")?,
        cred_cap_permitted: btf.offset("cred", "cap_permitted")?,
        cred_cap_effective: btf.offset("cred", "cap_effective")?,
        task_cred: btf.offset("task_struct", "cred")?,
        socket_sk: btf.offset("socket", "sk")?,
        socket_type: btf.offset("socket", "type")?,
        sock_family: btf.offset("sock", "__sk_common")?
            + btf.offset("sock_common", "skc_family")?,
        sock_protocol: btf.offset("sock", "sk_protocol")?,
        sock_cgroup: btf.offset("sock", "sk_cgrp_data")?
            + btf.offset("sock_cgroup_data", "cgroup")?,
        cgroup_level: btf.offset("cgroup", "level")?,
        cgroup_kn: btf.offset("cgroup", "kn")?,
        // Linux 6.0 and later (before: `ancestor_ids`, the ids themselves).
        cgroup_ancestors: btf.offset("cgroup", "ancestors")?,
        kernfs_id: btf.offset("kernfs_node", "id")?,
        msghdr_name: btf.offset("msghdr", "msg_name")?,
        msghdr_namelen: btf.offset("msghdr", "msg_namelen")?,
        valid: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with `struct qstr { union { u64 hash_len; }; const char *name; }` and
    /// `struct cred { int usage; unsigned uid; }`, written by hand.
    fn blob() -> Vec<u8> {
        let strings = b"\0qstr\0hash_len\0name\0cred\0usage\0uid\0int\0".to_vec();
        let s = |n: &str| {
            let needle = format!("\0{n}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_ne_bytes());
            }
        };
        // 1: int
        push(&[s("int"), 1 << 24, 4, 32]);
        // 2: pointer to int
        push(&[0, 2 << 24, 1]);
        // 3: anonymous union { hash_len: int @0 }
        push(&[0, (5 << 24) | 1, 8, s("hash_len"), 1, 0]);
        // 4: struct qstr { <anon union> @0, name @64 bits }
        push(&[s("qstr"), (4 << 24) | 2, 16, 0, 3, 0, s("name"), 2, 64]);
        // 5: struct cred (kind_flag: bitfield-encoded offsets) { usage @0, uid @32 bits }
        push(&[
            s("cred"),
            (1 << 31) | (4 << 24) | 2,
            8,
            s("usage"),
            1,
            0,
            s("uid"),
            1,
            32,
        ]);
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_ne_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_ne_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn finds_direct_anonymous_and_bitfield_encoded_members() {
        let btf = Btf::parse(&blob(), "test").unwrap();
        assert_eq!(btf.offset("qstr", "name").unwrap(), 8);
        assert_eq!(btf.offset("qstr", "hash_len").unwrap(), 0);
        assert_eq!(btf.offset("cred", "uid").unwrap(), 4);
        let err = btf.offset("cred", "euid").unwrap_err().to_string();
        assert_eq!(err, "test: no struct cred with a field euid");
    }

    #[test]
    fn refuses_what_is_not_btf() {
        let err = Btf::parse(b"not btf at all, not at all......", "x")
            .err()
            .unwrap();
        assert!(err.to_string().contains("bad magic"), "{err}");
        let mut truncated = blob();
        truncated.truncate(40);
        assert!(Btf::parse(&truncated, "x").is_err());
    }

    /// The running kernel's own BTF has every field the LSM programs read.
    #[test]
    fn the_running_kernel_has_every_offset() {
        let btf = Btf::from_file(Path::new(VMLINUX)).unwrap();
        let off = kernel_offsets(&btf).unwrap();
        assert_eq!(off.path_dentry, 8, "struct path {{ mnt; dentry }}");
        assert!(off.cred_euid > off.cred_uid);
        assert_eq!(off.cred_cap_permitted, off.cred_cap_inheritable + 8);
        assert_eq!(
            off.msghdr_name, 0,
            "struct msghdr {{ void *msg_name; ... }}"
        );
        assert!(
            off.cgroup_ancestors > off.cgroup_kn,
            "ancestors[] is the last member"
        );
        assert_eq!(
            off.sock_family, 16,
            "struct sock_common: addresses, hash, ports, family"
        );
    }
}
