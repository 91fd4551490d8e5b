//! user-service: user management and authentication over HTTP, on MongoDB or embedded SQLite.

pub mod auth;
pub mod client_ip;
pub mod config;
pub mod domain;
pub mod error;
pub mod mail;
pub mod metrics;
pub mod rate_limit;
pub mod routes;
pub mod serde_fields;
pub mod services;
pub mod startup;
pub mod state;
pub mod storage;
pub mod telemetry;
