//! Scorekeeper request bodies (events, new games, batches) as JSON and
//! MessagePack: see `scorehub::fuzzing::event_body` for what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    scorehub::fuzzing::event_body(data);
});
