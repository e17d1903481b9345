//! Item 19 with mimalloc, the release binary's allocator (the executors call `mi_collect`).

mod common;
mod reclaim;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// As the binary: lazy arena commit set before the first allocation.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static TUNE_ALLOCATOR: extern "C" fn() = runtime::memory::tune_allocator;

#[test]
fn idle_connections_give_memory_back_mimalloc() {
    reclaim::idle_connections_give_memory_back();
}

#[test]
fn idle_clients_within_budget_mimalloc() {
    reclaim::idle_clients_within_budget();
}
