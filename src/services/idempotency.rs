//! Idempotency keys of the operations that create (`POST /api/auth/register`, `POST
//! /api/users`): the same key again, from the same caller and with the same request, gets
//! the first answer again instead of a second account.
//!
//! The rules:
//! - a key is 1 to 255 visible ASCII characters (`!` to `~`);
//! - it belongs to a scope: anyone's for registration, one admin's for user creation, so
//!   that two admins never see each other's answers;
//! - a request is known by its fingerprint, the SHA-256 of its method, path and body bytes:
//!   the same key with another fingerprint is refused (422), whatever became of the first;
//! - only successful (2xx) answers are stored and replayed. A first request that fails (a
//!   validation error, a taken email, a database failure) frees its key, so that the client
//!   may retry, with the same body or a corrected one, under the same key;
//! - a stored answer is replayed for 24 hours;
//! - a claim whose request has not finished after 60 seconds counts as abandoned (its
//!   process died between creating and storing the answer) and may be claimed again.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{AdminAccess, ServiceError};
use crate::{
    domain::now,
    storage::{Claim, DynRepository, StoredAnswer},
};

/// How long an answer is replayed.
pub const KEY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a claim may stay in flight before it counts as abandoned.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(60);
/// The longest key.
pub const MAX_KEY_LEN: usize = 255;

/// A well-formed `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The header that carries it.
    pub const HEADER: &'static str = "Idempotency-Key";

    /// 1 to [`MAX_KEY_LEN`] visible ASCII characters; else a 400 naming the header.
    pub fn parse(raw: &[u8]) -> Result<Self, ServiceError> {
        let visible = |b: &u8| (b'!'..=b'~').contains(b);
        if raw.is_empty() || raw.len() > MAX_KEY_LEN || !raw.iter().all(visible) {
            return Err(ServiceError::BadHeader {
                header: Self::HEADER,
                message: "must be 1 to 255 visible ASCII characters",
            });
        }
        // All ASCII, so valid UTF-8.
        Ok(Self(String::from_utf8_lossy(raw).into_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whose keys a key is among.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyScope(String);

impl IdempotencyScope {
    /// Registration: anyone's, since no one is signed in.
    pub fn register() -> Self {
        Self("register".to_owned())
    }

    /// User creation by one admin.
    pub fn users_created_by(admin: AdminAccess<'_>) -> Self {
        Self(format!("users:{}", admin.id()))
    }
}

/// What starting a request under a key gave.
pub enum Begun {
    /// The key is held for this request: run it, then [`Held::finish`].
    New(Held),
    /// The key's first request succeeded with this answer: give it again.
    Replay(StoredAnswer),
}

#[derive(Clone)]
pub struct Idempotency {
    repo: DynRepository,
}

impl Idempotency {
    pub fn new(repo: DynRepository) -> Self {
        Self { repo }
    }

    /// Claims `key` in `scope` for the request `method path body`: held, replayed, or refused
    /// ([`ServiceError::IdempotencyKeyReused`] for another request,
    /// [`ServiceError::IdempotencyKeyInFlight`] while the first is running).
    pub async fn begin(
        &self,
        scope: IdempotencyScope,
        key: &IdempotencyKey,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Begun, ServiceError> {
        let fingerprint = fingerprint(method, path, body);
        let claim = self
            .repo
            .claim_idempotency_key(
                &scope.0,
                key.as_str(),
                &fingerprint,
                now(),
                KEY_TTL,
                ABANDONED_AFTER,
            )
            .await?;
        match claim {
            Claim::New => Ok(Begun::New(Held {
                repo: Some(self.repo.clone()),
                scope: scope.0,
                key: key.0.clone(),
            })),
            Claim::Replay(answer) => Ok(Begun::Replay(answer)),
            Claim::Mismatch => Err(ServiceError::IdempotencyKeyReused),
            Claim::InFlight => Err(ServiceError::IdempotencyKeyInFlight),
        }
    }
}

/// The SHA-256 of the method, the path and the body bytes, hex.
fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(method.as_bytes());
    hash.update(b"\n");
    hash.update(path.as_bytes());
    hash.update(b"\n");
    hash.update(body);
    hex::encode(hash.finalize())
}

/// A key held for a request in flight. Dropped unfinished (the request was cancelled, the
/// client went away), it frees the key in the background.
pub struct Held {
    /// `None` once finished.
    repo: Option<DynRepository>,
    scope: String,
    key: String,
}

impl Held {
    /// Ends the request: a 2xx answer is stored, to be replayed; any other frees the key.
    /// A failure to store is logged, not returned: the request itself is done, and its key
    /// frees itself after [`ABANDONED_AFTER`].
    pub async fn finish(mut self, answer: &StoredAnswer) {
        let Some(repo) = self.repo.take() else {
            return;
        };
        let result = if (200..300).contains(&answer.status) {
            repo.complete_idempotency_key(&self.scope, &self.key, answer)
                .await
        } else {
            repo.release_idempotency_key(&self.scope, &self.key).await
        };
        if let Err(error) = result {
            tracing::warn!(
                error = format!("{error:#}"),
                "could not finish an idempotency key"
            );
        }
    }
}

impl Held {
    /// Frees the key: the request failed, and a retry under the same key runs again.
    pub async fn release(mut self) {
        let Some(repo) = self.repo.take() else {
            return;
        };
        if let Err(error) = repo.release_idempotency_key(&self.scope, &self.key).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "could not release an idempotency key"
            );
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(repo) = self.repo.take() else {
            return;
        };
        let (scope, key) = (
            std::mem::take(&mut self.scope),
            std::mem::take(&mut self.key),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = repo.release_idempotency_key(&scope, &key).await {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "could not release an idempotency key"
                    );
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_1_to_255_visible_ascii_characters() {
        for good in ["a", "!", "~", &"k".repeat(255), "3f1c-4e7a_9b.x:y/z"] {
            assert!(IdempotencyKey::parse(good.as_bytes()).is_ok(), "{good}");
        }
        for bad in [
            "".as_bytes(),
            "k".repeat(256).as_bytes(),
            b"with space",
            b"tab\t",
            b"\x7f",
            "clé".as_bytes(),
        ] {
            assert!(
                matches!(
                    IdempotencyKey::parse(bad),
                    Err(ServiceError::BadHeader {
                        header: "Idempotency-Key",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_fingerprint_covers_method_path_and_body() {
        let base = fingerprint("POST", "/api/users", b"{}");
        assert_eq!(base, fingerprint("POST", "/api/users", b"{}"));
        assert_ne!(base, fingerprint("PUT", "/api/users", b"{}"));
        assert_ne!(base, fingerprint("POST", "/api/auth/register", b"{}"));
        assert_ne!(base, fingerprint("POST", "/api/users", b"{ }"));
    }
}
