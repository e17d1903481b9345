//! Fuzzes `codec::otlp::fuzzing::export`: no panic, and decode∘encode is a fixed point.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = codec::otlp::fuzzing::export(data) {
        panic!("{violation}");
    }
});
