//! Fuzzes vnetd's control-protocol decoder: framing and request decoding
//! must never panic, and every decoded request must encode back to an equal
//! one. Run: `cargo +nightly fuzz run control_decoder` (in `fuzz/`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vnet::ctl::proto;

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    while let Ok(frame) = proto::read_frame(&mut r) {
        if let Ok(req) = proto::decode_request(&frame) {
            let again = serde_json::to_vec(&req).expect("requests encode");
            assert_eq!(proto::decode_request(&again).ok(), Some(req));
        }
    }
    let _ = proto::decode_request(data);
});
