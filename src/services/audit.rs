//! The audit log: security events written by the services as they act, and read back by
//! admins (everyone's) and users (their own).

use std::time::Duration;

use super::{
    Actor, AdminAccess, ServiceError,
    listing::{Cursors, Listing, Position, bad_cursor},
};
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

/// One page of events, newest first.
pub type AuditPage = Listing<AuditEvent>;

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
        let cursors = Cursors::new(&binding(&filter));
        let (offset, after) = cursors.start::<2>(&position, per_page)?;
        let after = after
            .map(|[millis, id]| {
                let at = millis
                    .parse::<i64>()
                    .ok()
                    .and_then(domain::from_unix_millis);
                match (at, EventId::parse(&id)) {
                    (Some(at), Ok(id)) => Ok((at, id)),
                    _ => Err(bad_cursor()),
                }
            })
            .transpose()?;
        // One more than asked for tells whether a next page exists.
        let query = AuditQuery {
            filter,
            after,
            offset,
            limit: per_page + 1,
        };
        let found = self.repo.list_audit_events(&query).await?;
        Ok(cursors.listing(found, &position, per_page, |event| {
            vec![unix_millis(event.at).to_string(), event.id.to_string()]
        }))
    }

    /// Removes the events older than the retention period; how many.
    pub async fn sweep(&self) -> Result<u64, ServiceError> {
        let before = domain::now() - self.retention;
        Ok(self.repo.delete_audit_events_before(before).await?)
    }
}

/// What a cursor is bound to: the filter it was made under.
fn binding(filter: &AuditFilter) -> String {
    format!(
        "audit|{:?}|{:?}|{:?}|{:?}|{:?}",
        filter.user_id.map(|id| id.to_hex()),
        filter.subject_id.map(|id| id.to_hex()),
        filter.kind.map(EventKind::as_str),
        filter.since.map(unix_millis),
        filter.until.map(unix_millis),
    )
}
