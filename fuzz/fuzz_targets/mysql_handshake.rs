//! Fuzzes `codec::mysql::fuzzing::handshake`: no panic, and its round-trip invariants hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = codec::mysql::fuzzing::handshake(data) {
        panic!("{violation}");
    }
});
