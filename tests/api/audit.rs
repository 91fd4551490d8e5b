//! The audit log: which flows write which events, with what in them (and nothing secret),
//! its filters and paging, and who may read what.

use std::{collections::HashSet, time::Duration};

use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{
    helpers::{PASSWORD, Reply, TestApp, spawn_app},
    mfa::{code_at, enable_mfa, first_step, login_mfa, wrong_code},
    sessions::{delete_path, sid_of},
};

// ---------------------------------------------------------------- helpers

async fn audit(app: &TestApp, query: &str, token: &str) -> Reply {
    app.get(&format!("/api/audit-events?{query}"), Some(token))
        .await
}

async fn own_audit(app: &TestApp, query: &str, token: &str) -> Reply {
    app.get(&format!("/api/users/me/audit-events?{query}"), Some(token))
        .await
}

/// Every event (up to 100), newest first, checking the page's and events' shape.
async fn all_events(app: &TestApp, admin: &str) -> Vec<Value> {
    let reply = audit(app, "per_page=100", admin).await;
    reply.assert_status(200);
    let page = reply.json();
    assert!(page["total"].as_u64().unwrap() <= 100, "too many events");
    let items = page["items"].as_array().unwrap().clone();
    assert_newest_first(&items);
    for item in &items {
        assert_event_shape(item);
    }
    items
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|event| event["type"] == kind)
        .collect()
}

/// The one event of a type about a subject (panics unless there is exactly one).
#[track_caller]
fn the_one<'a>(events: &'a [Value], kind: &str, subject: &str) -> &'a Value {
    let found: Vec<&Value> = of_type(events, kind)
        .into_iter()
        .filter(|event| event["subject_id"] == subject)
        .collect();
    assert_eq!(found.len(), 1, "{kind} about {subject}: {found:?}");
    found[0]
}

fn at(event: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(event["at"].as_str().expect("at"), &Rfc3339).expect("RFC 3339 at")
}

#[track_caller]
fn assert_newest_first(items: &[Value]) {
    for pair in items.windows(2) {
        assert!(
            at(&pair[0]) >= at(&pair[1]),
            "{} before {}",
            pair[0],
            pair[1]
        );
    }
}

