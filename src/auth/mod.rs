//! Password hashing, tokens, and the extractor that turns a bearer token into a user.

mod extractor;
mod password;
mod tokens;

pub use extractor::AuthUser;
pub use password::PasswordHasher;
pub use tokens::{AccessClaims, OpaqueToken, TokenService, hash_token};
