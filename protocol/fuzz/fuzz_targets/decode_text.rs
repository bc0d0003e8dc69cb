//! Fuzz target: any bytes, as text, through every wire decoder (see `check_decoders`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Valid UTF-8 passes through unchanged, as a WebSocket text frame would; other bytes still
    // make useful text once their bad sequences become U+FFFD.
    wschat_protocol_fuzz::check_decoders(&String::from_utf8_lossy(data));
});