#[track_caller]
fn assert_event_shape(event: &Value) {
    let mut keys: Vec<&str> = event
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "actor_id",
            "at",
            "details",
            "id",
            "ip",
            "subject_id",
            "type",
            "user_agent"
        ],
        "{event}"
    );
    let is_id = |value: &Value| {
        value.is_null()
            || value.as_str().is_some_and(|id| {
                id.len() == 24
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
    };
    assert!(event["id"].is_string(), "{event}");
    assert!(is_id(&event["actor_id"]), "{event}");
    assert!(is_id(&event["subject_id"]), "{event}");
    assert!(event["details"].is_object(), "{event}");
    at(event);
}

fn event_ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Registers with a `User-Agent` of our choosing; the new user's id.
async fn register_as_agent(app: &TestApp, name: &str, email: &str, agent: &str) -> String {
    let reply = Reply::from(
        app.client
            .post(app.url("/api/auth/register"))
            .header("user-agent", agent)
            .json(&json!({"name": name, "email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    reply.assert_status(201);
    reply.json()["id"].as_str().unwrap().to_owned()
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap()
}

// ---------------------------------------------------------------- what is recorded

#[tokio::test]
async fn registration_and_logins_are_recorded_with_the_contract_fields() {
    let app = spawn_app().await;
    let alice = register_as_agent(&app, "Alice", "alice@example.com", "audit-agent/1.0").await;
    app.login_email("nobody@example.com", "some password")
        .await
        .assert_problem(401);
    app.login_email("alice@example.com", "wrong password")
        .await
        .assert_problem(401);
    let session = app.login_session("alice@example.com", PASSWORD).await;
    let admin = app.admin_token().await;
    let events = all_events(&app, &admin).await;

    let registered = the_one(&events, "user.registered", &alice);
    assert_eq!(registered["actor_id"], Value::Null, "{registered}");
    assert_eq!(registered["ip"], "127.0.0.1", "{registered}");
    assert_eq!(registered["user_agent"], "audit-agent/1.0", "{registered}");

    let failed = of_type(&events, "login.failed");
    assert_eq!(failed.len(), 2, "{failed:?}");
    // Newest first: the wrong password, then the unknown address.
    assert_eq!(failed[0]["subject_id"], json!(alice), "{}", failed[0]);
    assert_eq!(failed[1]["subject_id"], Value::Null, "{}", failed[1]);
    for event in &failed {
        assert_eq!(event["actor_id"], Value::Null, "{event}");
        assert_eq!(event["ip"], "127.0.0.1", "{event}");
    }
    // The address tried is not a user: it is not named as one.
    let unknown = failed[1].to_string();
    assert!(!unknown.contains("some password"), "{unknown}");

    let succeeded = the_one(&events, "login.succeeded", &alice);
    assert_eq!(succeeded["actor_id"], Value::Null, "{succeeded}");
    assert_eq!(
        succeeded["details"]["session_id"],
        json!(sid_of(&session.access_token)),
        "{succeeded}"
    );
    // The admin's own login is there too.
    let admin_id = app.me(&admin).await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        of_type(&events, "login.succeeded")
            .iter()
            .any(|event| event["subject_id"] == admin_id),
        "{events:?}"
    );
}

#[tokio::test]
async fn an_admin_update_names_the_changed_fields_and_no_secret_appears_anywhere() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let admin = app.admin_session().await;
    let new_password = "an entirely new secret phrase";
    app.patch(
        &alice.id,
        &json!({"name": "Alice Liddell", "password": new_password, "username": "alice"}),
        &admin.access_token,
    )
    .await
    .assert_status(200);
    // More secrets in flight: a refresh, a reset request.
    let again = app.login_session("alice@example.com", new_password).await;
    let rotated = app.refresh(&again.refresh_token).await;
    rotated.assert_status(200);
    let events = all_events(&app, &admin.access_token).await;

    let updated = the_one(&events, "user.updated", &alice.id);
    assert_eq!(updated["actor_id"], json!(admin.id), "{updated}");
    let fields: HashSet<&str> = updated["details"]["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("no details.fields: {updated}"))
        .iter()
        .map(|field| field.as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        HashSet::from(["name", "password", "username"]),
        "{updated}"
    );
    let changed = the_one(&events, "password.changed", &alice.id);
    assert_eq!(changed["actor_id"], json!(admin.id), "{changed}");

    let text = serde_json::to_string(&events).unwrap();
    let rotated = rotated.json();
    for secret in [
        PASSWORD,
        new_password,
        ADMIN_SECRET,
        &alice.access_token,
        &alice.refresh_token,
        &again.access_token,
        &again.refresh_token,
        &admin.access_token,
        &admin.refresh_token,
        rotated["access_token"].as_str().unwrap(),
        rotated["refresh_token"].as_str().unwrap(),
    ] {
        assert!(
            !text.contains(secret),
            "{secret:?} in the audit log: {text}"
        );
    }
}

const ADMIN_SECRET: &str = crate::helpers::ADMIN_PASSWORD;

#[tokio::test]
async fn mfa_events_are_recorded_without_the_secret_or_codes() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let enrolled = enable_mfa(&app, &alice).await;
    let mfa_token = first_step(&app, "alice@example.com", PASSWORD).await;
    login_mfa(&app, &mfa_token, &wrong_code(&enrolled.totp))
        .await
        .assert_problem(401);
    let reply = login_mfa(&app, &mfa_token, &code_at(&enrolled.totp, 1)).await;
    reply.assert_status(200);
    let access = reply.json()["access_token"].as_str().unwrap().to_owned();
    let recovery = first_step(&app, "alice@example.com", PASSWORD).await;
    login_mfa(&app, &recovery, &enrolled.recovery_codes[0])
        .await
        .assert_status(200);
    app.post_json(
        "/api/users/me/mfa/disable",
        &json!({ "current_password": PASSWORD }),
        Some(&access),
    )
    .await
    .assert_status(204);
    let admin = app.admin_token().await;
    let events = all_events(&app, &admin).await;

    let enabled = the_one(&events, "mfa.enabled", &alice.id);
    assert_eq!(enabled["actor_id"], json!(alice.id), "{enabled}");
    let disabled = the_one(&events, "mfa.disabled", &alice.id);
    assert_eq!(disabled["actor_id"], json!(alice.id), "{disabled}");
    let failed = the_one(&events, "mfa.failed", &alice.id);
    assert_eq!(failed["details"]["stage"], "login", "{failed}");
    let wrong: Vec<&Value> = of_type(&events, "login.failed")
        .into_iter()
        .filter(|event| event["subject_id"] == alice.id)
        .collect();
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    let factors: Vec<&Value> = of_type(&events, "login.succeeded")
        .into_iter()
        .filter(|event| event["subject_id"] == alice.id)
        .map(|event| &event["details"]["second_factor"])
        .collect();
    // Newest first: the recovery code, the TOTP code, then the login before MFA.
    assert_eq!(
        factors,
        [&json!("recovery_code"), &json!("totp"), &Value::Null]
    );

    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(&enrolled.secret), "{text}");
    assert!(!text.contains(&mfa_token), "{text}");
    for code in &enrolled.recovery_codes {
        assert!(!text.contains(code.as_str()), "{code} in {text}");
    }
}

#[tokio::test]
async fn ended_sessions_and_refresh_reuse_are_recorded() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let second = app.login_session("alice@example.com", PASSWORD).await;
    let third = app.login_session("alice@example.com", PASSWORD).await;
    // Ended by id, by logout, by reuse of a rotated refresh token.
    let ended_by_id = sid_of(&alice.access_token);
    delete_path(
        &app,
        &format!("/api/users/me/sessions/{ended_by_id}"),
        &third.access_token,
    )
    .await
    .assert_status(204);
    app.logout(&second.refresh_token).await.assert_status(204);
    app.refresh(&third.refresh_token).await.assert_status(200);
    app.refresh(&third.refresh_token).await.assert_problem(401);
    let admin = app.admin_token().await;
    let events = all_events(&app, &admin).await;

    let reused = the_one(&events, "refresh.reused", &alice.id);
    assert_eq!(
        reused["details"]["session_id"],
        json!(sid_of(&third.access_token)),
        "{reused}"
    );
    let ended = of_type(&events, "session.ended");
    let by_id = ended
        .iter()
        .find(|event| event["details"]["session_id"] == ended_by_id)
        .unwrap_or_else(|| panic!("no session.ended for {ended_by_id}: {ended:?}"));
    assert_eq!(by_id["subject_id"], json!(alice.id), "{by_id}");
    assert_eq!(by_id["actor_id"], json!(alice.id), "{by_id}");
    let by_logout = ended
        .iter()
        .find(|event| event["details"]["session_id"] == sid_of(&second.access_token))
        .unwrap_or_else(|| panic!("no session.ended for the logout: {ended:?}"));
    assert_eq!(by_logout["subject_id"], json!(alice.id), "{by_logout}");
}

#[tokio::test]
async fn password_change_deactivation_and_deletion_are_recorded() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let new_password = "a fresh and long passphrase";
    app.patch(
        "me",
        &json!({"password": new_password, "current_password": PASSWORD}),
        &alice.access_token,
    )
    .await
    .assert_status(200);
    let admin = app.admin_session().await;
    app.deactivate(&alice.id, &admin.access_token)
        .await
        .assert_status(200);
    app.delete(&alice.id, &admin.access_token)
        .await
        .assert_status(204);
    let events = all_events(&app, &admin.access_token).await;

    let changed = the_one(&events, "password.changed", &alice.id);
    assert_eq!(changed["actor_id"], json!(alice.id), "{changed}");
    let updated = of_type(&events, "user.updated");
    assert!(
        updated.iter().any(|event| event["subject_id"] == alice.id
            && event["actor_id"] == alice.id
            && event["details"]["fields"] == json!(["password"])),
        "{updated:?}"
    );
    let deactivated = the_one(&events, "user.deactivated", &alice.id);
    assert_eq!(deactivated["actor_id"], json!(admin.id), "{deactivated}");
    let deleted = the_one(&events, "user.deleted", &alice.id);
    assert_eq!(deleted["actor_id"], json!(admin.id), "{deleted}");
    // Newest first: deleted, then deactivated, then the password change.
    let position = |event: &Value| events.iter().position(|e| e == event).unwrap();
    assert!(position(deleted) < position(deactivated));
    assert!(position(deactivated) < position(changed));
    // A password change ended the session that was live.
    let ended: Vec<&Value> = of_type(&events, "session.ended")
        .into_iter()
        .filter(|event| event["subject_id"] == alice.id)
        .collect();
    assert!(!ended.is_empty(), "no session.ended for alice");
    // The user's events outlive the user.
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(new_password));
}

