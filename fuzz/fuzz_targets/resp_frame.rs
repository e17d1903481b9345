//! Fuzzes `codec::resp::fuzzing::frame`: no panic, and its invariants hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = codec::resp::fuzzing::frame(data) {
        panic!("{violation}");
    }
});
