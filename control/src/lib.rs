//! Furrow control services: the configuration center (HTTP API, store, push) and its client library.

pub mod document;
pub mod error;
pub mod model;
pub mod rules;
pub mod schema;
pub mod secret;

pub use error::{ControlError, ErrorCode};
pub mod api;
pub mod auth;
pub mod center;
pub mod cli;
pub mod client;
pub mod http;
pub mod jobs;
pub mod mysql;
pub mod mysql_store;
pub mod ops;
pub mod process;
pub mod registry;
pub mod resolve;
pub mod server;
pub mod settings;
pub mod state;
pub mod store;
pub mod trace;
pub mod web;
