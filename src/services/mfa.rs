//! Two-factor sign-in with TOTP (RFC 6238) and single-use recovery codes.

use std::time::Duration;

use totp_rs::{Builder, Totp};

use super::{
    AdminAccess, ServiceError,
    actor::Actor,
    audit::{AuditLog, Event},
    error::Conflict,
    lockout::LoginLock,
    outbox::Outbox,
    tokens::hash_token,
};
use crate::{
    domain::{self, EventKind, Origin, Secret, User, UserId},
    mail::Mail,
    storage::DynRepository,
};

/// Recovery codes in a set.
const RECOVERY_CODES: usize = 10;
/// Characters of a recovery code (without dashes): 16 of 32 symbols, 80 random bits, so a
/// SHA-256 of it is safe to store, as for the other random tokens.
const RECOVERY_CODE_CHARS: usize = 16;
const RECOVERY_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// Codes checked against one `mfa_token` before it is void.
pub(super) const MAX_CODE_ATTEMPTS: u32 = 5;
/// How long the second step of a login may take.
pub(super) const CHALLENGE_TTL: Duration = Duration::from_secs(300);

/// What enrolment hands the user once: the secret, and the same as a URL for a QR code.
#[derive(Debug, Clone)]
pub struct Enrolment {
    pub secret: String,
    pub otpauth_url: String,
}

/// How a login's second step was passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SecondFactor {
    Totp,
    RecoveryCode,
}

/// A second factor's code as [`MfaService::check`] accepted it, not yet spent.
#[derive(Debug)]
pub(super) enum Code {
    /// A TOTP code of this time step.
    Totp(u64),
    /// A recovery code, by its hash.
    Recovery(String),
}

impl SecondFactor {
    pub fn as_str(self) -> &'static str {
        match self {
            SecondFactor::Totp => "totp",
            SecondFactor::RecoveryCode => "recovery_code",
        }
    }
}

/// SHA-1, 6 digits, 30-second steps, one step of skew either way: what authenticator apps
/// expect. `account` labels the entry in the app.
fn totp(secret: &str, issuer: &str, account: &str) -> Result<Totp, ServiceError> {
    let secret = totp_rs::Secret::try_from_base32(secret).map_err(ServiceError::internal)?;
    Builder::new()
        .with_secret(secret)
        .with_issuer(Some(issuer))
        .with_account_name(account)
        .build()
        .map_err(ServiceError::internal)
}

/// The time step a code belongs to, if it is one of the window around now.
fn code_step(totp: &Totp, code: &str) -> Option<u64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp.check(code, domain::now().unix_timestamp().try_into().ok()?)
}

/// A fresh set of recovery codes (shown once) and their hashes (stored).
fn recovery_codes() -> (Vec<String>, Vec<String>) {
    (0..RECOVERY_CODES)
        .map(|_| {
            let chars: Vec<u8> = (0..RECOVERY_CODE_CHARS)
                .map(|_| RECOVERY_ALPHABET[rand::random_range(0..RECOVERY_ALPHABET.len())])
                .collect();
            let code = chars
                .chunks(4)
                .map(|group| String::from_utf8_lossy(group).into_owned())
                .collect::<Vec<_>>()
                .join("-");
            let hash = recovery_hash(&code);
            (code, hash)
        })
        .unzip()
}

/// Recovery codes are compared without dashes, spaces or case.
pub(super) fn recovery_hash(code: &str) -> String {
    let normal: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    hash_token(&normal)
}

#[derive(Clone)]
pub struct MfaService {
    repo: DynRepository,
    lock: LoginLock,
    audit: AuditLog,
    outbox: Outbox,
    issuer: String,
}

impl MfaService {
    pub(super) fn new(
        repo: DynRepository,
        lock: LoginLock,
        audit: AuditLog,
        outbox: Outbox,
        issuer: String,
    ) -> Self {
        Self {
            repo,
            lock,
            audit,
            outbox,
            issuer,
        }
    }

