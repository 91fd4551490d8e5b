//! An in-memory repository: the test double that the services' unit tests run on. The
//! conformance suite holds it to the same behaviour as the real backends.

use std::{
    cmp::Ordering,
    collections::{HashMap, HashSet},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering as AtomicOrdering},
    },
};

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{
    Claim, Imported, LoginAttempts, OneTimeTokenRecord, RefreshTokenRecord, RefreshTokenUse,
    Repository, StorageError, StorageResult, StoredAnswer, StoredAttempts, TotpState, UniqueField,
    VerificationTokenRecord,
};
use crate::domain::{
    AuditEvent, AuditFilter, AuditQuery, Email, ListQuery, Page, Secret, Session, SessionId,
    SortField, SortKey, SortOrder, User, UserCursor, UserFilter, UserId, UserPatch, Username,
    truncate_to_millis,
};

struct StoredRefresh {
    record: RefreshTokenRecord,
    spent: bool,
}

struct StoredReset {
    record: OneTimeTokenRecord,
    used: bool,
}

/// Marks the user's unused reset tokens used; how many.
fn void_reset_tokens(data: &mut Data, user_id: UserId) -> u64 {
    let mut voided = 0;
    for token in data.reset.values_mut() {
        if token.record.user_id == user_id && !token.used {
            token.used = true;
            voided += 1;
        }
    }
    voided
}

#[derive(Default)]
struct StoredTotp {
    state: TotpState,
    recovery: HashSet<String>,
}

#[derive(Default)]
struct Data {
    users: HashMap<UserId, User>,
    refresh: HashMap<String, StoredRefresh>,
    sessions: HashMap<SessionId, Session>,
    /// The sessions that have ended.
    ended_sessions: HashSet<SessionId>,
    totp: HashMap<UserId, StoredTotp>,
    /// Challenges with their attempts so far and whether they were spent.
    challenges: HashMap<String, (OneTimeTokenRecord, u32, bool)>,
    audit: Vec<AuditEvent>,
    reset: HashMap<String, StoredReset>,
    login_attempts: HashMap<String, StoredAttempts>,
    verification: HashMap<String, (VerificationTokenRecord, bool)>,
    /// When a mail of a kind last went to an address.
    mail_log: HashMap<(String, String), OffsetDateTime>,
    /// Idempotency keys by (scope, key).
    idempotency: HashMap<(String, String), StoredIdempotency>,
}

struct StoredIdempotency {
    fingerprint: String,
    /// `None` while in flight.
    answer: Option<StoredAnswer>,
    created_at: OffsetDateTime,
    expires_at: OffsetDateTime,
}

impl Data {
    /// What a refresh token is now, without changing it.
    fn refresh_token_state(&self, token_hash: &str) -> RefreshTokenUse {
        let Some(token) = self.refresh.get(token_hash) else {
            return RefreshTokenUse::Unknown;
        };
        let session = &token.record.session_id;
        if self.ended_sessions.contains(session) || !self.sessions.contains_key(session) {
            RefreshTokenUse::Revoked
        } else if token.spent {
            RefreshTokenUse::Replayed {
                session_id: session.clone(),
                user_id: token.record.user_id,
            }
        } else {
            RefreshTokenUse::Live(token.record.clone())
        }
    }

    /// The unique field of `user` that another user holds already.
    fn taken(&self, user: &User) -> Option<UniqueField> {
        let others = || self.users.values().filter(|other| other.id != user.id);
        if others().any(|other| other.email == user.email) {
            return Some(UniqueField::Email);
        }
        let key = user.username.as_ref().map(Username::key)?;
        others()
            .any(|other| other.username.as_ref().map(Username::key) == Some(key.clone()))
            .then_some(UniqueField::Username)
    }

    fn has_an_active_admin(&self) -> bool {
        self.users.values().any(User::is_active_admin)
    }

    fn session_live(&self, id: &SessionId, user_id: &UserId, at: OffsetDateTime) -> bool {
        self.sessions
            .get(id)
            .is_some_and(|session| session.user_id == *user_id && session.expires_at > at)
            && !self.ended_sessions.contains(id)
    }

    fn set_mfa(&mut self, user_id: &UserId, on: bool, at: OffsetDateTime) {
        if let Some(user) = self.users.get_mut(user_id) {
            user.mfa_enabled = on;
            user.updated_at = truncate_to_millis(at);
        }
    }
}

