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
    LoginAttempts, RefreshTokenRecord, RefreshTokenUse, Repository, ResetTokenRecord, StorageError,
    StorageResult, StoredAttempts, UniqueField, VerificationTokenRecord,
};
use crate::domain::{
    Email, ListQuery, Page, SortField, SortOrder, User, UserFilter, UserId, UserPatch, Username,
    truncate_to_millis,
};

struct StoredRefresh {
    record: RefreshTokenRecord,
    spent: bool,
}

struct StoredReset {
    record: ResetTokenRecord,
    used: bool,
}

#[derive(Default)]
struct Data {
    users: HashMap<UserId, User>,
    refresh: HashMap<String, StoredRefresh>,
    /// The families (sessions) that have ended.
    ended_families: HashSet<String>,
    reset: HashMap<String, StoredReset>,
    login_attempts: HashMap<String, StoredAttempts>,
    verification: HashMap<String, (VerificationTokenRecord, bool)>,
    /// When a mail of a kind last went to an address.
    mail_log: HashMap<(String, String), OffsetDateTime>,
}

impl Data {
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
}

#[derive(Default)]
pub struct MemoryRepository {
    data: Mutex<Data>,
    user_reads: AtomicUsize,
}

impl MemoryRepository {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times a user was looked up by id, email or username: tests count the
    /// round trips a use case makes.
    pub fn user_reads(&self) -> usize {
        self.user_reads.load(AtomicOrdering::SeqCst)
    }

    fn count_read(&self) {
        self.user_reads.fetch_add(1, AtomicOrdering::SeqCst);
    }

    fn data(&self) -> MutexGuard<'_, Data> {
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
    q_matches
        && filter.role.is_none_or(|role| user.role == role)
        && filter.active.is_none_or(|active| user.active == active)
}

fn compare(a: &User, b: &User, sort: SortField) -> Ordering {
    let by_field = match sort {
        SortField::CreatedAt => a.created_at.cmp(&b.created_at),
        SortField::Name => a.name.as_str().cmp(b.name.as_str()),
        SortField::Email => a.email.as_str().cmp(b.email.as_str()),
    };
    by_field.then_with(|| a.id.object_id().bytes().cmp(&b.id.object_id().bytes()))
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

    async fn user_by_id(&self, id: &UserId) -> StorageResult<Option<User>> {
        self.count_read();
        Ok(self.data().users.get(id).cloned())
    }

    async fn user_by_email(&self, email: &Email) -> StorageResult<Option<User>> {
        self.count_read();
        Ok(self
            .data()
            .users
            .values()
            .find(|user| user.email == *email)
            .cloned())
    }

    async fn user_by_username(&self, username: &Username) -> StorageResult<Option<User>> {
        self.count_read();
        let key = username.key();
        Ok(self
            .data()
            .users
            .values()
            .find(|user| user.username.as_ref().map(Username::key) == Some(key.clone()))
            .cloned())
    }

    async fn update_user(&self, id: &UserId, patch: &UserPatch) -> StorageResult<Option<User>> {
        let mut data = self.data();
        let Some(mut user) = data.users.get(id).cloned() else {
            return Ok(None);
        };
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

    async fn delete_user(&self, id: &UserId) -> StorageResult<bool> {
        let mut data = self.data();
        let Some(user) = data.users.remove(id) else {
            return Ok(false);
        };
        if user.is_active_admin() && !data.has_an_active_admin() {
            data.users.insert(*id, user);
            return Err(StorageError::LastActiveAdmin);
        }
        data.refresh.retain(|_, token| token.record.user_id != *id);
        data.reset.retain(|_, token| token.record.user_id != *id);
        data.verification
            .retain(|_, (token, _)| token.user_id != *id);
        Ok(true)
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
            .skip(usize::try_from(query.offset()).unwrap_or(usize::MAX))
            .take(query.per_page as usize)
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
        let mut data = self.data();
        data.login_attempts
            .retain(|_, attempts| attempts.expires_at(lock_for) >= at);
        let previous = data.login_attempts.get(key).copied();
        let next = StoredAttempts::next(previous, at, threshold, lock_for);
        data.login_attempts.insert(key.to_owned(), next);
        Ok(next.public())
    }

    async fn clear_login_attempts(&self, key: &str) -> StorageResult<()> {
        self.data().login_attempts.remove(key);
        Ok(())
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
        let data = &mut *data;
        let Some(token) = data.refresh.get_mut(token_hash) else {
            return Ok(RefreshTokenUse::Unknown);
        };
        Ok(if data.ended_families.contains(&token.record.family_id) {
            RefreshTokenUse::Revoked
        } else if token.spent {
            RefreshTokenUse::Replayed {
                family_id: token.record.family_id.clone(),
            }
        } else {
            token.spent = true;
            RefreshTokenUse::Spent(token.record.clone())
        })
    }

    async fn revoke_refresh_token(&self, token_hash: &str) -> StorageResult<()> {
        let mut data = self.data();
        if let Some(family) = data
            .refresh
            .get(token_hash)
            .map(|t| t.record.family_id.clone())
        {
            data.ended_families.insert(family);
        }
        Ok(())
    }

    async fn revoke_refresh_family(&self, family_id: &str) -> StorageResult<()> {
        self.data().ended_families.insert(family_id.to_owned());
        Ok(())
    }

    async fn revoke_user_refresh_tokens(&self, user_id: &UserId) -> StorageResult<()> {
        let mut data = self.data();
        let families: Vec<String> = data
            .refresh
            .values()
            .filter(|token| token.record.user_id == *user_id)
            .map(|token| token.record.family_id.clone())
            .collect();
        data.ended_families.extend(families);
        Ok(())
    }

    async fn insert_reset_token(&self, mut record: ResetTokenRecord) -> StorageResult<()> {
        record.created_at = truncate_to_millis(record.created_at);
        record.expires_at = truncate_to_millis(record.expires_at);
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
        for token in data.reset.values_mut() {
            if token.record.user_id == user_id {
                token.used = true;
            }
        }
        Ok(Some(user_id))
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
}
