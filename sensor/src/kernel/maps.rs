//! What the daemon writes into the kernel's maps, and reads back: destination tries, the
//! packet-socket rule, the double-buffered rule sets, scope roots, policy membership, kernel struct
//! offsets, counters. Every write that a reload makes keeps the maps consistent at every moment
//! (no destination both versions block is ever missing; a rule set is switched with one 4-byte
//! write).

use std::{collections::BTreeMap, net::IpAddr};

use aya::{
    Ebpf,
    maps::{
        Array, HashMap, MapData, MapError, PerCpuArray, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
};
use sensor_common::{
    Counter, DestRule, KernelOffsets, KernelRule, KernelRuleSet, MAX_KERNEL_RULES, MAX_RULE_PORTS,
    maps,
};
use sensor_policy::destinations::Prefix;

use super::{ProgramsError, scope::ScopeRoot};

const _: () = assert!(sensor_policy::MAX_PORTS == MAX_RULE_PORTS);
const _: () = assert!(sensor_policy::MAX_KERNEL_RULES <= MAX_KERNEL_RULES);

/// One destination trie entry: a prefix, the policies (bits) that cover it per action on
/// every port and on listed ports, and the index the kernel reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestEntry {
    pub prefix: Prefix,
    /// Policies enforcing / auditing it on every port.
    pub enforce: u32,
    pub audit: u32,
    /// Listed ports with the policies enforcing and auditing each; at most [`MAX_RULE_PORTS`]
    /// (the merge refuses more).
    pub ports: Vec<(u16, u32, u32)>,
    pub rule: u32,
}

impl DestEntry {
    /// The kernel's value.
    pub fn value(&self) -> DestRule {
        let mut value = DestRule {
            enforce: self.enforce,
            audit: self.audit,
            rule: self.rule,
            nports: self.ports.len().min(MAX_RULE_PORTS) as u32,
            ports: [0; MAX_RULE_PORTS],
            port_enforce: [0; MAX_RULE_PORTS],
            port_audit: [0; MAX_RULE_PORTS],
        };
        for (i, (port, enforce, audit)) in self.ports.iter().take(MAX_RULE_PORTS).enumerate() {
            value.ports[i] = *port;
            value.port_enforce[i] = *enforce;
            value.port_audit[i] = *audit;
        }
        value
    }
}

/// A double-buffered rule map: two [`KernelRuleSet`]s and the index of the one the programs
/// read.
#[derive(Clone, Copy, Debug)]
pub struct RuleMaps {
    pub sets: &'static str,
    pub active: &'static str,
}

/// The chmod rules (the `chmod` and `setid-create` protections).
pub const CHMOD_RULES: RuleMaps = RuleMaps {
    sets: maps::CHMOD_RULES,
    active: maps::CHMOD_ACTIVE,
};
/// The privilege rules (`mode_bits` = raise kinds).
pub const PRIVILEGE_RULES: RuleMaps = RuleMaps {
    sets: maps::PRIV_RULES,
    active: maps::PRIV_ACTIVE,
};

pub(super) fn map_error(name: &'static str) -> impl Fn(MapError) -> ProgramsError {
    move |source| ProgramsError::Map { name, source }
}

pub(super) fn missing(name: &'static str) -> ProgramsError {
    ProgramsError::Map {
        name,
        source: MapError::InvalidName { name: name.into() },
    }
}

/// Write `entries` into the tries (each insert replaces a key's value atomically), then remove
/// the keys of `old` that `entries` no longer has. A prefix in both never leaves the trie: no
/// moment in which a destination both versions block is open.
pub fn write_destinations(
    ebpf: &mut Ebpf,
    entries: &[DestEntry],
    old: &[Prefix],
) -> Result<(), ProgramsError> {
    let [v4, v6] = ebpf.maps_disjoint_mut([maps::DEST_V4, maps::DEST_V6]);
    let (v4_err, v6_err) = (map_error(maps::DEST_V4), map_error(maps::DEST_V6));
    let mut v4: LpmTrie<_, [u8; 4], DestRule> =
        LpmTrie::try_from(v4.ok_or_else(|| missing(maps::DEST_V4))?).map_err(&v4_err)?;
    let mut v6: LpmTrie<_, [u8; 16], DestRule> =
        LpmTrie::try_from(v6.ok_or_else(|| missing(maps::DEST_V6))?).map_err(&v6_err)?;
    for e in entries {
        let value = e.value();
        let len = u32::from(e.prefix.len);
        match e.prefix.addr {
            IpAddr::V4(a) => v4
                .insert(&Key::new(len, a.octets()), value, 0)
                .map_err(&v4_err)?,
            IpAddr::V6(a) => v6
                .insert(&Key::new(len, a.octets()), value, 0)
                .map_err(&v6_err)?,
        }
    }
    for gone in old
        .iter()
        .filter(|p| !entries.iter().any(|e| e.prefix == **p))
    {
        let len = u32::from(gone.len);
        match gone.addr {
            IpAddr::V4(a) => v4.remove(&Key::new(len, a.octets())).map_err(&v4_err)?,
            IpAddr::V6(a) => v6.remove(&Key::new(len, a.octets())).map_err(&v6_err)?,
        }
    }
    Ok(())
}