// ---------------------------------------------------------------- filters

#[tokio::test]
async fn events_filter_by_type_user_and_time() {
    let app = spawn_app().await;
    let admin = app.admin_session().await;
    // Carol is an admin too: she acts on Bob, so she is an actor without being the subject.
    let carol = app.second_admin(&admin.access_token).await;
    let bob = app.register_and_login("Bob", "bob@example.com").await;
    app.login_email("bob@example.com", "wrong password")
        .await
        .assert_problem(401);
    app.login_email("nobody@example.com", "wrong password")
        .await
        .assert_problem(401);
    app.patch(&bob.id, &json!({"name": "Robert"}), &carol.access_token)
        .await
        .assert_status(200);

    // By type.
    let reply = audit(&app, "type=login.failed&per_page=100", &admin.access_token).await;
    reply.assert_status(200);
    let page = reply.json();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{page}");
    assert_eq!(page["total"], json!(2), "{page}");
    assert!(items.iter().all(|item| item["type"] == "login.failed"));

    // By user: as actor or subject.
    let reply = audit(
        &app,
        &format!("user_id={}&per_page=100", carol.id),
        &admin.access_token,
    )
    .await;
    reply.assert_status(200);
    let items = reply.json()["items"].as_array().unwrap().clone();
    assert!(
        items
            .iter()
            .all(|item| item["actor_id"] == carol.id || item["subject_id"] == carol.id),
        "{items:?}"
    );
    let kinds: HashSet<&str> = items
        .iter()
        .map(|item| item["type"].as_str().unwrap())
        .collect();
    assert!(kinds.contains("user.created"), "{kinds:?}");
    assert!(kinds.contains("login.succeeded"), "{kinds:?}");
    let on_bob = items
        .iter()
        .find(|item| item["type"] == "user.updated")
        .unwrap_or_else(|| panic!("carol's update of bob missing: {items:?}"));
    assert_eq!(on_bob["subject_id"], json!(bob.id));
    assert_eq!(on_bob["actor_id"], json!(carol.id));
    let all = all_events(&app, &admin.access_token).await;
    let expected = all
        .iter()
        .filter(|item| item["actor_id"] == carol.id || item["subject_id"] == carol.id)
        .count();
    assert_eq!(items.len(), expected);

    // Both: type and user.
    let reply = audit(
        &app,
        &format!("user_id={}&type=user.updated", bob.id),
        &admin.access_token,
    )
    .await;
    let items = reply.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{items:?}");

    // By time: `since` is inclusive, `until` exclusive.
    let pivot = the_one(&all, "user.updated", &bob.id);
    let pivot_at = pivot["at"].as_str().unwrap();
    let since = audit(
        &app,
        &format!("since={pivot_at}&per_page=100"),
        &admin.access_token,
    )
    .await;
    since.assert_status(200);
    let since = since.json()["items"].as_array().unwrap().clone();
    assert!(
        since.iter().any(|item| item["id"] == pivot["id"]),
        "{since:?}"
    );
    assert!(since.iter().all(|item| at(item) >= at(pivot)), "{since:?}");
    let until = audit(
        &app,
        &format!("until={pivot_at}&per_page=100"),
        &admin.access_token,
    )
    .await;
    until.assert_status(200);
    let until = until.json()["items"].as_array().unwrap().clone();
    assert!(until.iter().all(|item| at(item) < at(pivot)), "{until:?}");
    // Together they cover the log.
    let mut covered = event_ids(&since);
    covered.extend(event_ids(&until));
    covered.sort();
    let mut every = event_ids(&all);
    every.sort();
    assert_eq!(covered, every);

    // A window in the future is empty; one ending in the past before anything is too.
    let future = rfc3339(OffsetDateTime::now_utc() + time::Duration::hours(1));
    let reply = audit(&app, &format!("since={future}"), &admin.access_token).await;
    assert_eq!(reply.json()["items"], json!([]));
    assert_eq!(reply.json()["total"], json!(0));
    let reply = audit(
        &app,
        "since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z",
        &admin.access_token,
    )
    .await;
    reply.assert_status(200);
    assert_eq!(reply.json()["items"], json!([]));
}

