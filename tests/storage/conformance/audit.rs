//! The audit log: written once per event, listed newest first, filtered, paged two ways and
//! pruned by age.

use std::net::IpAddr;

use serde_json::json;
use user_service::domain::{
    AuditEvent, AuditFilter, AuditQuery, EventDetails, EventId, EventKind, Page,
};

use super::*;

/// An event with no origin and no details.
fn event(
    kind: EventKind,
    at: OffsetDateTime,
    actor_id: Option<UserId>,
    subject_id: Option<UserId>,
) -> AuditEvent {
    AuditEvent {
        id: EventId::generate(),
        at,
        kind,
        actor_id,
        subject_id,
        origin: Origin::default(),
        details: EventDetails::new(),
    }
}

async fn record(repo: &DynRepository, event: &AuditEvent) {
    repo.insert_audit_event(event)
        .await
        .unwrap_or_else(|e| panic!("insert_audit_event {}: {e:?}", event.id));
}

/// Every event the filter selects, on one page.
fn all(filter: AuditFilter) -> AuditQuery {
    AuditQuery {
        filter,
        after: None,
        offset: 0,
        limit: 100,
    }
}

async fn listing(repo: &DynRepository, query: &AuditQuery) -> Page<AuditEvent> {
    repo.list_audit_events(query)
        .await
        .unwrap_or_else(|e| panic!("list_audit_events {query:?}: {e:?}"))
}

fn event_ids(events: &[AuditEvent]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

/// The order the contract promises: newest first, ties on `at` broken by id, descending.
fn newest_first(events: &[&AuditEvent]) -> Vec<EventId> {
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| std::cmp::Reverse((e.at, e.id)));
    sorted.into_iter().map(|e| e.id).collect()
}

/// The ids the filter selects, in the order listed; checks that `total` agrees.
async fn selected(repo: &DynRepository, filter: AuditFilter) -> Vec<EventId> {
    let page = listing(repo, &all(filter.clone())).await;
    assert_eq!(
        page.total,
        page.items.len() as u64,
        "total disagrees with the items for {filter:?}"
    );
    event_ids(&page.items)
}

/// Stores one event `seconds[i]` after [`moment`]`(0)` for each `i`, their ids generated in
/// the order of `i`, but inserted in an order that is neither that of the ids nor its
/// reverse: neither the order of insertion nor that of the ids may decide a listing.
async fn events_at(repo: &DynRepository, seconds: &[i64]) -> Vec<AuditEvent> {
    let ids: Vec<EventId> = seconds.iter().map(|_| EventId::generate()).collect();
    let n = seconds.len().max(1);
    let mut order: Vec<usize> = (0..seconds.len()).collect();
    order.sort_by_key(|&i| ((i * 3 + 1) % n, i));
    let mut events = Vec::new();
    for i in order {
        let e = AuditEvent {
            id: ids[i],
            ..event(EventKind::UserUpdated, moment(seconds[i]), None, None)
        };
        record(repo, &e).await;
        events.push(e);
    }
    events
}

