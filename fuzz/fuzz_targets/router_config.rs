//! Fuzzes the router's `config` invariants (`router_invariants.rs`): no panic, and they hold.
#![no_main]

#[path = "router_invariants.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(violation) = invariants::config(data) {
        panic!("{violation}");
    }
});
