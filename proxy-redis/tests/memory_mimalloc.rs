//! Item 19 with mimalloc, the release binary's allocator (the executors call `mi_collect`).

mod common;
mod reclaim;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[test]
fn idle_connections_give_memory_back_mimalloc() {
    reclaim::idle_connections_give_memory_back();
}

#[test]
fn idle_clients_within_budget_mimalloc() {
    reclaim::idle_clients_within_budget();
}