pub async fn an_audit_event_round_trips_every_field(repo: DynRepository) {
    let (actor, subject) = (UserId::generate(), UserId::generate());
    let ip: IpAddr = "203.0.113.9".parse().expect("an IPv4 address");
    let details = match json!({
        "field": "email",
        "fields": ["name", "email"],
        "count": 3,
        "negative": -2,
        "ratio": 0.5,
        "flag": true,
        "nothing": null,
        "nested": { "reason": "bad_code", "depth": { "ok": false } },
        "unicode": "Élodie ✓ \"quoted\" \\ back",
    }) {
        serde_json::Value::Object(map) => map,
        _ => unreachable!(),
    };
    let full = AuditEvent {
        id: EventId::generate(),
        at: moment(10)
            .replace_nanosecond(123_456_789)
            .expect("a valid nanosecond"),
        kind: EventKind::UserUpdated,
        actor_id: Some(actor),
        subject_id: Some(subject),
        origin: Origin {
            ip: Some(ip),
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0".into()),
        },
        details,
    };
    let bare = AuditEvent {
        origin: Origin {
            ip: Some("2001:db8::42".parse().expect("an IPv6 address")),
            user_agent: None,
        },
        ..event(EventKind::LoginFailed, moment(5), None, None)
    };
    let nothing = event(EventKind::RefreshReused, moment(0), None, Some(subject));
    for e in [&full, &bare, &nothing] {
        record(&repo, e).await;
    }
    let page = listing(&repo, &all(AuditFilter::default())).await;
    assert_eq!(page.total, 3);
    assert_eq!(
        page.items,
        vec![
            AuditEvent {
                at: truncate_to_millis(full.at),
                ..full.clone()
            },
            bare,
            nothing
        ]
    );
    assert_millis(page.items[0].at, "at");

    // Every kind is stored and read back as itself.
    for (i, kind) in EventKind::ALL.iter().enumerate() {
        record(&repo, &event(*kind, moment(100 + i as i64), None, None)).await;
    }
    for kind in EventKind::ALL {
        let found = listing(
            &repo,
            &all(AuditFilter {
                kind: Some(*kind),
                since: Some(moment(100)),
                ..AuditFilter::default()
            }),
        )
        .await;
        assert_eq!(found.total, 1, "{kind}");
        assert_eq!(found.items[0].kind, *kind);
    }
}

pub async fn audit_filters_select_by_user_subject_kind_and_time(repo: DynRepository) {
    let (alice, bob, carol) = (UserId::generate(), UserId::generate(), UserId::generate());
    let e1 = event(
        EventKind::LoginSucceeded,
        moment(0),
        Some(alice),
        Some(alice),
    );
    // Alice, an admin, changes Bob.
    let e2 = event(EventKind::UserUpdated, moment(10), Some(alice), Some(bob));
    let e3 = event(EventKind::PasswordChanged, moment(20), Some(bob), Some(bob));
    // A failed login for a name that is nobody's.
    let e4 = event(EventKind::LoginFailed, moment(30), None, None);
    let e5 = event(EventKind::LoginFailed, moment(40), None, Some(carol));
    // Bob, an admin by now, deletes Carol.
    let e6 = event(EventKind::UserDeleted, moment(50), Some(bob), Some(carol));
    for e in [&e4, &e1, &e6, &e2, &e5, &e3] {
        record(&repo, e).await;
    }
    let cases: Vec<(&str, AuditFilter, Vec<&AuditEvent>)> = vec![
        (
            "everything",
            AuditFilter::default(),
            vec![&e1, &e2, &e3, &e4, &e5, &e6],
        ),
        (
            "user alice: actor or subject",
            AuditFilter {
                user_id: Some(alice),
                ..AuditFilter::default()
            },
            vec![&e1, &e2],
        ),
        (
            "user bob: subject of e2, both in e3, actor of e6",
            AuditFilter {
                user_id: Some(bob),
                ..AuditFilter::default()
            },
            vec![&e2, &e3, &e6],
        ),
        (
            "user carol",
            AuditFilter {
                user_id: Some(carol),
                ..AuditFilter::default()
            },
            vec![&e5, &e6],
        ),
        (
            "subject alice",
            AuditFilter {
                subject_id: Some(alice),
                ..AuditFilter::default()
            },
            vec![&e1],
        ),
        (
            "subject bob",
            AuditFilter {
                subject_id: Some(bob),
                ..AuditFilter::default()
            },
            vec![&e2, &e3],
        ),
        (
            "kind",
            AuditFilter {
                kind: Some(EventKind::LoginFailed),
                ..AuditFilter::default()
            },
            vec![&e4, &e5],
        ),
        (
            "a kind nobody did",
            AuditFilter {
                kind: Some(EventKind::MfaEnabled),
                ..AuditFilter::default()
            },
            vec![],
        ),
        (
            "since is inclusive",
            AuditFilter {
                since: Some(moment(20)),
                ..AuditFilter::default()
            },
            vec![&e3, &e4, &e5, &e6],
        ),
        (
            "until is exclusive",
            AuditFilter {
                until: Some(moment(20)),
                ..AuditFilter::default()
            },
            vec![&e1, &e2],
        ),
        (
            "since and until",
            AuditFilter {
                since: Some(moment(10)),
                until: Some(moment(40)),
                ..AuditFilter::default()
            },
            vec![&e2, &e3, &e4],
        ),
        (
            "an empty window",
            AuditFilter {
                since: Some(moment(20)),
                until: Some(moment(20)),
                ..AuditFilter::default()
            },
            vec![],
        ),
        (
            "user and kind",
            AuditFilter {
                user_id: Some(bob),
                kind: Some(EventKind::PasswordChanged),
                ..AuditFilter::default()
            },
            vec![&e3],
        ),
        (
            "user and subject",
            AuditFilter {
                user_id: Some(bob),
                subject_id: Some(carol),
                ..AuditFilter::default()
            },
            vec![&e6],
        ),
        (
            "user and time",
            AuditFilter {
                user_id: Some(alice),
                since: Some(moment(5)),
                ..AuditFilter::default()
            },
            vec![&e2],
        ),
        (
            "everything at once",
            AuditFilter {
                user_id: Some(carol),
                subject_id: Some(carol),
                kind: Some(EventKind::LoginFailed),
                since: Some(moment(40)),
                until: Some(moment(41)),
            },
            vec![&e5],
        ),
        (
            "a user nobody knows",
            AuditFilter {
                user_id: Some(UserId::generate()),
                ..AuditFilter::default()
            },
            vec![],
        ),
    ];
    for (what, filter, expected) in cases {
        assert_eq!(
            selected(&repo, filter).await,
            newest_first(&expected),
            "{what}"
        );
    }
}