fn audit_matches(event: &AuditEvent, filter: &AuditFilter) -> bool {
    filter
        .user_id
        .is_none_or(|id| event.actor_id == Some(id) || event.subject_id == Some(id))
        && filter
            .subject_id
            .is_none_or(|id| event.subject_id == Some(id))
        && filter.kind.is_none_or(|kind| event.kind == kind)
        && filter.since.is_none_or(|since| event.at >= since)
        && filter.until.is_none_or(|until| event.at < until)
}

/// Work a test sets to run right after a named call, as another request would.
#[cfg(test)]
type Interleaved = Vec<(&'static str, Box<dyn FnOnce() + Send>)>;

#[derive(Default)]
pub struct MemoryRepository {
    data: Mutex<Data>,
    round_trips: AtomicUsize,
    #[cfg(test)]
    interleaved: Mutex<Interleaved>,
}

impl MemoryRepository {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many calls reached the data (each trait method reaches it once, as a real backend
    /// makes one round trip): tests count what a use case costs.
    pub fn round_trips(&self) -> usize {
        self.round_trips.load(AtomicOrdering::SeqCst)
    }

    /// Test seam: `work` runs once, right after the next call of `method` has read what
    /// it answers, as a write of another request landing between that read and what the
    /// caller does next. Only `user_by_id`, `user_by_email` and `count_login_attempt` take
    /// such work.
    #[cfg(test)]
    pub fn after_next(&self, method: &'static str, work: impl FnOnce() + Send + 'static) {
        self.interleaved
            .lock()
            .expect("interleaved work")
            .push((method, Box::new(work)));
    }

    #[cfg(test)]
    fn interleave(&self, method: &'static str) {
        let work = {
            let mut interleaved = self.interleaved.lock().expect("interleaved work");
            interleaved
                .iter()
                .position(|(name, _)| *name == method)
                .map(|at| interleaved.remove(at).1)
        };
        if let Some(work) = work {
            work();
        }
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        self.round_trips.fetch_add(1, AtomicOrdering::SeqCst);
        // Every change below is made whole or not at all, so a poisoned lock is still sound.
        self.data
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Timestamps as the real backends keep them: to the millisecond.
fn stored(mut user: User) -> User {
    user.created_at = truncate_to_millis(user.created_at);
    user.updated_at = truncate_to_millis(user.updated_at);
    user.password_changed_at = truncate_to_millis(user.password_changed_at);
    user.last_login_at = user.last_login_at.map(truncate_to_millis);
    user.locked_until = user.locked_until.map(truncate_to_millis);
    user
}

/// A one-time token's timestamps as the real backends keep them.
fn stored_token(mut record: OneTimeTokenRecord) -> OneTimeTokenRecord {
    record.created_at = truncate_to_millis(record.created_at);
    record.expires_at = truncate_to_millis(record.expires_at);
    record
}

fn duplicate_key(what: &str) -> StorageError {
    StorageError::internal(anyhow::anyhow!("{what} exists already"))
}

fn matches(user: &User, filter: &UserFilter) -> bool {
    let q_matches = filter.q.as_ref().is_none_or(|q| {
        let q = q.to_lowercase();
        user.name.as_str().to_lowercase().contains(&q)
            || user.email.as_str().contains(&q)
            || user
                .username
                .as_ref()
                .is_some_and(|u| u.as_str().to_lowercase().contains(&q))
    });
    q_matches && filter.keeps(user.role, user.active)
}

/// The list's order before its direction: by the sort key, then by id.
fn compare(a: &User, b: &User, sort: SortField) -> Ordering {
    compare_to(a, &SortKey::of(b, sort), &b.id, sort)
}

fn compare_to(user: &User, key: &SortKey, id: &UserId, sort: SortField) -> Ordering {
    let by_key = match (SortKey::of(user, sort), key) {
        (SortKey::CreatedAt(at), SortKey::CreatedAt(other)) => at.cmp(other),
        (SortKey::Text(text), SortKey::Text(other)) => text.as_str().cmp(other.as_str()),
        // Keys of one sort are of one kind; a cursor of another sort is refused earlier.
        _ => Ordering::Equal,
    };
    by_key.then_with(|| user.id.object_id().bytes().cmp(&id.object_id().bytes()))
}

/// Whether `user` comes strictly after the cursor in the list's order.
fn is_after(user: &User, after: &UserCursor, query: &ListQuery) -> bool {
    let ordering = compare_to(user, &after.key, &after.id, query.sort);
    match query.order {
        SortOrder::Ascending => ordering.is_gt(),
        SortOrder::Descending => ordering.is_lt(),
    }
}

/// The writes of a user, guarded by the user as last read or not.
impl MemoryRepository {
    fn update_guarded(
        &self,
        id: &UserId,
        patch: &UserPatch,
        expected: Option<&User>,
    ) -> StorageResult<Option<User>> {
        let mut data = self.data();
        let Some(mut user) = data.users.get(id).cloned() else {
            return Ok(None);
        };
        if expected.is_some_and(|expected| *expected != user) {
            return Err(StorageError::Changed);
        }
        let was_active_admin = user.is_active_admin();
        patch.apply_to(&mut user);
        let user = stored(user);
        if let Some(field) = data.taken(&user) {
            return Err(StorageError::Duplicate(field));
        }
        let previous = data.users.insert(*id, user.clone());
        if was_active_admin && !data.has_an_active_admin() {
            data.users
                .insert(*id, previous.expect("the user was there"));
            return Err(StorageError::LastActiveAdmin);
        }
        Ok(Some(user))
    }

    fn delete_guarded(&self, id: &UserId, expected: Option<&User>) -> StorageResult<bool> {
        let mut data = self.data();
        if let (Some(expected), Some(user)) = (expected, data.users.get(id))
            && expected != user
        {
            return Err(StorageError::Changed);
        }
        let Some(user) = data.users.remove(id) else {
            return Ok(false);
        };
        if user.is_active_admin() && !data.has_an_active_admin() {
            data.users.insert(*id, user);
            return Err(StorageError::LastActiveAdmin);
        }
        data.refresh.retain(|_, token| token.record.user_id != *id);
        data.sessions.retain(|_, session| session.user_id != *id);
        data.totp.remove(id);
        data.challenges
            .retain(|_, (challenge, _, _)| challenge.user_id != *id);
        data.reset.retain(|_, token| token.record.user_id != *id);
        data.verification
            .retain(|_, (token, _)| token.user_id != *id);
        Ok(true)
    }
}

#[async_trait]
impl Repository for MemoryRepository {
    async fn ping(&self) -> StorageResult<()> {
        Ok(())
    }

    async fn create_user(&self, user: &User) -> StorageResult<()> {
        let mut data = self.data();
        if data.users.contains_key(&user.id) {
            return Err(duplicate_key("a user with this id"));
        }
        if let Some(field) = data.taken(user) {
            return Err(StorageError::Duplicate(field));
        }
        data.users.insert(user.id, stored(user.clone()));
        Ok(())
    }

    async fn import_users(&self, users: &[User]) -> StorageResult<Vec<Imported>> {
        let mut data = self.data();
        Ok(users
            .iter()
            .map(|user| {
                if data.users.contains_key(&user.id) {
                    return Imported::Exists;
                }
                match data.taken(user) {
                    Some(UniqueField::Email) => Imported::Exists,
                    Some(UniqueField::Username) => Imported::UsernameTaken,
                    None => {
                        data.users.insert(user.id, stored(user.clone()));
                        Imported::Created
                    }
                }
            })
            .collect())
    }

    async fn user_by_id(&self, id: &UserId) -> StorageResult<Option<User>> {
        let user = self.data().users.get(id).cloned();
        #[cfg(test)]
        self.interleave("user_by_id");
        Ok(user)
    }

    async fn user_by_email(&self, email: &Email) -> StorageResult<Option<User>> {
        let user = self
            .data()
            .users
            .values()
            .find(|user| user.email == *email)
            .cloned();
        #[cfg(test)]
        self.interleave("user_by_email");
        Ok(user)
    }

    async fn user_by_username(&self, username: &Username) -> StorageResult<Option<User>> {
        let key = username.key();
        Ok(self
            .data()
            .users
            .values()
            .find(|user| user.username.as_ref().map(Username::key) == Some(key.clone()))
            .cloned())
    }

    async fn update_user(&self, id: &UserId, patch: &UserPatch) -> StorageResult<Option<User>> {
        self.update_guarded(id, patch, None)
    }

    async fn delete_user(&self, id: &UserId) -> StorageResult<bool> {
        self.delete_guarded(id, None)
    }

    async fn update_user_if(
        &self,
        id: &UserId,
        patch: &UserPatch,
        expected: &User,
    ) -> StorageResult<Option<User>> {
        self.update_guarded(id, patch, Some(expected))
    }

    async fn delete_user_if(&self, id: &UserId, expected: &User) -> StorageResult<bool> {
        self.delete_guarded(id, Some(expected))
    }

    async fn list_users(&self, query: &ListQuery) -> StorageResult<Page<User>> {
        let data = self.data();
        let mut users: Vec<&User> = data
            .users
            .values()
            .filter(|user| matches(user, &query.filter))
            .collect();
        users.sort_by(|a, b| {
            let ordering = compare(a, b, query.sort);
            match query.order {
                SortOrder::Ascending => ordering,
                SortOrder::Descending => ordering.reverse(),
            }
        });
        let total = users.len() as u64;
        let items = users
            .into_iter()
            .filter(|user| {
                query
                    .after
                    .as_ref()
                    .is_none_or(|after| is_after(user, after, query))
            })
            .skip(usize::try_from(query.offset).unwrap_or(usize::MAX))
            .take(query.limit as usize)
            .cloned()
            .collect();
        Ok(Page { items, total })
    }

    async fn count_login_attempt(
        &self,
        key: &str,
        at: OffsetDateTime,
        threshold: u32,
        lock_for: std::time::Duration,
    ) -> StorageResult<LoginAttempts> {
        let at = truncate_to_millis(at);
        let next = {
            let mut data = self.data();
            data.login_attempts
                .retain(|_, attempts| attempts.expires_at(lock_for) >= at);
            let previous = data.login_attempts.get(key).copied();
            let next = StoredAttempts::next(previous, at, threshold, lock_for);
            data.login_attempts.insert(key.to_owned(), next);
            next
        };
        #[cfg(test)]
        self.interleave("count_login_attempt");
        Ok(next.public())
    }

    async fn forgive_login_attempt(&self, key: &str, threshold: u32) -> StorageResult<()> {
        if let Some(attempts) = self.data().login_attempts.get_mut(key) {
            *attempts = attempts.forgiven(threshold);
        }
        Ok(())
    }

    async fn clear_login_attempts(&self, key: &str) -> StorageResult<()> {
        self.data().login_attempts.remove(key);
        Ok(())
    }

    async fn login_lock(&self, key: &str) -> StorageResult<Option<OffsetDateTime>> {
        Ok(self
            .data()
            .login_attempts
            .get(key)
            .and_then(|attempts| attempts.locked_until))
    }

    async fn create_session(&self, session: &Session) -> StorageResult<()> {
        let mut session = session.clone();
        session.created_at = truncate_to_millis(session.created_at);
        session.last_used_at = truncate_to_millis(session.last_used_at);
        session.expires_at = truncate_to_millis(session.expires_at);
        let mut data = self.data();
        if data.sessions.contains_key(&session.id) {
            return Err(duplicate_key("a session with this id"));
        }
        data.sessions.insert(session.id.clone(), session);
        Ok(())
    }

    async fn user_with_session(
        &self,
        id: &UserId,
        session: &SessionId,
        at: OffsetDateTime,
    ) -> StorageResult<Option<(User, bool)>> {
        let data = self.data();
        Ok(data
            .users
            .get(id)
            .map(|user| (user.clone(), data.session_live(session, id, at))))
    }

    async fn live_sessions(
        &self,
        user_id: &UserId,
        at: OffsetDateTime,
    ) -> StorageResult<Vec<Session>> {
        let data = self.data();
        let mut sessions: Vec<Session> = data
            .sessions
            .values()
            .filter(|session| data.session_live(&session.id, user_id, at))
            .cloned()
            .collect();
        sessions.sort_by(|a, b| (b.created_at, b.id.as_str()).cmp(&(a.created_at, a.id.as_str())));
        Ok(sessions)
    }

    async fn end_session(
        &self,
        user_id: &UserId,
        session: &SessionId,
        at: OffsetDateTime,
    ) -> StorageResult<bool> {
        let mut data = self.data();
        let live = data.session_live(session, user_id, at);
        if live {
            data.ended_sessions.insert(session.clone());
        }
        Ok(live)
    }

    async fn end_user_sessions(&self, user_id: &UserId, at: OffsetDateTime) -> StorageResult<u64> {
        let mut data = self.data();
        let live: Vec<SessionId> = data
            .sessions
            .keys()
            .filter(|id| data.session_live(id, user_id, at))
            .cloned()
            .collect();
        let ended = live.len() as u64;
        data.ended_sessions.extend(live);
        data.challenges
            .retain(|_, (challenge, _, _)| challenge.user_id != *user_id);
        Ok(ended)
    }

    async fn insert_refresh_token(&self, mut record: RefreshTokenRecord) -> StorageResult<()> {
        record.created_at = truncate_to_millis(record.created_at);
        record.expires_at = truncate_to_millis(record.expires_at);
        let mut data = self.data();
        // As on SQLite: expired tokens can never be used again; sweep them while writing.
        data.refresh
            .retain(|_, token| token.record.expires_at >= record.created_at);
        if data.refresh.contains_key(&record.token_hash) {
            return Err(duplicate_key("a refresh token with this hash"));
        }
        if !data.ended_sessions.contains(&record.session_id)
            && let Some(session) = data.sessions.get_mut(&record.session_id)
        {
            session.last_used_at = record.created_at;
            session.expires_at = session.expires_at.max(record.expires_at);
        }
        let token = StoredRefresh {
            record,
            spent: false,
        };
        data.refresh.insert(token.record.token_hash.clone(), token);
        Ok(())
    }

    async fn use_refresh_token(
        &self,
        token_hash: &str,
        _at: OffsetDateTime,
    ) -> StorageResult<RefreshTokenUse> {
        let mut data = self.data();
        Ok(match data.refresh_token_state(token_hash) {
            RefreshTokenUse::Live(record) => {
                if let Some(token) = data.refresh.get_mut(token_hash) {
                    token.spent = true;
                }
                RefreshTokenUse::Spent(record)
            }
            other => other,
        })
    }

    async fn peek_refresh_token(&self, token_hash: &str) -> StorageResult<RefreshTokenUse> {
        Ok(self.data().refresh_token_state(token_hash))
    }

    async fn end_session_of_token(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<Option<(UserId, SessionId)>> {
        let mut data = self.data();
        let Some(token) = data.refresh.get(token_hash).map(|t| t.record.clone()) else {
            return Ok(None);
        };
        let live = data.session_live(&token.session_id, &token.user_id, at);
        Ok(
            (live && data.ended_sessions.insert(token.session_id.clone()))
                .then_some((token.user_id, token.session_id)),
        )
    }

    async fn totp_state(&self, user_id: &UserId) -> StorageResult<Option<TotpState>> {
        let data = self.data();
        Ok(data.users.contains_key(user_id).then(|| {
            data.totp
                .get(user_id)
                .map(|totp| totp.state.clone())
                .unwrap_or_default()
        }))
    }

    async fn set_pending_totp(&self, user_id: &UserId, secret: &Secret) -> StorageResult<bool> {
        let mut data = self.data();
        if data.users.get(user_id).is_none_or(|user| user.mfa_enabled) {
            return Ok(false);
        }
        data.totp.entry(*user_id).or_default().state.pending = Some(secret.clone());
        Ok(true)
    }

    async fn enable_totp(
        &self,
        user_id: &UserId,
        secret: &Secret,
        step: u64,
        recovery_hashes: &[String],
        at: OffsetDateTime,
    ) -> StorageResult<bool> {
        let mut data = self.data();
        let off = data
            .users
            .get(user_id)
            .is_some_and(|user| !user.mfa_enabled);
        let Some(totp) = data.totp.get_mut(user_id) else {
            return Ok(false);
        };
        if !off || totp.state.pending.as_ref() != Some(secret) {
            return Ok(false);
        }
        totp.state = TotpState {
            secret: totp.state.pending.take(),
            pending: None,
            last_step: Some(step),
        };
        totp.recovery = recovery_hashes.iter().cloned().collect();
        data.set_mfa(user_id, true, at);
        Ok(true)
    }

    async fn claim_totp_step(&self, user_id: &UserId, step: u64) -> StorageResult<bool> {
        let mut data = self.data();
        let on = data.users.get(user_id).is_some_and(|user| user.mfa_enabled);
        match data.totp.get_mut(user_id) {
            Some(totp) if on && totp.state.last_step.is_none_or(|last| last < step) => {
                totp.state.last_step = Some(step);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn use_recovery_code(&self, user_id: &UserId, code_hash: &str) -> StorageResult<bool> {
        Ok(self
            .data()
            .totp
            .get_mut(user_id)
            .is_some_and(|totp| totp.recovery.remove(code_hash)))
    }

    async fn holds_recovery_code(&self, user_id: &UserId, code_hash: &str) -> StorageResult<bool> {
        let data = self.data();
        Ok(data.users.get(user_id).is_some_and(|user| user.mfa_enabled)
            && data
                .totp
                .get(user_id)
                .is_some_and(|totp| totp.recovery.contains(code_hash)))
    }

    async fn replace_recovery_codes(
        &self,
        user_id: &UserId,
        recovery_hashes: &[String],
    ) -> StorageResult<bool> {
        let mut data = self.data();
        let on = data.users.get(user_id).is_some_and(|user| user.mfa_enabled);
        match data.totp.get_mut(user_id) {
            Some(totp) if on => {
                totp.recovery = recovery_hashes.iter().cloned().collect();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn disable_totp(&self, user_id: &UserId, at: OffsetDateTime) -> StorageResult<bool> {
        let mut data = self.data();
        if !data.users.get(user_id).is_some_and(|user| user.mfa_enabled) {
            return Ok(false);
        }
        // The last accepted step stays, as on the other backends.
        if let Some(totp) = data.totp.get_mut(user_id) {
            totp.state.secret = None;
            totp.state.pending = None;
            totp.recovery.clear();
        }
        data.set_mfa(user_id, false, at);
        Ok(true)
    }

    async fn insert_mfa_challenge(&self, record: OneTimeTokenRecord) -> StorageResult<()> {
        let record = stored_token(record);
        let mut data = self.data();
        if data.challenges.contains_key(&record.token_hash) {
            return Err(duplicate_key("a challenge with this hash"));
        }
        data.challenges
            .insert(record.token_hash.clone(), (record, 0, false));
        Ok(())
    }

    async fn attempt_mfa_challenge(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
        max_attempts: u32,
    ) -> StorageResult<Option<UserId>> {
        Ok(match self.data().challenges.get_mut(token_hash) {
            Some((challenge, attempts, false))
                if challenge.expires_at > at && *attempts < max_attempts =>
            {
                *attempts += 1;
                Some(challenge.user_id)
            }
            _ => None,
        })
    }

    async fn consume_mfa_challenge(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<bool> {
        Ok(match self.data().challenges.get_mut(token_hash) {
            Some((challenge, _, spent)) if !*spent && challenge.expires_at > at => {
                *spent = true;
                true
            }
            _ => false,
        })
    }

    async fn insert_audit_event(&self, event: &AuditEvent) -> StorageResult<()> {
        let mut event = event.clone();
        event.at = truncate_to_millis(event.at);
        self.data().audit.push(event);
        Ok(())
    }

    async fn list_audit_events(&self, query: &AuditQuery) -> StorageResult<Page<AuditEvent>> {
        let data = self.data();
        let mut events: Vec<&AuditEvent> = data
            .audit
            .iter()
            .filter(|event| audit_matches(event, &query.filter))
            .collect();
        events.sort_by_key(|event| std::cmp::Reverse((event.at, event.id)));
        let total = events.len() as u64;
        let items = events
            .into_iter()
            .filter(|event| query.after.is_none_or(|after| (event.at, event.id) < after))
            .skip(usize::try_from(query.offset).unwrap_or(usize::MAX))
            .take(query.limit as usize)
            .cloned()
            .collect();
        Ok(Page { items, total })
    }

    async fn delete_audit_events_before(&self, before: OffsetDateTime) -> StorageResult<u64> {
        let mut data = self.data();
        let count = data.audit.len();
        data.audit.retain(|event| event.at >= before);
        Ok((count - data.audit.len()) as u64)
    }

    async fn insert_reset_token(&self, record: OneTimeTokenRecord) -> StorageResult<()> {
        let record = stored_token(record);
        let mut data = self.data();
        if data.reset.contains_key(&record.token_hash) {
            return Err(duplicate_key("a reset token with this hash"));
        }
        data.reset.insert(
            record.token_hash.clone(),
            StoredReset {
                record,
                used: false,
            },
        );
        Ok(())
    }

    async fn reset_token_owner(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<Option<UserId>> {
        Ok(match self.data().reset.get(token_hash) {
            Some(token) if !token.used && token.record.expires_at > at => {
                Some(token.record.user_id)
            }
            _ => None,
        })
    }

    async fn consume_reset_token(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<Option<UserId>> {
        let mut data = self.data();
        let user_id = match data.reset.get(token_hash) {
            Some(token) if !token.used && token.record.expires_at > at => token.record.user_id,
            _ => return Ok(None),
        };
        void_reset_tokens(&mut data, user_id);
        Ok(Some(user_id))
    }

    async fn void_reset_tokens(&self, user_id: &UserId, _at: OffsetDateTime) -> StorageResult<u64> {
        Ok(void_reset_tokens(&mut self.data(), *user_id))
    }

    async fn insert_verification_token(
        &self,
        mut record: VerificationTokenRecord,
    ) -> StorageResult<()> {
        record.created_at = truncate_to_millis(record.created_at);
        record.expires_at = truncate_to_millis(record.expires_at);
        let mut data = self.data();
        if data.verification.contains_key(&record.token_hash) {
            return Err(duplicate_key("a verification token with this hash"));
        }
        for (token, used) in data.verification.values_mut() {
            if token.user_id == record.user_id {
                *used = true;
            }
        }
        data.verification
            .insert(record.token_hash.clone(), (record, false));
        Ok(())
    }

    async fn consume_verification_token(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<Option<(UserId, Email)>> {
        let mut data = self.data();
        Ok(match data.verification.get_mut(token_hash) {
            Some((token, used)) if !*used && token.expires_at > at => {
                *used = true;
                Some((token.user_id, token.email.clone()))
            }
            _ => None,
        })
    }

    async fn claim_mail(
        &self,
        kind: &str,
        address: &Email,
        at: OffsetDateTime,
        window: std::time::Duration,
    ) -> StorageResult<bool> {
        let at = truncate_to_millis(at);
        let mut data = self.data();
        let key = (kind.to_owned(), address.as_str().to_owned());
        if data
            .mail_log
            .get(&key)
            .is_some_and(|sent| *sent > at - window)
        {
            return Ok(false);
        }
        data.mail_log.insert(key, at);
        Ok(true)
    }

    async fn claim_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        at: OffsetDateTime,
        ttl: std::time::Duration,
        stale_after: std::time::Duration,
    ) -> StorageResult<Claim> {
        let at = truncate_to_millis(at);
        let mut data = self.data();
        data.idempotency.retain(|_, entry| entry.expires_at > at);
        let id = (scope.to_owned(), key.to_owned());
        if let Some(entry) = data.idempotency.get(&id) {
            let abandoned = entry.answer.is_none() && entry.created_at + stale_after <= at;
            if !abandoned {
                return Ok(if entry.fingerprint != fingerprint {
                    Claim::Mismatch
                } else if let Some(answer) = &entry.answer {
                    Claim::Replay(answer.clone())
                } else {
                    Claim::InFlight
                });
            }
        }
        data.idempotency.insert(
            id,
            StoredIdempotency {
                fingerprint: fingerprint.to_owned(),
                answer: None,
                created_at: at,
                expires_at: at + ttl,
            },
        );
        Ok(Claim::New)
    }

    async fn complete_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        answer: &StoredAnswer,
    ) -> StorageResult<()> {
        let mut data = self.data();
        if let Some(entry) = data
            .idempotency
            .get_mut(&(scope.to_owned(), key.to_owned()))
            .filter(|entry| entry.answer.is_none())
        {
            entry.answer = Some(answer.clone());
        }
        Ok(())
    }

    async fn release_idempotency_key(&self, scope: &str, key: &str) -> StorageResult<()> {
        let mut data = self.data();
        let id = (scope.to_owned(), key.to_owned());
        if data
            .idempotency
            .get(&id)
            .is_some_and(|entry| entry.answer.is_none())
        {
            data.idempotency.remove(&id);
        }
        Ok(())
    }
}
