//! The service registry and governance: the second control service, on the configuration center's core.
//!
//! It shares everything with the configuration center: the store (its records are one more [`Rec`] kind,
//! `registry`, committed in the same transactions with the same revision), the users, tokens and grants
//! (a service belongs to an application; a grant on `(app, SERVICE)` or `(app, *)` gives its level), the
//! audit log (`Tx::audit`), and the push channels (`Center::subscribe` keyed by `(env, "@registry/SERVICE")`,
//! a name no namespace can take since `@` is not a name character).
//!
//! - [`model`]: services, instances, governance rule sets, and the records they are stored as.
//! - [`ops`]: the changes, as pure code on a [`crate::ops::Tx`] (permission check, validation, audit).
//! - [`lease`]: heartbeats held in memory on the node that owns the instance; the store is written only when
//!   an instance turns healthy or unhealthy, or changes owner.
//! - [`rules`]: the governance rule model (rate limits, circuit breakers, access lists, version routing), its
//!   validation and its evaluation (shared by the service and the client library).
//! - [`govern`]: enforcing rules in a caller (rate limits, concurrency, circuit breakers).
//! - [`check`]: active health checks run by the center (TCP, HTTP, Redis PING, MySQL greeting), feeding
//!   the same leases as heartbeats.
//! - [`tokens`]: cluster-wide rate limits: the token service of a node and its client (leases of tokens,
//!   local fallback).
//! - [`calls`]: per-version call statistics reported by clients and proxies (in memory on a node).
//! - [`client`]: registration with heartbeats, discovery with push and a snapshot file.
//! - [`cli`]: `furrow ctl registry` and `furrow ctl rules`.
//! - [`api`]: the HTTP routes under `/v1/registry`.
//!
//! [`Rec`]: crate::state::Rec

pub mod api;
pub mod calls;
pub mod check;
pub mod cli;
pub mod client;
pub mod govern;
pub mod lease;
pub mod model;
pub mod ops;
pub mod rules;
pub mod tokens;

pub use model::{RegRec, RegistryState};

/// The wake-up channel name of a service's watchers (see [`crate::center::Center::subscribe`]).
pub fn channel(service: &str) -> String {
    format!("@registry/{service}")
}
