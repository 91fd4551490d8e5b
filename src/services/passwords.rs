use anyhow::Context;

use super::{ServiceError, error::Refusal};
use crate::{
    domain::{Password, User},
    telemetry::spawn_blocking_with_tracing,
};

/// bcrypt at the configured cost. Hashing takes hundreds of milliseconds at cost 12, so it
/// runs on the blocking pool: on an async worker it would stall every request behind it.
#[derive(Clone)]
pub struct PasswordHasher {
    cost: u32,
    /// Verified against when the user is unknown, so that a failed login takes as long
    /// whether or not the account exists.
    dummy_hash: String,
}

impl PasswordHasher {
    pub async fn new(cost: u32) -> anyhow::Result<Self> {
        let dummy_hash = spawn_blocking_with_tracing(move || bcrypt::hash("dummy password", cost))
            .await?
            .context("bcrypt refused the configured cost")?;
        Ok(Self { cost, dummy_hash })
    }

    pub async fn hash(&self, password: &Password) -> anyhow::Result<String> {
        let password = password.clone();
        let cost = self.cost;
        // `Password` is at most 72 bytes, all of which bcrypt reads.
        Ok(spawn_blocking_with_tracing(move || bcrypt::hash(password.expose(), cost)).await??)
    }

    /// Checks `password` against `hash`; a malformed stored hash simply does not match.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> anyhow::Result<bool> {
        let password = password.to_owned();
        let (hash, real) = match hash {
            Some(hash) => (hash.to_owned(), true),
            None => (self.dummy_hash.clone(), false),
        };
        // bcrypt reads 72 bytes: a longer attempt that starts with the password would match.
        // It never may; it is still checked, so that refusing it takes the same time.
        let too_long = password.len() > Password::MAX_BYTES;
        let matched =
            spawn_blocking_with_tracing(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await?;
        Ok(real && matched && !too_long)
    }

    /// The user's own current password, as a change of a credential asks for it: missing or
    /// wrong is [`Refusal::CurrentPasswordWrong`].
    pub async fn confirm_current(
        &self,
        user: &User,
        given: Option<&str>,
    ) -> Result<(), ServiceError> {
        let given = given.unwrap_or_default();
        match self.verify(given, Some(&user.password_hash)).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ServiceError::Forbidden(Refusal::CurrentPasswordWrong)),
            Err(e) => Err(ServiceError::Internal(e)),
        }
    }

    /// True when `hash` was made with a lower cost than configured now.
    pub fn needs_rehash(&self, hash: &str) -> bool {
        hash_cost(hash).is_some_and(|cost| cost < self.cost)
    }
}

/// The cost field of a `$2b$12$...` hash.
fn hash_cost(hash: &str) -> Option<u32> {
    hash.split('$').nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_report_their_cost() {
        let hasher = PasswordHasher::new(4).await.unwrap();
        let password = Password::parse("correct horse").unwrap();
        let hash = hasher.hash(&password).await.unwrap();
        assert!(hasher.verify("correct horse", Some(&hash)).await.unwrap());
        assert!(!hasher.verify("wrong horse!", Some(&hash)).await.unwrap());
        assert!(!hasher.verify("correct horse", None).await.unwrap());
        assert!(
            !hasher
                .verify("correct horse", Some("not a hash"))
                .await
                .unwrap()
        );
        // bcrypt reads 72 bytes; a longer attempt that starts with the password is no match.
        let long = Password::parse(&"x".repeat(72)).unwrap();
        let long_hash = hasher.hash(&long).await.unwrap();
        assert!(
            hasher
                .verify(&"x".repeat(72), Some(&long_hash))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify(&"x".repeat(73), Some(&long_hash))
                .await
                .unwrap()
        );
        assert_eq!(hash_cost(&hash), Some(4));
        assert!(!hasher.needs_rehash(&hash));
        let stronger = PasswordHasher::new(5).await.unwrap();
        assert!(stronger.needs_rehash(&hash));
    }
}
