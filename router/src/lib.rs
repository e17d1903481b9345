//! Furrow decisions: the TOML config model and its validation, Redis key routing, SQL analysis and plans.
//!
//! Pure code: no sockets, no runtime, no clocks. Every function here is a function of its inputs, so the
//! whole routing layer is testable without a server.

pub mod config;
pub mod redis;
pub mod sql;