/// The rule that decides about packet sockets (which can reach any destination): every
/// policy with a destination rule, by the strictest action it has.
pub fn write_packet_rule(ebpf: &mut Ebpf, entries: &[DestEntry]) -> Result<(), ProgramsError> {
    let (mut enforce, mut audit) = (0, 0);
    for e in entries {
        enforce |= e.enforce | e.ports.iter().fold(0, |acc, p| acc | p.1);
        audit |= e.audit | e.ports.iter().fold(0, |acc, p| acc | p.2);
    }
    let value = DestRule {
        enforce,
        audit: audit & !enforce,
        rule: entries.first().map_or(sensor_common::NO_RULE, |e| e.rule),
        nports: 0,
        ports: [0; MAX_RULE_PORTS],
        port_enforce: [0; MAX_RULE_PORTS],
        port_audit: [0; MAX_RULE_PORTS],
    };
    set_single(ebpf, maps::PACKET_RULE, value)
}

/// Write `rules` into the inactive set of a double-buffered rule map, then make it the active
/// one with a single 4-byte write.
pub fn write_rule_set(
    ebpf: &mut Ebpf,
    maps: RuleMaps,
    rules: &[KernelRule],
) -> Result<(), ProgramsError> {
    let paths = rules
        .iter()
        .any(|r| r.flags & sensor_common::rule_flags::USERSPACE_PATHS != 0);
    let [sets, active] = ebpf.maps_disjoint_mut([maps.sets, maps.active]);
    let (sets_err, active_err) = (map_error(maps.sets), map_error(maps.active));
    let mut sets: Array<_, KernelRuleSet> =
        Array::try_from(sets.ok_or_else(|| missing(maps.sets))?).map_err(&sets_err)?;
    let mut active: Array<_, u32> =
        Array::try_from(active.ok_or_else(|| missing(maps.active))?).map_err(&active_err)?;
    let now = active.get(&0, 0).map_err(&active_err)? & 1;
    let mut set = KernelRuleSet {
        count: rules.len().min(MAX_KERNEL_RULES) as u32,
        flags: if paths {
            sensor_common::set_flags::USERSPACE_PATHS
        } else {
            0
        },
        rules: [KernelRule::default(); MAX_KERNEL_RULES],
    };
    for (slot, rule) in set.rules.iter_mut().zip(rules) {
        *slot = *rule;
    }
    sets.set(1 - now, set, 0).map_err(&sets_err)?;
    active.set(0, 1 - now, 0).map_err(&active_err)
}

/// The scope roots, for the programs that decide scope by walking the task's cgroups.
pub fn write_scope(ebpf: &mut Ebpf, scopes: &[ScopeRoot]) -> Result<(), ProgramsError> {
    let err = map_error(maps::SCOPE);
    let map = ebpf
        .map_mut(maps::SCOPE)
        .ok_or_else(|| missing(maps::SCOPE))?;
    let mut scope: HashMap<_, u64, u32> = HashMap::try_from(map).map_err(&err)?;
    for root in scopes {
        scope.insert(root.id, 1, 0).map_err(&err)?;
    }
    Ok(())
}

/// Make `members` the policy membership of pod cgroups (and of [`OTHER_CGROUPS`]), given the
/// map's content now (`current`): changed and new keys first, then the keys no longer there.
pub fn write_members(
    ebpf: &mut Ebpf,
    members: &BTreeMap<u64, u32>,
    current: &BTreeMap<u64, u32>,
) -> Result<(), ProgramsError> {
    let err = map_error(maps::MEMBERS);
    let map = ebpf
        .map_mut(maps::MEMBERS)
        .ok_or_else(|| missing(maps::MEMBERS))?;
    let mut map: HashMap<_, u64, u32> = HashMap::try_from(map).map_err(&err)?;
    for (id, policies) in members {
        if current.get(id) != Some(policies) {
            map.insert(id, policies, 0).map_err(&err)?;
        }
    }
    for id in current.keys().filter(|id| !members.contains_key(id)) {
        match map.remove(id) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(())
}

pub fn write_offsets(ebpf: &mut Ebpf, offsets: KernelOffsets) -> Result<(), ProgramsError> {
    set_single(ebpf, maps::OFFSETS, offsets)
}

/// Set the one entry of the array map `name`.
fn set_single<T: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    value: T,
) -> Result<(), ProgramsError> {
    let err = map_error(name);
    let map = ebpf.map_mut(name).ok_or_else(|| missing(name))?;
    let mut array: Array<_, T> = Array::try_from(map).map_err(&err)?;
    array.set(0, value, 0).map_err(err)
}

/// Take a ring buffer (the events, the reverts) out of the object (once).
pub fn take_ring(ebpf: &mut Ebpf, name: &'static str) -> Result<RingBuf<MapData>, ProgramsError> {
    let map = ebpf.take_map(name).ok_or_else(|| missing(name))?;
    RingBuf::try_from(map).map_err(map_error(name))
}

/// The kernel counters, summed over CPUs, in [`Counter`] order.
pub fn read_counters(ebpf: &Ebpf) -> Result<Vec<(Counter, u64)>, ProgramsError> {
    let err = map_error(maps::COUNTERS);
    let map = ebpf
        .map(maps::COUNTERS)
        .ok_or_else(|| missing(maps::COUNTERS))?;
    let array = PerCpuArray::<_, u64>::try_from(map).map_err(&err)?;
    Counter::ALL
        .iter()
        .map(|&c| Ok((c, array.get(&(c as u32), 0).map_err(&err)?.iter().sum())))
        .collect()
}