pub async fn audit_events_are_newest_first_with_ties_broken_by_id(repo: DynRepository) {
    // Several events share an instant; the ids, not the order of insertion, decide among
    // them.
    let events = events_at(&repo, &[10, 10, 0, 10, 20, 0, 10, 20]).await;
    let expected = newest_first(&events.iter().collect::<Vec<_>>());
    assert_eq!(selected(&repo, AuditFilter::default()).await, expected);
    // A millisecond apart is apart: the later event comes first, whatever the ids.
    let late = event(
        EventKind::UserUpdated,
        moment(20) + time::Duration::milliseconds(1),
        None,
        None,
    );
    let early_high_id = event(
        EventKind::UserUpdated,
        moment(20) - time::Duration::milliseconds(1),
        None,
        None,
    );
    record(&repo, &early_high_id).await;
    record(&repo, &late).await;
    let listed = selected(&repo, AuditFilter::default()).await;
    assert_eq!(listed.first(), Some(&late.id));
    let mut with_both: Vec<&AuditEvent> = events.iter().collect();
    with_both.extend([&late, &early_high_id]);
    assert_eq!(listed, newest_first(&with_both));
}

pub async fn audit_events_page_by_offset_and_by_keyset_with_a_total_of_the_whole_filter(
    repo: DynRepository,
) {
    let events = events_at(&repo, &[0, 10, 10, 10, 20, 30, 30]).await;
    let all_ids = newest_first(&events.iter().collect::<Vec<_>>());
    let page = |after: Option<(OffsetDateTime, EventId)>, offset: u64, limit: u32| AuditQuery {
        filter: AuditFilter::default(),
        after,
        offset,
        limit,
    };

    // By offset.
    let mut seen = Vec::new();
    for (offset, size) in [(0, 3), (3, 3), (6, 1), (7, 0), (50, 0)] {
        let result = listing(&repo, &page(None, offset, 3)).await;
        assert_eq!(result.total, 7, "total at offset {offset}");
        assert_eq!(result.items.len(), size, "items at offset {offset}");
        seen.extend(event_ids(&result.items));
    }
    assert_eq!(
        seen, all_ids,
        "the pages together are the log, each event once"
    );
    let one = listing(&repo, &page(None, 2, 1)).await;
    assert_eq!(event_ids(&one.items), vec![all_ids[2]]);
    let none = listing(&repo, &page(None, 0, 0)).await;
    assert_eq!((none.items.len(), none.total), (0, 7), "a limit of 0");

    // By keyset: each page starts strictly after the last event of the one before, even
    // inside a run of events at one instant; the total ignores the position.
    let mut seen = Vec::new();
    let mut after = None;
    for size in [3, 3, 1, 0] {
        let result = listing(&repo, &page(after, 0, 3)).await;
        assert_eq!(result.total, 7, "the total ignores `after`");
        assert_eq!(result.items.len(), size);
        seen.extend(event_ids(&result.items));
        if let Some(last) = result.items.last() {
            after = Some((last.at, last.id));
        }
    }
    assert_eq!(seen, all_ids);

    // After an event inside a run at one instant: the rest of the run, then the older ones.
    let by_id = |i: usize| events.iter().find(|e| e.id == all_ids[i]).expect("listed");
    let middle = by_id(3);
    let result = listing(&repo, &page(Some((middle.at, middle.id)), 0, 100)).await;
    assert_eq!(event_ids(&result.items), all_ids[4..].to_vec());
    // A position needs no event at it.
    let result = listing(
        &repo,
        &page(Some((moment(25), EventId::generate())), 0, 100),
    )
    .await;
    assert_eq!(
        event_ids(&result.items),
        all_ids[2..].to_vec(),
        "after an instant between events"
    );
    // The keyset with an offset: skip within what follows the position.
    let result = listing(&repo, &page(Some((middle.at, middle.id)), 1, 2)).await;
    assert_eq!(event_ids(&result.items), all_ids[5..7].to_vec());
    assert_eq!(result.total, 7);

    // With a filter, the total counts the filter, still not the position.
    let filtered = |after| AuditQuery {
        filter: AuditFilter {
            since: Some(moment(10)),
            until: Some(moment(30)),
            ..AuditFilter::default()
        },
        after,
        offset: 0,
        limit: 2,
    };
    let first = listing(&repo, &filtered(None)).await;
    assert_eq!(first.total, 4);
    assert_eq!(event_ids(&first.items), all_ids[2..4].to_vec());
    let last = first.items.last().expect("a full page");
    let second = listing(&repo, &filtered(Some((last.at, last.id)))).await;
    assert_eq!(second.total, 4);
    assert_eq!(event_ids(&second.items), all_ids[4..6].to_vec());
}

pub async fn deleting_audit_events_before_a_time_removes_only_older_ones(repo: DynRepository) {
    let events = events_at(&repo, &[0, 5, 10, 10, 20]).await;
    let delete = |before: OffsetDateTime| {
        let repo = repo.clone();
        async move {
            repo.delete_audit_events_before(before)
                .await
                .expect("delete_audit_events_before")
        }
    };
    let kept = |from: i64| {
        newest_first(
            &events
                .iter()
                .filter(|e| e.at >= moment(from))
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        delete(moment(0)).await,
        0,
        "nothing is older than the oldest"
    );
    assert_eq!(delete(moment(10)).await, 2, "strictly before");
    assert_eq!(selected(&repo, AuditFilter::default()).await, kept(10));
    assert_eq!(delete(moment(10)).await, 0, "deleted already");
    assert_eq!(
        delete(moment(10) + time::Duration::milliseconds(1)).await,
        2
    );
    assert_eq!(selected(&repo, AuditFilter::default()).await, kept(11));
    assert_eq!(delete(moment(1000)).await, 1);
    assert_eq!(
        selected(&repo, AuditFilter::default()).await,
        Vec::<EventId>::new()
    );
}
