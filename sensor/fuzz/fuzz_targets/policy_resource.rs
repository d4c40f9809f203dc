//! Policy resources (`SensorClusterPolicy`, `SensorPolicy`) as the API server returns them
//! (`sensor::policy::watch::parse_object`): any JSON object, as either kind. Refusals name the
//! resource first in every error; no object is accepted as both kinds; an accepted policy is
//! added to the built-in default set or refused with a reason, and can then be deleted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor::policy::{
    from_default, states,
    watch::{Kind, parse_object},
};

fuzz_target!(|data: &[u8]| {
    let Ok(object) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let mut accepted = 0;
    for kind in [Kind::Cluster, Kind::Namespaced] {
        let (key, change) = parse_object(kind, &object);
        match change {
            Ok(None) => panic!("{key}: an object parsed as a deletion"),
            Err(errors) => {
                assert!(!errors.is_empty(), "{key}: refused without an error");
                for e in &errors {
                    assert!(e.starts_with(&format!("{key}:")), "{key}: error {e:?}");
                }
            }
            Ok(Some(policy)) => {
                accepted += 1;
                let name = policy.name.clone();
                match from_default(None).with_resource(&key, Some(policy)) {
                    Err(reason) => assert!(!reason.is_empty()),
                    Ok(set) => {
                        assert!(
                            states(&set).iter().any(|s| s.name == name),
                            "{name} not in force"
                        );
                        let without = set.with_resource(&key, None).expect("a deletion applies");
                        assert!(!states(&without).iter().any(|s| s.source == key));
                    }
                }
            }
        }
    }
    assert!(accepted <= 1, "accepted as both kinds");
});
