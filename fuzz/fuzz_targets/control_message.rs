//! Fans' control messages as WebSocket text and binary: see
//! `scorehub::fuzzing::control_message` for what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    scorehub::fuzzing::control_message(data);
});
