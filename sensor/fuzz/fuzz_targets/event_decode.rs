//! Kernel ring records (`sensor::event::decode`). A record shorter than its header is refused
//! as `Short`; one that decodes is exactly as long as its size field says (padding after it is
//! ignored, and one byte less is refused). What decodes goes through the pipeline's encoding:
//! the bytes are a `sensor.v1.Event` (prost re-encodes them byte for byte), the filter key read
//! from the bytes is the key of the event, and its JSON line (what `sensor tail --file` and
//! `sensor advise` read) reads back as the same event.
#![no_main]

use std::{
    mem::size_of,
    sync::{Arc, LazyLock},
};

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use sensor::{
    event::{
        decode::{DecodeError, decode},
        encode::Draft,
        json::{from_json, to_json},
        key::Key,
        proto::Origin,
    },
    policy::{ActiveRules, from_default},
};
use sensor_common::EventHeader;
use sensor_proto::v1 as pb;

static RULES: LazyLock<Arc<ActiveRules>> = LazyLock::new(|| Arc::new(from_default(None)));

fuzz_target!(|data: &[u8]| {
    let header = size_of::<EventHeader>();
    let event = match decode(data) {
        Err(DecodeError::Short { len }) => {
            assert!(
                len == data.len() && len < header,
                "Short for {} bytes",
                data.len()
            );
            return;
        }
        Err(e) => {
            assert!(
                data.len() >= header,
                "{e} for a record shorter than a header"
            );
            return;
        }
        Ok(event) => event,
    };
    let size = u32::from_le_bytes(data[4..8].try_into().unwrap()) as usize;
    assert!(
        (header..=data.len()).contains(&size),
        "accepted {} bytes with size field {size}",
        data.len()
    );
    assert_eq!(
        decode(&data[..size]).as_ref(),
        Ok(&event),
        "padding changed the event"
    );
    assert!(
        decode(&data[..size - 1]).is_err(),
        "a record one byte short was accepted"
    );

    let draft = Draft {
        event,
        rules: Arc::clone(&RULES),
        time_unix_ns: 1_764_000_000_000_000_000,
        process: None,
        ancestors: Vec::new(),
        cgroup: None,
        pod: None,
        enrichment: pb::Enrichment::Partial,
    };
    let encoded = draft.encode(&Origin::new("node", "cluster"));
    let message =
        pb::Event::decode(encoded.payload.as_ref()).expect("the encoding is a sensor.v1.Event");
    assert_eq!(
        message.encode_to_vec(),
        encoded.payload.as_ref(),
        "not prost's encoding"
    );
    assert_eq!(Key::of(&message), encoded.key);
    assert_eq!(
        Key::scan(&encoded.payload, true).as_ref(),
        Some(&encoded.key)
    );
    let line = to_json(&message);
    assert_eq!(from_json(&line).as_ref(), Ok(&message), "{line}");
});
