//! What the daemon writes into the kernel's maps, and reads back: destination tries, the
//! packet-socket rule, the double-buffered rule sets, scope roots, exemptions, kernel struct
//! offsets, counters. Every write that a reload makes keeps the maps consistent at every moment
//! (no destination both versions block is ever missing; a rule set is switched with one 4-byte
//! write).

use std::{collections::BTreeSet, net::IpAddr};

use aya::{
    Ebpf,
    maps::{
        Array, HashMap, MapData, MapError, PerCpuArray, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
};
use sensor_common::{
    Action, Counter, DestRule, KernelOffsets, KernelRule, KernelRuleSet, MAX_KERNEL_RULES,
    MAX_RULE_PORTS, maps,
};
use sensor_policy::destinations::Prefix;

use super::{ProgramsError, scope::ScopeRoot};

const _: () = assert!(sensor_policy::MAX_PORTS == MAX_RULE_PORTS);
const _: () = assert!(sensor_policy::MAX_KERNEL_RULES == MAX_KERNEL_RULES);

/// One destination trie entry: a prefix, what a match does, and the index the kernel reports
/// (it names the entry in events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestEntry {
    pub prefix: Prefix,
    pub action: Action,
    pub rule: u32,
    /// Destination ports the entry applies to; empty = every port. At most
    /// [`MAX_RULE_PORTS`] (the policy parser refuses more).
    pub ports: Vec<u16>,
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
        let mut ports = [0u16; MAX_RULE_PORTS];
        let nports = e.ports.len().min(MAX_RULE_PORTS);
        ports[..nports].copy_from_slice(&e.ports[..nports]);
        let value = DestRule {
            action: e.action as u32,
            rule: e.rule,
            nports: nports as u32,
            _pad: 0,
            ports,
        };
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

/// The metadata rule that decides about packet sockets (which can reach any destination): the
/// first enforcing entry's, else the first audit entry's, else none.
pub fn write_packet_rule(ebpf: &mut Ebpf, entries: &[DestEntry]) -> Result<(), ProgramsError> {
    let chosen = entries
        .iter()
        .find(|e| e.action != Action::Audit)
        .or_else(|| entries.first());
    let value = DestRule {
        action: chosen.map_or(Action::Audit as u32, |e| e.action as u32),
        rule: chosen.map_or(sensor_common::NO_RULE, |e| e.rule),
        nports: 0,
        _pad: 0,
        ports: [0; MAX_RULE_PORTS],
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
    let [sets, active] = ebpf.maps_disjoint_mut([maps.sets, maps.active]);
    let (sets_err, active_err) = (map_error(maps.sets), map_error(maps.active));
    let mut sets: Array<_, KernelRuleSet> =
        Array::try_from(sets.ok_or_else(|| missing(maps.sets))?).map_err(&sets_err)?;
    let mut active: Array<_, u32> =
        Array::try_from(active.ok_or_else(|| missing(maps.active))?).map_err(&active_err)?;
    let now = active.get(&0, 0).map_err(&active_err)? & 1;
    let mut set = KernelRuleSet {
        count: rules.len().min(MAX_KERNEL_RULES) as u32,
        _pad: 0,
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

/// Make `ids` the exempted (pod-level) cgroups, given the ones exempted now (`current`): add
/// the new ones, then remove the others.
pub fn write_exemptions(
    ebpf: &mut Ebpf,
    ids: &BTreeSet<u64>,
    current: &BTreeSet<u64>,
) -> Result<(), ProgramsError> {
    let err = map_error(maps::EXEMPT);
    let map = ebpf
        .map_mut(maps::EXEMPT)
        .ok_or_else(|| missing(maps::EXEMPT))?;
    let mut exempt: HashMap<_, u64, u32> = HashMap::try_from(map).map_err(&err)?;
    for id in ids.difference(current) {
        exempt.insert(id, 1, 0).map_err(&err)?;
    }
    for id in current.difference(ids) {
        match exempt.remove(id) {
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
