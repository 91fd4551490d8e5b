//! The use cases behind the routes: authorisation and business rules, no HTTP.

mod accounts;
mod users;

pub use accounts::{AccountService, LoginId, TokenPair};
pub use users::{CreateUser, UserChanges, UserService, require_admin, require_self_or_admin};
