//! user-service: user management and authentication over HTTP, on MongoDB or embedded SQLite.
//!
//! Layers, each using only those above it in this list: `domain` (valid-by-construction
//! types), `storage` (the repository and its backends), `services` (every rule), `routes`
//! and `middleware` (HTTP), `startup` (wiring). `config`, `mail`, `metrics` and `telemetry`
//! are leaves that the layers share; none of them knows HTTP.

pub mod config;
pub mod domain;
pub mod mail;
pub mod metrics;
pub mod middleware;
pub mod routes;
pub mod serde_fields;
pub mod services;
pub mod startup;
pub mod storage;
pub mod telemetry;
