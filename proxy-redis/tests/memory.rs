//! Item 19 with the system allocator (glibc here: the executors call `malloc_trim`).

mod common;
mod reclaim;

#[test]
fn idle_connections_give_memory_back_system_allocator() {
    reclaim::idle_connections_give_memory_back();
}

#[test]
fn idle_clients_within_budget_system_allocator() {
    reclaim::idle_clients_within_budget();
}