#[tokio::test]
async fn a_time_window_selects_what_happened_in_it() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    app.register_user("Before", "before@example.com", None)
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let start = OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let inside = app
        .register_user("Inside", "inside@example.com", None)
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let end = OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.register_user("After", "after@example.com", None).await;
    let reply = audit(
        &app,
        &format!("since={}&until={}", rfc3339(start), rfc3339(end)),
        &admin,
    )
    .await;
    reply.assert_status(200);
    let items = reply.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["type"], "user.registered");
    assert_eq!(items[0]["subject_id"], json!(inside));
}

// ---------------------------------------------------------------- paging

/// Twelve failed logins for addresses that are nobody's, newest first: events enough to page.
async fn twelve_failures(app: &TestApp) {
    for i in 0..12 {
        app.login_email(&format!("ghost{i}@example.com"), "wrong password")
            .await
            .assert_problem(401);
    }
}

#[tokio::test]
async fn pages_by_number_cover_the_log_in_order() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    twelve_failures(&app).await;
    let all = all_events(&app, &admin).await;
    let total = all.len();
    assert!(total >= 13, "{total}");
    let mut paged = Vec::new();
    let pages = total.div_ceil(5);
    for page in 1..=pages {
        let reply = audit(&app, &format!("page={page}&per_page=5"), &admin).await;
        reply.assert_status(200);
        let body = reply.json();
        assert_eq!(body["page"], json!(page), "{body}");
        assert_eq!(body["per_page"], json!(5), "{body}");
        assert_eq!(body["total"], json!(total), "{body}");
        assert_eq!(body["total_pages"], json!(pages), "{body}");
        if page < pages {
            assert!(body["next_cursor"].is_string(), "{body}");
        } else {
            assert_eq!(body["next_cursor"], Value::Null, "{body}");
        }
        paged.extend(body["items"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(event_ids(&paged), event_ids(&all));
    // Past the end: empty.
    let reply = audit(&app, &format!("page={}&per_page=5", pages + 1), &admin).await;
    reply.assert_status(200);
    assert_eq!(reply.json()["items"], json!([]));
    // The default page size is 20.
    let reply = audit(&app, "", &admin).await;
    assert_eq!(reply.json()["per_page"], json!(20));
}

#[tokio::test]
async fn cursor_paging_is_stable_without_duplicates_while_events_are_added() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    twelve_failures(&app).await;
    let all = all_events(&app, &admin).await;
    let reply = audit(&app, "per_page=4", &admin).await;
    reply.assert_status(200);
    let mut body = reply.json();
    let mut walked = event_ids(body["items"].as_array().unwrap());
    let mut pages = 1;
    // New events while paging: they are newer than the cursor, so they do not show up
    // on later pages nor push earlier ones onto them.
    app.login_email("late@example.com", "wrong password")
        .await
        .assert_problem(401);
    app.register_user("Late", "late@example.com", None).await;
    while let Some(cursor) = body["next_cursor"].as_str() {
        let reply = audit(&app, &format!("per_page=4&after={cursor}"), &admin).await;
        reply.assert_status(200);
        body = reply.json();
        assert_eq!(body["page"], Value::Null, "{body}");
        assert_eq!(body["per_page"], json!(4), "{body}");
        let items = body["items"].as_array().unwrap();
        assert!(items.len() <= 4, "{body}");
        walked.extend(event_ids(items));
        pages += 1;
        assert!(pages < 50, "paging does not end");
    }
    assert_eq!(body["next_cursor"], Value::Null);
    let distinct: HashSet<&String> = walked.iter().collect();
    assert_eq!(distinct.len(), walked.len(), "duplicates: {walked:?}");
    assert_eq!(walked, event_ids(&all));
}

#[tokio::test]
async fn a_cursor_pages_within_its_filter() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    twelve_failures(&app).await;
    let first = audit(&app, "type=login.failed&per_page=5", &admin).await;
    first.assert_status(200);
    let first = first.json();
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let mut walked = event_ids(first["items"].as_array().unwrap());
    let mut next = Some(cursor);
    while let Some(cursor) = next {
        let reply = audit(
            &app,
            &format!("type=login.failed&per_page=5&after={cursor}"),
            &admin,
        )
        .await;
        reply.assert_status(200);
        let body = reply.json();
        let items = body["items"].as_array().unwrap();
        assert!(items.iter().all(|item| item["type"] == "login.failed"));
        walked.extend(event_ids(items));
        next = body["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(walked.len(), 12, "{walked:?}");
}

// ---------------------------------------------------------------- bad queries and access

#[tokio::test]
async fn bad_audit_queries_are_400() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    twelve_failures(&app).await;
    let page = audit(&app, "type=login.failed&per_page=5", &admin)
        .await
        .json();
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let bad = [
        // A cursor made under other filters.
        format!("after={cursor}&per_page=5"),
        format!("type=user.registered&after={cursor}&per_page=5"),
        format!("type=login.failed&since=2000-01-01T00:00:00Z&after={cursor}&per_page=5"),
        // `page` and `after` together.
        format!("type=login.failed&page=2&after={cursor}&per_page=5"),
        "page=1&after=abc".to_owned(),
        "after=not-a-cursor".to_owned(),
        "since=yesterday".to_owned(),
        "since=2026-13-01T00:00:00Z".to_owned(),
        "until=2026-01-01".to_owned(),
        "type=user.exploded".to_owned(),
        "user_id=nope".to_owned(),
        "page=0".to_owned(),
        "page=x".to_owned(),
        "per_page=0".to_owned(),
        "per_page=101".to_owned(),
    ];
    for query in bad {
        let reply = audit(&app, &query, &admin).await;
        reply.assert_problem(400);
    }
    // The same cursor with its own filters is fine.
    audit(
        &app,
        &format!("type=login.failed&after={cursor}&per_page=5"),
        &admin,
    )
    .await
    .assert_status(200);
}

#[tokio::test]
async fn only_admins_read_the_whole_log() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    audit(&app, "", &alice.access_token)
        .await
        .assert_problem(403);
    app.get("/api/audit-events", None).await.assert_problem(401);
    app.get("/api/users/me/audit-events", None)
        .await
        .assert_problem(401);
}

