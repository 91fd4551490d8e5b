//! The audit log: security events written by the services as they act, and read back by
//! admins (everyone's) and users (their own).

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{Actor, AdminAccess, ServiceError};
use crate::{
    domain::{
        self, AuditEvent, AuditFilter, AuditQuery, EventDetails, EventId, EventKind, Origin,
        UserId, unix_millis,
    },
    metrics,
    storage::DynRepository,
};

/// An event about to be recorded.
#[derive(Debug, Clone)]
pub(super) struct Event {
    kind: EventKind,
    actor_id: Option<UserId>,
    subject_id: Option<UserId>,
    details: EventDetails,
}

impl Event {
    pub fn new(kind: EventKind) -> Self {
        Self {
            kind,
            actor_id: None,
            subject_id: None,
            details: EventDetails::new(),
        }
    }

    /// Who did it: the signed-in user, if any.
    pub fn by(mut self, actor: Option<UserId>) -> Self {
        self.actor_id = actor;
        self
    }

    /// Whom it concerns.
    pub fn about(mut self, subject: UserId) -> Self {
        self.subject_id = Some(subject);
        self
    }

    /// A fact about the event; never a secret value.
    pub fn detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}

/// Where listing starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// 1-based page number.
    Page(u32),
    /// The `next_cursor` of the page before.
    After(String),
}

/// One page of events, newest first.
#[derive(Debug, Clone)]
pub struct AuditPage {
    pub items: Vec<AuditEvent>,
    /// `None` when the page was asked for by cursor.
    pub page: Option<u32>,
    pub per_page: u32,
    pub total: u64,
    pub total_pages: u64,
    /// Where the next page starts; `None` on the last one.
    pub next_cursor: Option<String>,
}

#[derive(Clone)]
pub struct AuditLog {
    repo: DynRepository,
    retention: Duration,
}

impl AuditLog {
    pub(super) fn new(repo: DynRepository, retention: Duration) -> Self {
        Self { repo, retention }
    }

    /// Writes `event`. A failure is logged at error level and counted, and the action the
    /// event describes stands: the caller is not told.
    pub(super) async fn record(&self, event: Event, origin: &Origin) {
        let event = AuditEvent {
            id: EventId::generate(),
            at: domain::now(),
            kind: event.kind,
            actor_id: event.actor_id,
            subject_id: event.subject_id,
            origin: origin.clone(),
            details: event.details,
        };
        if let Err(e) = self.repo.insert_audit_event(&event).await {
            metrics::record_audit_failure();
            tracing::error!(
                event = event.kind.as_str(),
                subject = event.subject_id.map(|id| id.to_hex()),
                error = format!("{:#}", anyhow::Error::from(e)),
                "an audit event could not be written"
            );
        }
    }

    /// Every event matching `filter` (admins).
    pub async fn list(
        &self,
        _: AdminAccess<'_>,
        filter: AuditFilter,
        per_page: u32,
        position: Position,
    ) -> Result<AuditPage, ServiceError> {
        self.page(filter, per_page, position).await
    }

    /// The events whose subject is the actor.
    pub async fn list_own(
        &self,
        actor: &Actor,
        mut filter: AuditFilter,
        per_page: u32,
        position: Position,
    ) -> Result<AuditPage, ServiceError> {
        filter.subject_id = Some(actor.id());
        self.page(filter, per_page, position).await
    }

    async fn page(
        &self,
        filter: AuditFilter,
        per_page: u32,
        position: Position,
    ) -> Result<AuditPage, ServiceError> {
        let fingerprint = fingerprint(&filter);
        let (page, offset, after) = match &position {
            Position::Page(page) => (
                Some(*page),
                u64::from(page.saturating_sub(1)) * u64::from(per_page),
                None,
            ),
            Position::After(cursor) => (None, 0, Some(decode_cursor(cursor, &fingerprint)?)),
        };
        // One more than asked for tells whether a next page exists.
        let query = AuditQuery {
            filter,
            after,
            offset,
            limit: per_page + 1,
        };
        let mut found = self.repo.list_audit_events(&query).await?;
        let more = found.items.len() > per_page as usize;
        found.items.truncate(per_page as usize);
        let next_cursor = found
            .items
            .last()
            .filter(|_| more)
            .map(|last| encode_cursor(last.at, last.id, &fingerprint));
        Ok(AuditPage {
            items: found.items,
            page,
            per_page,
            total: found.total,
            total_pages: found.total.div_ceil(u64::from(per_page)),
            next_cursor,
        })
    }

    /// Removes the events older than the retention period; how many.
    pub async fn sweep(&self) -> Result<u64, ServiceError> {
        let before = domain::now() - self.retention;
        Ok(self.repo.delete_audit_events_before(before).await?)
    }
}

/// What a cursor is bound to: the filter it was made under.
fn fingerprint(filter: &AuditFilter) -> String {
    let key = format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}",
        filter.user_id.map(|id| id.to_hex()),
        filter.subject_id.map(|id| id.to_hex()),
        filter.kind.map(EventKind::as_str),
        filter.since.map(unix_millis),
        filter.until.map(unix_millis),
    );
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

fn encode_cursor(at: OffsetDateTime, id: EventId, fingerprint: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}.{id}.{fingerprint}", unix_millis(at)))
}

fn decode_cursor(
    cursor: &str,
    fingerprint: &str,
) -> Result<(OffsetDateTime, EventId), ServiceError> {
    let bad = || ServiceError::BadQuery {
        parameter: "after",
        message: "is not a cursor of this list (with these filters)",
    };
    let text = URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(bad)?;
    let mut parts = text.split('.');
    let (Some(millis), Some(id), Some(bound), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if bound != fingerprint {
        return Err(bad());
    }
    let at = millis
        .parse::<i64>()
        .ok()
        .and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok())
        .ok_or_else(bad)?;
    Ok((at, EventId::parse(id).map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_filter() {
        let filter = AuditFilter {
            kind: Some(EventKind::LoginFailed),
            ..AuditFilter::default()
        };
        let (at, id) = (domain::now(), EventId::generate());
        let cursor = encode_cursor(at, id, &fingerprint(&filter));
        assert_eq!(
            decode_cursor(&cursor, &fingerprint(&filter)).unwrap(),
            (at, id)
        );
        let other = AuditFilter::default();
        assert!(matches!(
            decode_cursor(&cursor, &fingerprint(&other)),
            Err(ServiceError::BadQuery {
                parameter: "after",
                ..
            })
        ));
        for junk in ["", "!!", "bm90IGEgY3Vyc29y"] {
            assert!(
                decode_cursor(junk, &fingerprint(&filter)).is_err(),
                "{junk}"
            );
        }
    }
}
