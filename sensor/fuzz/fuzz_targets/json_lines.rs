//! JSON lines as `sensor tail --file`, `sensor advise` and `sensor policy test` read them (an
//! export file, `sensor tail -o json`, `--stdout-events`), line by line. A line that parses
//! renders to one line that parses to the same event, and renders the same again; the other
//! renderings of a read event (compact, summary, OCSF, CEF) do not panic and OCSF is an object;
//! the filter key the server reads from the event's bytes is the event's key (so replay and an
//! offline filter agree).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use sensor::{
    event::{
        compact::{to_compact, to_summary},
        json::{from_json, to_json},
        key::Key,
    },
    sinks::export::{cef::to_cef, ocsf::to_ocsf},
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let Ok(event) = from_json(line) else {
            continue;
        };
        let rendered = to_json(&event);
        assert!(!rendered.contains('\n'), "one event, one line: {rendered}");
        let back = from_json(&rendered).unwrap_or_else(|e| panic!("{rendered}: {e}"));
        assert_eq!(back, event, "{rendered}");
        assert_eq!(to_json(&back), rendered);
        let _ = to_compact(&event, true);
        let _ = to_summary(&event);
        let _ = to_cef(&event);
        assert!(to_ocsf(&event).is_object());
        let bytes = event.encode_to_vec();
        assert_eq!(Key::scan(&bytes, true), Some(Key::of(&event)));
    }
});