#[tokio::test]
async fn users_see_only_the_events_about_themselves() {
    let app = spawn_app().await;
    let alice = app.register_and_login("Alice", "alice@example.com").await;
    let bob = app.register_and_login("Bob", "bob@example.com").await;
    app.login_email("bob@example.com", "wrong password")
        .await
        .assert_problem(401);
    app.login_email("alice@example.com", "wrong password")
        .await
        .assert_problem(401);
    let admin = app.admin_session().await;
    app.patch(&alice.id, &json!({"name": "Alice L"}), &admin.access_token)
        .await
        .assert_status(200);

    let reply = own_audit(&app, "per_page=100", &alice.access_token).await;
    reply.assert_status(200);
    let page = reply.json();
    let items = page["items"].as_array().unwrap().clone();
    assert_newest_first(&items);
    for item in &items {
        assert_event_shape(item);
        assert_eq!(item["subject_id"], json!(alice.id), "{item}");
    }
    assert_eq!(page["total"], json!(items.len()));
    let kinds: Vec<&str> = items
        .iter()
        .map(|item| item["type"].as_str().unwrap())
        .collect();
    // Newest first: the admin's update, the failed login, the login, the registration.
    assert_eq!(
        kinds,
        [
            "user.updated",
            "login.failed",
            "login.succeeded",
            "user.registered"
        ],
        "{items:?}"
    );
    assert_eq!(items[0]["actor_id"], json!(admin.id));
    // The same as the admin sees about her.
    let all = all_events(&app, &admin.access_token).await;
    let about_alice: Vec<Value> = all
        .into_iter()
        .filter(|event| event["subject_id"] == alice.id)
        .collect();
    assert_eq!(event_ids(&items), event_ids(&about_alice));

    // Filters and paging work on one's own events as well.
    let reply = own_audit(&app, "type=login.failed", &alice.access_token).await;
    let items = reply.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{items:?}");
    let reply = own_audit(&app, "per_page=2", &alice.access_token).await;
    let body = reply.json();
    let cursor = body["next_cursor"].as_str().unwrap();
    let next = own_audit(
        &app,
        &format!("per_page=2&after={cursor}"),
        &alice.access_token,
    )
    .await;
    next.assert_status(200);
    assert_eq!(
        event_ids(next.json()["items"].as_array().unwrap()),
        event_ids(&about_alice[2..4])
    );
    own_audit(&app, "since=yesterday", &alice.access_token)
        .await
        .assert_problem(400);
    // Bob's are his.
    let reply = own_audit(&app, "per_page=100", &bob.access_token).await;
    let items = reply.json()["items"].as_array().unwrap().clone();
    assert!(items.iter().all(|item| item["subject_id"] == bob.id));
    assert_eq!(items.len(), 3, "{items:?}");
}
