//! The event log read at start-up, after a valid header and as a whole
//! file: see `scorehub::fuzzing::log_replay` for what is checked. Set
//! `TMPDIR` to a tmpfs (e.g. `/dev/shm`): every input is written to disk.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    scorehub::fuzzing::log_replay(data);
});
