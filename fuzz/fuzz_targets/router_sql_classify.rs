//! Fuzzes the router's `sql_classify` invariants (`router_invariants.rs`): no panic, and they hold.
#![no_main]

#[path = "router_invariants.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = invariants::sql_classify(data) {
        panic!("{violation}");
    }
});
