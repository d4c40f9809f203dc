//! Any input to the policy parser: it must not panic, every error must be located inside the
//! file (1-based line and column within the text) and listed in position order, and a policy it
//! accepts must compile.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match sensor_policy::parse("fuzz.yaml", text) {
        Ok(policy) => {
            let compiled = sensor_policy::compile(&policy);
            assert_eq!(compiled.rule_names.len(), policy.rules.len());
        }
        Err(errors) => {
            assert!(
                !errors.is_empty(),
                "a failed parse reports at least one error"
            );
            let lines = text.split('\n').count().max(1);
            for e in &errors {
                assert_eq!(e.file, "fuzz.yaml");
                assert!(
                    (1..=lines + 1).contains(&e.line) && e.column >= 1,
                    "error outside the file ({lines} lines): {e}"
                );
                assert!(!e.message.is_empty());
            }
            assert!(
                errors
                    .windows(2)
                    .all(|w| (w[0].line, w[0].column) <= (w[1].line, w[1].column)),
                "errors out of order: {errors:?}"
            );
        }
    }
});
