//! Mail the services send after their answer: verification links and security notices,
//! each kind throttled per address when `MAIL_THROTTLE_SECS` says so.

use std::time::Duration;

use url::Url;

use super::{ServiceError, tokens::OpaqueToken};
use crate::{
    domain::{self, Email, User},
    mail::{Mail, Mailer},
    metrics,
    storage::{DynRepository, StorageError, VerificationTokenRecord},
};

/// How verification links are made.
#[derive(Debug, Clone)]
pub struct VerificationSettings {
    /// The page a verification link opens; the token is added as `?token=`.
    pub url: Url,
    pub token_ttl: Duration,
}

#[derive(Clone)]
pub(super) struct Outbox {
    repo: DynRepository,
    mailer: Mailer,
    verification: VerificationSettings,
    /// At most one mail of a kind (reset, verification) per address per this long.
    throttle: Option<Duration>,
}

impl Outbox {
    pub fn new(
        repo: DynRepository,
        mailer: Mailer,
        verification: VerificationSettings,
        throttle: Option<Duration>,
    ) -> Self {
        Self {
            repo,
            mailer,
            verification,
            throttle,
        }
    }

    /// Whether a mail of `kind` may go to `address` now; if so, it counts as sent. A
    /// throttled request sends nothing and changes nothing, and its caller's answer is the
    /// same either way, so the throttle reveals nothing.
    pub async fn may_send(&self, kind: &str, address: &Email) -> Result<bool, ServiceError> {
        match self.throttle {
            None => Ok(true),
            Some(window) => Ok(self
                .repo
                .claim_mail(kind, address, domain::now(), window)
                .await?),
        }
    }

    /// Mails `user` a fresh verification link for their address (voiding earlier ones),
    /// unless the throttle holds it back.
    pub async fn send_verification(&self, user: &User) -> Result<(), ServiceError> {
        if !self.may_send("verification", &user.email).await? {
            return Ok(());
        }
        let token = OpaqueToken::generate();
        let now = domain::now();
        let stored = self
            .repo
            .insert_verification_token(VerificationTokenRecord {
                token_hash: token.hash,
                user_id: user.id,
                email: user.email.clone(),
                created_at: now,
                expires_at: now + self.verification.token_ttl,
            })
            .await;
        match stored {
            // Removed since: nobody to mail.
            Err(StorageError::UserGone) => return Ok(()),
            stored => stored?,
        }
        let mut link = self.verification.url.clone();
        link.query_pairs_mut().append_pair("token", &token.secret);
        self.mailer
            .send(&user.email, Mail::VerificationLink(link.as_str()))
            .await;
        Ok(())
    }

    /// [`Outbox::send_verification`] after the answer.
    pub fn verify_later(&self, user: &User) {
        let (outbox, user) = (self.clone(), user.clone());
        background("email_verification", async move {
            outbox.send_verification(&user).await
        });
    }

    /// A security notice to `to`, after the answer.
    pub fn notify_later(&self, to: &Email, notice: Mail<'static>) {
        let (mailer, to) = (self.mailer.clone(), to.clone());
        background("security_notice", async move {
            mailer.send(&to, notice).await;
            Ok(())
        });
    }
}

/// Runs `work` after the answer; a failure is logged and counted, never shown.
pub(super) fn background(
    task: &'static str,
    work: impl Future<Output = Result<(), ServiceError>> + Send + 'static,
) {
    tokio::spawn(tracing::Instrument::in_current_span(async move {
        if let Err(e) = work.await {
            if let Some(kind) = e.database_failure() {
                metrics::record_database_error(kind);
            }
            metrics::record_background_failure(task);
            tracing::error!(task, error = format!("{e:#}"), "background work failed");
        }
    }));
}
