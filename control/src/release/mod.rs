//! Release management: staged, gated, canaried releases — the fourth control service, on the same core.
//!
//! It shares everything with the configuration center and the registry: the store (its records are one more
//! [`Rec`] kind, `rel`, committed in the same transactions), the users, tokens and grants (a project belongs
//! to an application; grants on `(app, release:PROJECT)` and `(app, release:PROJECT:STAGE)` give levels per
//! project and per environment), the audit log (`Tx::audit` for every action, engine steps included), the
//! push channels (an agent's long-poll waits on `Center::subscribe("@release", HOST)`), and the server's
//! ticker, which advances the rollouts.
//!
//! - [`model`]: projects and their pipelines (stages with hosts, approvals, windows, batches, canary),
//!   versions and their build gate, deployments, stage states, agents.
//! - [`window`]: release windows (cron-like allowed times, freezes).
//! - [`ops`]: the changes, as pure code on a [`crate::ops::Tx`] (permission check, validation, audit),
//!   dependency order and cycle detection, batch planning.
//! - [`engine`]: the rollout state machine advanced by the ticker; webhooks; in-memory samples.
//! - [`canary`]: the statistics of canary analysis (two-proportion z-test, Mann–Whitney U).
//! - [`gate`]: the build gate's runner (local for now, behind a trait the jobs worker can implement) and
//!   the code diff.
//! - [`agent`]: the `furrow agent` role: runs hooks on a host, reports, probes.
//! - [`api`]: the HTTP routes under `/v1/release`; [`cli`]: `furrow ctl release`.
//!
//! See `docs/release.md`.
//!
//! [`Rec`]: crate::state::Rec

pub mod agent;
pub mod api;
pub mod canary;
pub mod cli;
pub mod engine;
pub mod gate;
pub mod jobgate;
pub mod model;
pub mod ops;
pub mod window;

pub use engine::Runtime;
pub use model::{RelRec, ReleaseState};
