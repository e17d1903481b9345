//! Fuzzes `codec::mysql::fuzzing::packets`: no panic, and its round-trip invariants hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = codec::mysql::fuzzing::packets(data) {
        panic!("{violation}");
    }
});