    /// Starts (or starts again) an enrolment: a new secret, pending until confirmed.
    pub async fn start(
        &self,
        actor: &Actor,
        current_password: Option<&str>,
    ) -> Result<Enrolment, ServiceError> {
        let user = actor.user();
        self.lock.confirm_current(actor, current_password).await?;
        if user.mfa_enabled {
            return Err(ServiceError::Conflict(Conflict::MfaOn));
        }
        let secret = totp_rs::Secret::generate().to_base32();
        let otpauth_url = totp(&secret, &self.issuer, user.email.as_str())?
            .to_url()
            .map_err(ServiceError::internal)?;
        if !self
            .repo
            .set_pending_totp(&user.id, &Secret::new(secret.clone()))
            .await?
        {
            return Err(ServiceError::Conflict(Conflict::MfaOn));
        }
        Ok(Enrolment {
            secret,
            otpauth_url,
        })
    }

    /// Confirms the pending secret with a current code: MFA is on, and the recovery codes
    /// come back, once.
    pub async fn confirm(&self, actor: &Actor, code: &str) -> Result<Vec<String>, ServiceError> {
        let user = actor.user();
        let state = self
            .repo
            .totp_state(&user.id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        if state.secret.is_some() {
            return Err(ServiceError::Conflict(Conflict::MfaOn));
        }
        let pending = state
            .pending
            .ok_or(ServiceError::Conflict(Conflict::NoEnrolment))?;
        let wrong = ServiceError::Invalid {
            field: "code",
            message: "is not the current code of the authenticator",
        };
        let totp = totp(pending.expose(), &self.issuer, user.email.as_str())?;
        let (codes, hashes) = recovery_codes();
        // The step is stored as used: the same code cannot then sign in.
        let enabled = match code_step(&totp, code) {
            Some(step) => {
                self.repo
                    .enable_totp(&user.id, &pending, step, &hashes, domain::now())
                    .await?
            }
            None => false,
        };
        if !enabled {
            self.failed(Some(actor.id()), user.id, "confirm", actor.origin())
                .await;
            return Err(wrong);
        }
        self.audit
            .record(
                Event::new(EventKind::MfaEnabled)
                    .by(Some(actor.id()))
                    .about(user.id),
                actor.origin(),
            )
            .await;
        self.outbox.notify_later(&user.email, Mail::MfaEnabled);
        Ok(codes)
    }

    /// A new set of recovery codes; the old set stops working.
    pub async fn regenerate_recovery_codes(
        &self,
        actor: &Actor,
        current_password: Option<&str>,
    ) -> Result<Vec<String>, ServiceError> {
        self.lock.confirm_current(actor, current_password).await?;
        let (codes, hashes) = recovery_codes();
        if self
            .repo
            .replace_recovery_codes(&actor.id(), &hashes)
            .await?
        {
            Ok(codes)
        } else {
            Err(ServiceError::Conflict(Conflict::MfaOff))
        }
    }

    /// The user switches MFA off.
    pub async fn disable(
        &self,
        actor: &Actor,
        current_password: Option<&str>,
    ) -> Result<(), ServiceError> {
        self.lock.confirm_current(actor, current_password).await?;
        if !self.switch_off(actor.user(), actor).await? {
            return Err(ServiceError::Conflict(Conflict::MfaOff));
        }
        Ok(())
    }

    /// An admin switches a user's MFA off (a lost device). Done when it is off already.
    pub async fn reset(&self, admin: AdminAccess<'_>, id: UserId) -> Result<(), ServiceError> {
        let user = self
            .repo
            .user_by_id(&id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        self.switch_off(&user, admin.on(id).actor()).await?;
        Ok(())
    }

    async fn switch_off(&self, user: &User, actor: &Actor) -> Result<bool, ServiceError> {
        let off = self.repo.disable_totp(&user.id, domain::now()).await?;
        if off {
            self.audit
                .record(
                    Event::new(EventKind::MfaDisabled)
                        .by(Some(actor.id()))
                        .about(user.id),
                    actor.origin(),
                )
                .await;
            self.outbox.notify_later(&user.email, Mail::MfaDisabled);
        }
        Ok(off)
    }

    /// Checks a login's second factor and spends nothing: a current TOTP code of a step
    /// after the last one accepted, or an unspent recovery code. [`MfaService::spend`] then
    /// takes it, so that a login that loses its `mfa_token` to another keeps its code.
    pub(super) async fn check(
        &self,
        user: &User,
        code: &str,
    ) -> Result<Option<Code>, ServiceError> {
        let state = self
            .repo
            .totp_state(&user.id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let Some(secret) = state.secret else {
            return Ok(None);
        };
        let totp = totp(secret.expose(), &self.issuer, user.email.as_str())?;
        if let Some(step) = code_step(&totp, code) {
            let fresh = state.last_step.is_none_or(|last| step > last);
            return Ok(fresh.then_some(Code::Totp(step)));
        }
        let hash = recovery_hash(code);
        let held = self.repo.holds_recovery_code(&user.id, &hash).await?;
        Ok(held.then_some(Code::Recovery(hash)))
    }

    /// Spends a code [`MfaService::check`] accepted, atomically (a TOTP code's step is
    /// claimed, a recovery code removed): `None` when another use of it came first.
    pub(super) async fn spend(
        &self,
        user_id: &UserId,
        code: Code,
    ) -> Result<Option<SecondFactor>, ServiceError> {
        Ok(match code {
            Code::Totp(step) => self
                .repo
                .claim_totp_step(user_id, step)
                .await?
                .then_some(SecondFactor::Totp),
            Code::Recovery(hash) => self
                .repo
                .use_recovery_code(user_id, &hash)
                .await?
                .then_some(SecondFactor::RecoveryCode),
        })
    }

    /// Records a wrong code.
    pub(super) async fn failed(
        &self,
        by: Option<UserId>,
        subject: UserId,
        stage: &str,
        origin: &Origin,
    ) {
        self.audit
            .record(
                Event::new(EventKind::MfaFailed)
                    .by(by)
                    .about(subject)
                    .detail("stage", stage),
                origin,
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_are_ten_distinct_80_bit_codes_compared_loosely() {
        let (codes, hashes) = recovery_codes();
        assert_eq!(codes.len(), 10);
        let distinct: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(distinct.len(), 10);
        for (code, hash) in codes.iter().zip(&hashes) {
            assert_eq!(code.len(), 19, "{code}");
            assert_eq!(&recovery_hash(code), hash);
            assert_eq!(&recovery_hash(&code.to_uppercase().replace('-', " ")), hash);
            assert!(!hash.contains(code.as_str()));
        }
    }

    #[test]
    fn codes_of_the_neighbouring_steps_are_accepted_and_others_not() {
        let secret = totp_rs::Secret::generate().to_base32();
        let totp = totp(&secret, "user-service", "mario@example.com").unwrap();
        let now = domain::now().unix_timestamp() as u64;
        let step = now / 30;
        for offset in [-1i64, 0, 1] {
            let at = (step as i64 + offset) as u64 * 30;
            let code = totp.generate(at).to_string();
            assert_eq!(code_step(&totp, &code), Some(at / 30), "offset {offset}");
        }
        let far = totp.generate((step - 3) * 30).to_string();
        if far != totp.generate(now).to_string() {
            assert_eq!(code_step(&totp, &far), None);
        }
        assert_eq!(code_step(&totp, "12345"), None);
        assert_eq!(code_step(&totp, "abcdef"), None);
    }

    #[test]
    fn the_url_names_issuer_and_account() {
        let secret = totp_rs::Secret::generate().to_base32();
        let url = totp(&secret, "Acme Corp", "mario@example.com")
            .unwrap()
            .to_url()
            .unwrap();
        assert!(
            url.starts_with("otpauth://totp/Acme%20Corp:mario%40example.com?secret="),
            "{url}"
        );
        assert!(url.contains(&format!("secret={secret}")), "{url}");
        assert!(url.contains("issuer=Acme%20Corp"), "{url}");
    }
}
