//! Fuzzes `codec::resp::fuzzing::command`: no panic, and its invariants hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = codec::resp::fuzzing::command(data) {
        panic!("{violation}");
    }
});
