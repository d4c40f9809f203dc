//! Tests of the protection catalog against the embedded object and the docs.

use super::*;

#[test]
fn every_program_is_declared_once() {
    let mut names: Vec<&str> = programs().map(|(_, p)| p.name).collect();
    let all = names.len();
    names.sort_unstable();
    names.dedup();
    // sched_process_exec serves both the telemetry and the set-id exec check: two programs.
    assert_eq!(names.len(), all, "a program appears twice in the catalog");
    assert!(
        names
            .iter()
            .all(|n| n.starts_with(p::PREFIX) && n.len() <= 32)
    );
}

#[test]
fn tiers_follow_the_attached_programs() {
    let lsm_chmod = [p::LSM_PATH_CHMOD, p::CHMOD, p::SETID_EXEC];
    let tiers = protection_tiers(lsm_chmod.iter().copied());
    let get = |name| tiers.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
    assert_eq!(get("chmod"), Some(Some(Tier::Lsm)));
    assert_eq!(get("setid-exec"), Some(Some(Tier::Kill)));
    assert_eq!(get("capset"), Some(None));
    assert_eq!(tier_of(p::EGRESS_COMPAT), Some(Tier::Cgroup));
    assert_eq!(tier_of(p::EXIT), Some(Tier::Tracepoint));
    assert_eq!(tier_of("sensor_nothing"), None);
}

/// The embedded object holds exactly the catalog's programs and sensor-common's maps.
#[test]
fn the_object_matches_the_catalog_and_the_map_names() {
    let object = super::super::OBJECT;
    if object.is_empty() {
        panic!("built with AYA_BUILD_SKIP=1: no eBPF object to check (the test command builds it)");
    }
    let obj = aya_obj::Object::parse(object).expect("parsing the embedded object");
    let mut in_object: Vec<&str> = obj.programs.keys().map(String::as_str).collect();
    let mut declared: Vec<&str> = programs().map(|(_, p)| p.name).collect();
    // The bench's floor (kernel/floor.rs), never attached by `sensor run`.
    declared.extend([p::FLOOR, p::FLOOR_SYS_ENTER, p::FLOOR_SYS_EXIT]);
    in_object.sort_unstable();
    declared.sort_unstable();
    assert_eq!(in_object, declared, "programs: object vs catalog");
    let mut maps: Vec<&str> = obj
        .maps
        .keys()
        .map(String::as_str)
        .filter(|m| !m.starts_with('.'))
        .collect();
    let mut names = sensor_common::maps::ALL.to_vec();
    maps.sort_unstable();
    names.sort_unstable();
    assert_eq!(maps, names, "maps: object vs sensor_common::maps::ALL");
}

/// docs/operations.md carries the table this catalog renders (`SENSOR_BLESS=1` rewrites it).
#[test]
fn the_docs_table_is_the_catalog() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md");
    let text = std::fs::read_to_string(path).expect("reading docs/operations.md");
    let (begin, end) = ("<!-- protections:begin -->\n", "<!-- protections:end -->");
    let a = text
        .find(begin)
        .expect("docs/operations.md: no protections:begin marker")
        + begin.len();
    let b = text[a..].find(end).expect("no protections:end marker") + a;
    let table = markdown_table();
    if std::env::var_os("SENSOR_BLESS").is_some() {
        std::fs::write(path, format!("{}{table}{}", &text[..a], &text[b..])).unwrap();
        return;
    }
    assert_eq!(
        &text[a..b],
        table,
        "docs/operations.md's protection table is stale: run with SENSOR_BLESS=1"
    );
}
