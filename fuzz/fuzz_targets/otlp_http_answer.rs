//! Fuzzes `codec::otlp::fuzzing::answer_head`: the OTLP/HTTP answer head parser never panics and
//! never reuses a connection after a body of unknown length.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = codec::otlp::fuzzing::answer_head(data) {
        panic!("{violation}");
    }
});
