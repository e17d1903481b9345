//! Fuzzes `codec::resp::fuzzing::reply_scanner`: no panic, and its invariants hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = codec::resp::fuzzing::reply_scanner(data) {
        panic!("{violation}");
    }
});
