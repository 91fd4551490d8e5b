//! The contract of `Repository`, written once; `main.rs` runs it against every backend.
//!
//! The services decide every value a user holds, timestamps included; a backend stores
//! exactly what it is given (at millisecond precision) and adds nothing of its own. So these
//! tests give the backends timestamps that no clock would produce now (see [`moment`]): a
//! backend that wrote its own time, or moved a field the patch did not list, fails them.

mod audit;
mod idempotency;
mod mfa;
mod sessions;
mod versions;

pub use audit::*;
pub use idempotency::*;
pub use mfa::*;
pub use sessions::*;
pub use versions::*;

use std::{collections::HashSet, time::Duration};

use time::OffsetDateTime;
use user_service::{
    domain::{
        DisplayName, Email, ListQuery, Origin, Role, Session, SessionId, SortField, SortKey,
        SortOrder, User, UserCursor, UserField, UserFilter, UserId, UserPatch, Username, now,
        truncate_to_millis, unix_millis,
    },
    storage::{
        DynRepository, Imported, LoginAttempts, OneTimeTokenRecord, RefreshTokenRecord,
        RefreshTokenUse, StorageError, UniqueField, VerificationTokenRecord,
    },
};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn email(raw: &str) -> Email {
    Email::parse(raw).expect("test email is valid")
}

fn username(raw: &str) -> Username {
    Username::parse(raw).expect("test username is valid")
}

fn name(raw: &str) -> DisplayName {
    DisplayName::parse(raw).expect("test name is valid")
}

/// A fixed time `seconds` after 2023-11-14T22:13:20Z: never what a backend's own clock
/// would write today, so storing it proves the backend stored the value it was given.
fn moment(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000 + seconds).expect("a valid time")
}

/// A user as the services build one: a fresh id, every timestamp `now()`, never logged in.
fn new_user(display_name: &str, address: &str, handle: Option<&str>) -> User {
    let at = now();
    User {
        id: UserId::generate(),
        name: name(display_name),
        username: handle.map(username),
        email: email(address),
        role: Role::User,
        active: true,
        password_hash: format!("$2b$04$hash-of-{address}"),
        created_at: at,
        updated_at: at,
        last_login_at: None,
        password_changed_at: at,
        locked_until: None,
        email_verified: false,
        mfa_enabled: false,
    }
}

/// Stores `user` and returns it.
fn admin_user(display_name: &str, address: &str) -> User {
    User {
        role: Role::Admin,
        ..new_user(display_name, address, None)
    }
}

async fn active_admins(repo: &DynRepository) -> Vec<UserId> {
    let query = ListQuery {
        limit: 100,
        filter: UserFilter {
            role: Some(Role::Admin),
            active: Some(true),
            q: None,
        },
        ..ListQuery::default()
    };
    ids(&repo.list_users(&query).await.expect("list").items)
}

async fn insert(repo: &DynRepository, user: User) -> User {
    repo.create_user(&user)
        .await
        .unwrap_or_else(|e| panic!("create {}: {e:?}", user.email));
    user
}

async fn create(
    repo: &DynRepository,
    display_name: &str,
    address: &str,
    handle: Option<&str>,
) -> User {
    insert(repo, new_user(display_name, address, handle)).await
}

/// Applies `patch` to the user `id`, who exists, and returns the user as stored.
async fn update(repo: &DynRepository, id: &UserId, patch: UserPatch) -> User {
    repo.update_user(id, &patch)
        .await
        .unwrap_or_else(|e| panic!("update with {patch:?}: {e:?}"))
        .expect("the user exists")
}

async fn fetch(repo: &DynRepository, id: &UserId) -> User {
    repo.user_by_id(id)
        .await
        .expect("user_by_id")
        .expect("the user exists")
}

async fn user_count(repo: &DynRepository) -> u64 {
    repo.list_users(&ListQuery::default())
        .await
        .expect("list")
        .total
}

/// Long enough that two `now()` calls on either side of it differ at millisecond precision.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

fn assert_millis(t: OffsetDateTime, what: &str) {
    assert_eq!(
        t.nanosecond() % 1_000_000,
        0,
        "{what} ({t}) has sub-millisecond digits"
    );
}

fn assert_duplicate(result: Result<impl std::fmt::Debug, StorageError>, field: UniqueField) {
    match result {
        Err(StorageError::Duplicate(f)) if f == field => {}
        other => panic!("expected Duplicate({field:?}), got {other:?}"),
    }
}

/// A refresh token of `session_id` issued now, as the services issue one.
fn refresh(token_hash: &str, session_id: &SessionId, user_id: UserId) -> RefreshTokenRecord {
    let created_at = now();
    RefreshTokenRecord {
        token_hash: token_hash.to_owned(),
        session_id: session_id.clone(),
        user_id,
        created_at,
        expires_at: created_at + time::Duration::days(30),
    }
}

/// A session of `user_id` from `created_at` (also its last use) until `expires_at`.
fn session_of(user_id: UserId, created_at: OffsetDateTime, expires_at: OffsetDateTime) -> Session {
    Session {
        id: SessionId::generate(),
        user_id,
        created_at,
        last_used_at: created_at,
        expires_at,
        origin: Origin::default(),
    }
}

/// Starts a session of `user_id` now (a login), live for a day, and returns its id: refresh
/// tokens need one.
async fn start_session(repo: &DynRepository, user_id: UserId) -> SessionId {
    let at = now();
    let session = session_of(user_id, at, at + time::Duration::days(1));
    repo.create_session(&session).await.expect("create_session");
    session.id
}

fn reset(token_hash: &str, user_id: UserId) -> OneTimeTokenRecord {
    let created_at = now();
    OneTimeTokenRecord {
        token_hash: token_hash.to_owned(),
        user_id,
        created_at,
        expires_at: created_at + time::Duration::hours(1),
    }
}

fn ids(users: &[User]) -> Vec<UserId> {
    users.iter().map(|u| u.id).collect()
}

fn query(filter: UserFilter) -> ListQuery {
    ListQuery {
        limit: 100,
        filter,
        ..ListQuery::default()
    }
}

fn q(text: &str) -> UserFilter {
    UserFilter {
        q: Some(text.to_owned()),
        ..UserFilter::default()
    }
}

/// Ids of every user the query finds (on one page), in the order returned.
async fn listed(repo: &DynRepository, query: &ListQuery) -> Vec<UserId> {
    let page = repo.list_users(query).await.expect("list_users");
    ids(&page.items)
}

/// The same ids as a set, for filters where the order does not matter.
async fn found(repo: &DynRepository, filter: UserFilter) -> HashSet<UserId> {
    let page = repo
        .list_users(&query(filter.clone()))
        .await
        .expect("list_users");
    assert_eq!(
        page.total,
        page.items.len() as u64,
        "total disagrees with the items for {filter:?}"
    );
    page.items.iter().map(|u| u.id).collect()
}

fn set(users: &[&User]) -> HashSet<UserId> {
    users.iter().map(|u| u.id).collect()
}

/// The order the contract promises: by the key, ties broken by id, both in `order`.
fn expected_order<K: Ord>(
    users: &[User],
    order: SortOrder,
    key: impl Fn(&User) -> K,
) -> Vec<UserId> {
    let mut sorted: Vec<&User> = users.iter().collect();
    sorted.sort_by(|a, b| {
        let ordering = key(a)
            .cmp(&key(b))
            .then_with(|| a.id.to_hex().cmp(&b.id.to_hex()));
        match order {
            SortOrder::Ascending => ordering,
            SortOrder::Descending => ordering.reverse(),
        }
    });
    sorted.into_iter().map(|u| u.id).collect()
}

fn sorted_query(sort: SortField, order: SortOrder) -> ListQuery {
    ListQuery {
        limit: 100,
        sort,
        order,
        ..ListQuery::default()
    }
}

/// Lists `users` sorted by `sort` both ways, on one page and then page by page, and checks
/// both against `key` with ties broken by id.
async fn assert_sorted<K: Ord>(
    repo: &DynRepository,
    users: &[User],
    sort: SortField,
    per_page: u32,
    key: impl Fn(&User) -> K,
) {
    for order in [SortOrder::Ascending, SortOrder::Descending] {
        let expected = expected_order(users, order, &key);
        assert_eq!(
            listed(repo, &sorted_query(sort, order)).await,
            expected,
            "{sort:?} {order:?}"
        );
        let mut paged = Vec::new();
        for page in 0..(users.len() as u32).div_ceil(per_page) {
            paged.extend(
                listed(
                    repo,
                    &ListQuery {
                        offset: u64::from(page * per_page),
                        limit: per_page,
                        ..sorted_query(sort, order)
                    },
                )
                .await,
            );
        }
        assert_eq!(paged, expected, "paged, {sort:?} {order:?}");
        let by_cursor = walk_by_cursor(
            repo,
            &ListQuery {
                limit: per_page,
                ..sorted_query(sort, order)
            },
            users.len(),
            &format!("by cursor, {sort:?} {order:?}"),
        )
        .await;
        assert_eq!(ids(&by_cursor), expected, "by cursor, {sort:?} {order:?}");
    }
}

/// Every user `query` lists, a page at a time, each page strictly after the last user of
/// the page before; every page's total must be `total`.
async fn walk_by_cursor(
    repo: &DynRepository,
    query: &ListQuery,
    total: usize,
    what: &str,
) -> Vec<User> {
    let mut walked: Vec<User> = Vec::new();
    loop {
        let page = repo
            .list_users(&ListQuery {
                after: walked.last().map(|last| UserCursor {
                    key: SortKey::of(last, query.sort),
                    id: last.id,
                }),
                ..query.clone()
            })
            .await
            .expect("list");
        assert_eq!(page.total, total as u64, "{what}: total");
        if page.items.is_empty() {
            return walked;
        }
        walked.extend(page.items);
        assert!(walked.len() <= total, "{what}: no end");
    }
}

// ---------------------------------------------------------------------------------------
// Health
// ---------------------------------------------------------------------------------------

pub async fn ping_succeeds(repo: DynRepository) {
    repo.ping().await.expect("ping");
}

// ---------------------------------------------------------------------------------------
// Users: round trips
// ---------------------------------------------------------------------------------------

pub async fn created_user_round_trips_by_id_email_and_username(repo: DynRepository) {
    // Every timestamp different, so that a backend mixing up columns or writing its own
    // time fails.
    let given = User {
        id: UserId::generate(),
        name: name("Mario Rossi"),
        username: Some(username("Mario.Rossi_1")),
        email: email("Mario.Rossi@Example.com"),
        role: Role::Admin,
        active: false,
        password_hash: "$2b$12$abcdefghijklmnopqrstuu5Hq3K1Zxj2hQ9v6k5q0m1o2p3q4r5s6".into(),
        created_at: moment(0),
        updated_at: moment(60),
        last_login_at: Some(moment(120)),
        password_changed_at: moment(30),
        locked_until: Some(moment(90)),
        email_verified: true,
        mfa_enabled: false,
    };
    repo.create_user(&given).await.expect("create");

    assert_eq!(fetch(&repo, &given.id).await, given);
    for address in [
        "mario.rossi@example.com",
        "MARIO.ROSSI@EXAMPLE.COM",
        " Mario.Rossi@example.COM ",
    ] {
        let by_email = repo
            .user_by_email(&email(address))
            .await
            .expect("user_by_email");
        assert_eq!(by_email.as_ref(), Some(&given), "looked up as {address:?}");
    }
    for handle in ["Mario.Rossi_1", "mario.rossi_1", "MARIO.ROSSI_1"] {
        let by_username = repo
            .user_by_username(&username(handle))
            .await
            .expect("user_by_username");
        assert_eq!(
            by_username
                .as_ref()
                .map(|u| u.username.as_ref().map(Username::as_str)),
            Some(Some("Mario.Rossi_1")),
            "the display case of the username is kept; looked up as {handle:?}"
        );
        assert_eq!(
            by_username.as_ref(),
            Some(&given),
            "looked up as {handle:?}"
        );
    }

    // A plain user (no username, never logged in) round-trips too.
    let plain = create(&repo, "Plain", "plain@example.com", None).await;
    assert_eq!(fetch(&repo, &plain.id).await, plain);
    assert_eq!(
        repo.user_by_email(&plain.email).await.expect("by email"),
        Some(plain)
    );
}

pub async fn lookups_of_unknown_users_return_none(repo: DynRepository) {
    create(&repo, "Someone", "someone@example.com", Some("someone")).await;
    assert_eq!(
        repo.user_by_id(&UserId::generate()).await.expect("by id"),
        None
    );
    assert_eq!(
        repo.user_by_email(&email("nobody@example.com"))
            .await
            .expect("by email"),
        None
    );
    assert_eq!(
        repo.user_by_username(&username("nobody"))
            .await
            .expect("by username"),
        None
    );
}

pub async fn timestamps_are_stored_with_millisecond_precision(repo: DynRepository) {
    // Times with sub-millisecond digits come back truncated to the millisecond.
    let precise = |seconds: i64| {
        moment(seconds)
            .replace_nanosecond(123_456_789)
            .expect("a valid nanosecond")
    };
    let user = User {
        created_at: precise(0),
        updated_at: precise(1),
        password_changed_at: precise(2),
        last_login_at: Some(precise(3)),
        ..new_user("Timely", "timely@example.com", None)
    };
    repo.create_user(&user).await.expect("create");
    let stored = fetch(&repo, &user.id).await;
    assert_eq!(
        stored,
        User {
            created_at: truncate_to_millis(precise(0)),
            updated_at: truncate_to_millis(precise(1)),
            password_changed_at: truncate_to_millis(precise(2)),
            last_login_at: Some(truncate_to_millis(precise(3))),
            ..user.clone()
        }
    );
    assert_millis(stored.created_at, "created_at");
    assert_millis(stored.updated_at, "updated_at");
    assert_millis(stored.password_changed_at, "password_changed_at");

    // Through an update as well, both in what it returns and in what it stored.
    let updated = update(
        &repo,
        &user.id,
        UserPatch::new()
            .set(UserField::UpdatedAt(precise(10)))
            .set(UserField::PasswordChangedAt(precise(11)))
            .set(UserField::LastLoginAt(precise(12))),
    )
    .await;
    assert_eq!(
        updated,
        User {
            updated_at: truncate_to_millis(precise(10)),
            password_changed_at: truncate_to_millis(precise(11)),
            last_login_at: Some(truncate_to_millis(precise(12))),
            ..stored
        }
    );
    assert_eq!(fetch(&repo, &user.id).await, updated);

    // Token timestamps too.
    let session_id = start_session(&repo, user.id).await;
    let record = RefreshTokenRecord {
        token_hash: "precise-token".into(),
        session_id,
        user_id: user.id,
        created_at: precise(0),
        expires_at: precise(0) + time::Duration::days(1),
    };
    repo.insert_refresh_token(record.clone())
        .await
        .expect("insert");
    match repo
        .use_refresh_token("precise-token", now())
        .await
        .expect("use")
    {
        RefreshTokenUse::Spent(spent) => assert_eq!(
            spent,
            RefreshTokenRecord {
                created_at: truncate_to_millis(record.created_at),
                expires_at: truncate_to_millis(record.expires_at),
                ..record
            }
        ),
        other => panic!("expected Spent, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Users: uniqueness
// ---------------------------------------------------------------------------------------

pub async fn create_rejects_an_email_taken_in_another_case(repo: DynRepository) {
    create(&repo, "First", "taken@example.com", None).await;
    let refused = new_user("Second", "TAKEN@Example.COM", None);
    assert_duplicate(repo.create_user(&refused).await, UniqueField::Email);
    // The refused user was not created.
    assert_eq!(repo.user_by_id(&refused.id).await.expect("by id"), None);
    assert_eq!(user_count(&repo).await, 1);
}

pub async fn update_rejects_an_email_taken_by_another_user(repo: DynRepository) {
    let first = create(&repo, "First", "first@example.com", None).await;
    let second = create(&repo, "Second", "second@example.com", None).await;
    assert_duplicate(
        repo.update_user(
            &second.id,
            &UserPatch::new()
                .set(UserField::Name(name("Changed")))
                .set(UserField::Email(email("FIRST@example.com")))
                .set(UserField::UpdatedAt(moment(0))),
        )
        .await,
        UniqueField::Email,
    );
    // The refused update wrote nothing, not even the other fields of its patch.
    assert_eq!(fetch(&repo, &second.id).await, second);
    assert_eq!(fetch(&repo, &first.id).await, first);
    // Setting one's own email again is no conflict.
    let same = update(
        &repo,
        &second.id,
        UserPatch::new().set(UserField::Email(email("Second@Example.com"))),
    )
    .await;
    assert_eq!(same, second);
}

pub async fn create_rejects_a_username_taken_in_another_case(repo: DynRepository) {
    create(&repo, "First", "first@example.com", Some("Mario")).await;
    for handle in ["Mario", "mario", "MARIO", "mArIo"] {
        let refused = new_user("Second", "second@example.com", Some(handle));
        assert_duplicate(repo.create_user(&refused).await, UniqueField::Username);
        assert_eq!(repo.user_by_id(&refused.id).await.expect("by id"), None);
    }
    assert_eq!(user_count(&repo).await, 1);
}

pub async fn update_rejects_a_username_taken_by_another_user(repo: DynRepository) {
    create(&repo, "First", "first@example.com", Some("Mario")).await;
    let second = create(&repo, "Second", "second@example.com", Some("luigi")).await;
    let third = create(&repo, "Third", "third@example.com", None).await;
    for user in [&second, &third] {
        assert_duplicate(
            repo.update_user(
                &user.id,
                &UserPatch::new()
                    .set(UserField::Username(Some(username("MARIO"))))
                    .set(UserField::UpdatedAt(moment(0))),
            )
            .await,
            UniqueField::Username,
        );
        assert_eq!(&fetch(&repo, &user.id).await, user);
    }
}

pub async fn duplicates_name_the_taken_field_when_both_unique_fields_are_written(
    repo: DynRepository,
) {
    let mario = create(&repo, "Mario", "mario@example.com", Some("mario")).await;
    let luigi = create(&repo, "Luigi", "luigi@example.com", Some("luigi")).await;

    // A create with a free email and a taken username, and the other way round.
    assert_duplicate(
        repo.create_user(&new_user("New", "free@example.com", Some("MARIO")))
            .await,
        UniqueField::Username,
    );
    assert_duplicate(
        repo.create_user(&new_user("New", "MARIO@example.com", Some("free-name")))
            .await,
        UniqueField::Email,
    );

    // An update likewise, whichever order the patch lists the fields in.
    let taken_username = [
        UserField::Email(email("free@example.com")),
        UserField::Username(Some(username("Mario"))),
    ];
    let taken_email = [
        UserField::Email(email("Mario@Example.com")),
        UserField::Username(Some(username("free-name"))),
    ];
    for (fields, field) in [
        (taken_username, UniqueField::Username),
        (taken_email, UniqueField::Email),
    ] {
        for reversed in [false, true] {
            let mut fields = fields.to_vec();
            if reversed {
                fields.reverse();
            }
            let patch = fields.into_iter().fold(UserPatch::new(), UserPatch::set);
            assert_duplicate(repo.update_user(&luigi.id, &patch).await, field);
        }
    }

    // Nothing was written.
    assert_eq!(fetch(&repo, &mario.id).await, mario);
    assert_eq!(fetch(&repo, &luigi.id).await, luigi);
    assert_eq!(user_count(&repo).await, 2);
    assert_eq!(
        repo.user_by_email(&email("free@example.com"))
            .await
            .expect("by email"),
        None
    );
    assert_eq!(
        repo.user_by_username(&username("free-name"))
            .await
            .expect("by username"),
        None
    );
}

pub async fn a_user_may_change_the_case_of_their_own_username(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", Some("mario")).await;
    let updated = update(
        &repo,
        &user.id,
        UserPatch::new().set(UserField::Username(Some(username("MaRiO")))),
    )
    .await;
    assert_eq!(
        updated,
        User {
            username: Some(username("MaRiO")),
            ..user
        }
    );
    let by_username = repo
        .user_by_username(&username("mario"))
        .await
        .expect("by username");
    assert_eq!(by_username, Some(updated));
}

pub async fn many_users_without_username_coexist(repo: DynRepository) {
    for i in 0..4 {
        create(&repo, "Anonymous", &format!("anon{i}@example.com"), None).await;
    }
    // Clearing usernames leaves several users without one as well.
    for i in 0..2 {
        let user = create(
            &repo,
            "Named",
            &format!("named{i}@example.com"),
            Some(&format!("named{i}")),
        )
        .await;
        let cleared = repo
            .update_user(&user.id, &UserPatch::new().set(UserField::Username(None)))
            .await
            .expect("clearing a username never conflicts")
            .expect("exists");
        assert_eq!(cleared.username, None);
    }
    assert_eq!(user_count(&repo).await, 6);
}

/// Through two handles on one database, as two service instances would write.
pub async fn concurrent_creates_with_one_email_yield_exactly_one_user(
    repo: DynRepository,
    twin: DynRepository,
) {
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let repo = if i % 2 == 0 {
                repo.clone()
            } else {
                twin.clone()
            };
            // The same address in many spellings of case.
            let address: String = "race@example.com"
                .chars()
                .enumerate()
                .map(|(j, c)| {
                    if (i >> (j % 6)) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            tokio::spawn(async move {
                let user = new_user(&format!("Racer {i}"), &address, None);
                let result = repo.create_user(&user).await;
                (user, result)
            })
        })
        .collect();
    let mut created = Vec::new();
    let mut duplicates = 0;
    for task in tasks {
        match task.await.expect("task") {
            (user, Ok(())) => created.push(user),
            (_, Err(StorageError::Duplicate(UniqueField::Email))) => duplicates += 1,
            (_, Err(other)) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!(created.len(), 1, "exactly one create wins");
    assert_eq!(duplicates, 49);
    assert_eq!(user_count(&repo).await, 1);
    let stored = repo
        .user_by_email(&email("race@example.com"))
        .await
        .expect("by email");
    assert_eq!(stored, created.pop());
}

// ---------------------------------------------------------------------------------------
// Users: updates
// ---------------------------------------------------------------------------------------

pub async fn partial_update_stores_only_the_given_fields(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", Some("mario")).await;
    // An active admin besides `user`, so that `user` may be deactivated below.
    let other = insert(&repo, admin_user("Other", "other@example.com")).await;
    // Any time a backend took from its clock now would differ from the stored ones.
    tick().await;

    // Without UpdatedAt in the patch, updated_at stays as it was.
    let renamed = update(
        &repo,
        &user.id,
        UserPatch::new().set(UserField::Name(name("Mario Rossi"))),
    )
    .await;
    assert_eq!(
        renamed,
        User {
            name: name("Mario Rossi"),
            ..user.clone()
        }
    );
    assert_eq!(fetch(&repo, &user.id).await, renamed);
    tick().await;

    // With it, exactly the value given is stored, even one earlier than before.
    let promoted = update(
        &repo,
        &user.id,
        UserPatch::new()
            .set(UserField::Role(Role::Admin))
            .set(UserField::UpdatedAt(moment(0))),
    )
    .await;
    assert_eq!(
        promoted,
        User {
            role: Role::Admin,
            updated_at: moment(0),
            ..renamed.clone()
        }
    );
    assert_eq!(fetch(&repo, &user.id).await, promoted);
    tick().await;

    let deactivated = update(
        &repo,
        &user.id,
        UserPatch::new().set(UserField::Active(false)),
    )
    .await;
    assert_eq!(
        deactivated,
        User {
            active: false,
            ..promoted.clone()
        }
    );
    assert_eq!(fetch(&repo, &user.id).await, deactivated);
    tick().await;

    // An empty patch writes nothing and returns the user.
    let untouched = update(&repo, &user.id, UserPatch::new()).await;
    assert_eq!(untouched, deactivated);
    assert_eq!(fetch(&repo, &user.id).await, deactivated);

    // The other user was left alone.
    assert_eq!(fetch(&repo, &other.id).await, other);
}

pub async fn full_update_round_trips_every_field(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", Some("mario")).await;
    let patch = UserPatch::new()
        .set(UserField::Name(name("Luigi Verdi")))
        .set(UserField::Username(Some(username("Luigi"))))
        .set(UserField::Email(email("Luigi@Example.com")))
        .set(UserField::Role(Role::Admin))
        .set(UserField::Active(false))
        .set(UserField::PasswordHash("new-hash".into()))
        .set(UserField::PasswordChangedAt(moment(10)))
        .set(UserField::UpdatedAt(moment(20)))
        .set(UserField::LastLoginAt(moment(30)))
        .set(UserField::LockedUntil(Some(moment(40))))
        .set(UserField::EmailVerified(true));
    // Every kind of field is in the patch: a new kind fails to compile here until it is
    // added above (and counted).
    for field in patch.fields() {
        match field {
            UserField::Name(_)
            | UserField::Username(_)
            | UserField::Email(_)
            | UserField::Role(_)
            | UserField::Active(_)
            | UserField::PasswordHash(_)
            | UserField::PasswordChangedAt(_)
            | UserField::UpdatedAt(_)
            | UserField::LastLoginAt(_)
            | UserField::LockedUntil(_)
            | UserField::EmailVerified(_) => {}
        }
    }
    assert_eq!(patch.fields().len(), 11);

    let updated = update(&repo, &user.id, patch).await;
    let expected = User {
        id: user.id,
        name: name("Luigi Verdi"),
        username: Some(username("Luigi")),
        email: email("luigi@example.com"),
        role: Role::Admin,
        active: false,
        password_hash: "new-hash".into(),
        created_at: user.created_at,
        updated_at: moment(20),
        last_login_at: Some(moment(30)),
        password_changed_at: moment(10),
        locked_until: Some(moment(40)),
        email_verified: true,
        mfa_enabled: false,
    };
    assert_eq!(updated, expected);
    assert_eq!(fetch(&repo, &user.id).await, expected);

    let by_email = repo
        .user_by_email(&email("luigi@example.com"))
        .await
        .expect("by email");
    assert_eq!(by_email.as_ref(), Some(&expected));
    let by_username = repo
        .user_by_username(&username("LUIGI"))
        .await
        .expect("by username");
    assert_eq!(by_username.as_ref(), Some(&expected));
    // The old email and username no longer find anyone, and are free again.
    assert_eq!(
        repo.user_by_email(&email("mario@example.com"))
            .await
            .expect("by email"),
        None
    );
    assert_eq!(
        repo.user_by_username(&username("mario"))
            .await
            .expect("by username"),
        None
    );
    create(&repo, "New Mario", "mario@example.com", Some("Mario")).await;
}

pub async fn update_with_username_none_clears_it_and_frees_it(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", Some("mario")).await;
    let cleared = update(
        &repo,
        &user.id,
        UserPatch::new().set(UserField::Username(None)),
    )
    .await;
    assert_eq!(
        cleared,
        User {
            username: None,
            ..user.clone()
        }
    );
    assert_eq!(fetch(&repo, &user.id).await, cleared);
    assert_eq!(
        repo.user_by_username(&username("mario"))
            .await
            .expect("by username"),
        None
    );
    // Clearing an absent username is no error either.
    assert_eq!(
        update(
            &repo,
            &user.id,
            UserPatch::new().set(UserField::Username(None))
        )
        .await,
        cleared
    );

    // The username is free: another user takes it by update, in another case...
    let other = create(&repo, "Other", "other@example.com", None).await;
    let taker = update(
        &repo,
        &other.id,
        UserPatch::new().set(UserField::Username(Some(username("MARIO")))),
    )
    .await;
    assert_eq!(
        taker,
        User {
            username: Some(username("MARIO")),
            ..other.clone()
        }
    );
    assert_eq!(
        repo.user_by_username(&username("mario"))
            .await
            .expect("by username"),
        Some(taker.clone())
    );

    // ... a patch without Username leaves it alone ...
    let kept = update(
        &repo,
        &other.id,
        UserPatch::new().set(UserField::Name(name("Still Mario"))),
    )
    .await;
    assert_eq!(kept.username, taker.username);

    // ... and once cleared again, a new user takes it on create.
    update(
        &repo,
        &other.id,
        UserPatch::new().set(UserField::Username(None)),
    )
    .await;
    let third = create(&repo, "Third", "third@example.com", Some("Mario")).await;
    assert_eq!(
        repo.user_by_username(&username("MARIO"))
            .await
            .expect("by username"),
        Some(third)
    );
}

pub async fn password_hash_update_stores_password_changed_at_only_when_given(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    tick().await;

    // Other changes do not move it.
    let renamed = update(
        &repo,
        &user.id,
        UserPatch::new().set(UserField::Name(name("Renamed"))),
    )
    .await;
    assert_eq!(renamed.password_changed_at, user.password_changed_at);
    tick().await;

    // Nor does a new hash on its own: the backend adds no timestamp.
    let rehashed = update(
        &repo,
        &user.id,
        UserPatch::new().set(UserField::PasswordHash("new-hash".into())),
    )
    .await;
    assert_eq!(
        rehashed,
        User {
            password_hash: "new-hash".into(),
            ..renamed.clone()
        }
    );
    assert_eq!(fetch(&repo, &user.id).await, rehashed);

    // A password change as the services write it: each timestamp as given.
    let changed = update(
        &repo,
        &user.id,
        UserPatch::new()
            .set(UserField::PasswordHash("newer-hash".into()))
            .set(UserField::PasswordChangedAt(moment(5)))
            .set(UserField::UpdatedAt(moment(7))),
    )
    .await;
    assert_eq!(
        changed,
        User {
            password_hash: "newer-hash".into(),
            password_changed_at: moment(5),
            updated_at: moment(7),
            ..rehashed
        }
    );
    assert_eq!(fetch(&repo, &user.id).await, changed);
}

pub async fn login_patch_sets_last_login_at_and_nothing_else(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    tick().await;
    let at = now();
    let logged_in = update(
        &repo,
        &user.id,
        UserPatch::new().set(UserField::LastLoginAt(at)),
    )
    .await;
    // updated_at in particular stays: a login is no change to the user.
    assert_eq!(
        logged_in,
        User {
            last_login_at: Some(at),
            ..user.clone()
        }
    );
    assert_eq!(fetch(&repo, &user.id).await, logged_in);

    // A later login replaces it; so does an earlier one: the backend does not compare.
    tick().await;
    let later = now();
    let again = update(
        &repo,
        &user.id,
        UserPatch::new().set(UserField::LastLoginAt(later)),
    )
    .await;
    assert_eq!(again.last_login_at, Some(later));
    let earlier = update(
        &repo,
        &user.id,
        UserPatch::new().set(UserField::LastLoginAt(moment(0))),
    )
    .await;
    assert_eq!(
        earlier,
        User {
            last_login_at: Some(moment(0)),
            ..user.clone()
        }
    );

    // A login patch for nobody finds nobody and creates nobody.
    assert_eq!(
        repo.update_user(
            &UserId::generate(),
            &UserPatch::new().set(UserField::LastLoginAt(later))
        )
        .await
        .expect("update of a missing user"),
        None
    );
    assert_eq!(user_count(&repo).await, 1);
}

pub async fn login_patch_stores_an_upgraded_hash_without_moving_timestamps(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    tick().await;
    let at = now();
    let stored = update(
        &repo,
        &user.id,
        UserPatch::new()
            .set(UserField::LastLoginAt(at))
            .set(UserField::PasswordHash("upgraded-hash".into())),
    )
    .await;
    // Neither updated_at nor password_changed_at moved: the password is the same one.
    assert_eq!(
        stored,
        User {
            last_login_at: Some(at),
            password_hash: "upgraded-hash".into(),
            ..user.clone()
        }
    );
    assert_eq!(fetch(&repo, &user.id).await, stored);
}

pub async fn update_of_a_missing_user_returns_none(repo: DynRepository) {
    create(&repo, "Mario", "mario@example.com", None).await;
    for patch in [
        UserPatch::new()
            .set(UserField::Name(name("Ghost")))
            .set(UserField::Email(email("ghost@example.com")))
            .set(UserField::Username(Some(username("ghost")))),
        UserPatch::new(),
    ] {
        let missing = repo
            .update_user(&UserId::generate(), &patch)
            .await
            .expect("update");
        assert_eq!(missing, None, "{patch:?}");
    }
    assert_eq!(user_count(&repo).await, 1);
    assert_eq!(
        repo.user_by_email(&email("ghost@example.com"))
            .await
            .expect("by email"),
        None
    );
}

// ---------------------------------------------------------------------------------------
// Users: deletion
// ---------------------------------------------------------------------------------------

pub async fn delete_removes_the_user_and_a_second_delete_returns_false(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", Some("mario")).await;
    let other = create(&repo, "Other", "other@example.com", None).await;
    assert!(repo.delete_user(&user.id).await.expect("delete"));
    assert_eq!(repo.user_by_id(&user.id).await.expect("by id"), None);
    assert_eq!(
        repo.user_by_email(&user.email).await.expect("by email"),
        None
    );
    assert_eq!(
        repo.user_by_username(&username("mario"))
            .await
            .expect("by username"),
        None
    );
    assert!(!repo.delete_user(&user.id).await.expect("second delete"));
    assert!(
        !repo
            .delete_user(&UserId::generate())
            .await
            .expect("delete of nobody")
    );
    assert_eq!(fetch(&repo, &other.id).await, other);
    // The email and username are free again.
    create(&repo, "New Mario", "mario@example.com", Some("mario")).await;
}

pub async fn delete_removes_the_users_refresh_and_reset_tokens(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let other = create(&repo, "Other", "other@example.com", None).await;
    let user_session = start_session(&repo, user.id).await;
    let other_session = start_session(&repo, other.id).await;
    for token in ["r-user", "r-user-spent"] {
        repo.insert_refresh_token(refresh(token, &user_session, user.id))
            .await
            .expect("insert");
    }
    // A token of a session that was ended (a logout).
    let ended_session = start_session(&repo, user.id).await;
    repo.insert_refresh_token(refresh("r-user-revoked", &ended_session, user.id))
        .await
        .expect("insert");
    repo.insert_refresh_token(refresh("r-other", &other_session, other.id))
        .await
        .expect("insert");
    repo.insert_reset_token(reset("p-user", user.id))
        .await
        .expect("insert");
    repo.insert_reset_token(reset("p-other", other.id))
        .await
        .expect("insert");
    assert!(matches!(
        repo.use_refresh_token("r-user-spent", now())
            .await
            .expect("use"),
        RefreshTokenUse::Spent(_)
    ));
    assert_eq!(
        repo.end_session_of_token("r-user-revoked", now())
            .await
            .expect("end the session of a token"),
        Some((user.id, ended_session))
    );

    assert!(repo.delete_user(&user.id).await.expect("delete"));

    // Gone, whatever state they were in: neither spent nor revoked, but unknown.
    for token in ["r-user", "r-user-spent", "r-user-revoked"] {
        assert_eq!(
            repo.use_refresh_token(token, now()).await.expect("use"),
            RefreshTokenUse::Unknown,
            "{token}"
        );
    }
    assert_eq!(consume(&repo, "p-user").await, None);
    // The other user's tokens still work.
    assert!(matches!(
        repo.use_refresh_token("r-other", now()).await.expect("use"),
        RefreshTokenUse::Spent(_)
    ));
    assert_eq!(consume(&repo, "p-other").await, Some(other.id));
}

/// Deleting a user takes their sessions, MFA state and challenges with them; the audit log
/// keeps what they did and underwent.
pub async fn delete_removes_the_users_sessions_and_mfa_but_keeps_their_audit_events(
    repo: DynRepository,
) {
    use user_service::{
        domain::{AuditEvent, AuditFilter, AuditQuery, EventDetails, EventId, EventKind, Secret},
        storage::{OneTimeTokenRecord, TotpState},
    };

    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let other = create(&repo, "Other", "other@example.com", None).await;
    let mut sessions = Vec::new();
    for (who, token) in [(&user, "r-user"), (&other, "r-other")] {
        let session = start_session(&repo, who.id).await;
        repo.insert_refresh_token(refresh(token, &session, who.id))
            .await
            .expect("insert");
        let key = Secret::new("JBSWY3DPEHPK3PXP");
        assert!(repo.set_pending_totp(&who.id, &key).await.expect("pending"));
        assert!(
            repo.enable_totp(&who.id, &key, 100, &["code".to_owned()], now())
                .await
                .expect("enable")
        );
        let at = now();
        repo.insert_mfa_challenge(OneTimeTokenRecord {
            token_hash: format!("challenge-{token}"),
            user_id: who.id,
            created_at: at,
            expires_at: at + time::Duration::minutes(5),
        })
        .await
        .expect("insert challenge");
        sessions.push(session);
    }
    let event = |kind: EventKind, actor: Option<UserId>, subject: Option<UserId>| AuditEvent {
        id: EventId::generate(),
        at: now(),
        kind,
        actor_id: actor,
        subject_id: subject,
        origin: Origin::default(),
        details: EventDetails::new(),
    };
    let events = [
        event(EventKind::LoginSucceeded, Some(user.id), Some(user.id)),
        event(EventKind::UserUpdated, Some(user.id), Some(other.id)),
        event(EventKind::UserDeleted, Some(other.id), Some(user.id)),
    ];
    for e in &events {
        repo.insert_audit_event(e).await.expect("insert event");
    }

    assert!(repo.delete_user(&user.id).await.expect("delete"));

    let at = now();
    assert_eq!(
        repo.user_with_session(&user.id, &sessions[0], at)
            .await
            .expect("user_with_session"),
        None
    );
    assert_eq!(
        repo.live_sessions(&user.id, at)
            .await
            .expect("live_sessions"),
        vec![]
    );
    assert!(
        !repo
            .end_session(&user.id, &sessions[0], at)
            .await
            .expect("end")
    );
    assert_eq!(
        repo.end_user_sessions(&user.id, at).await.expect("end all"),
        0
    );
    assert_eq!(
        repo.end_session_of_token("r-user", at).await.expect("end"),
        None
    );
    assert_eq!(repo.totp_state(&user.id).await.expect("totp_state"), None);
    assert!(
        !repo
            .use_recovery_code(&user.id, "code")
            .await
            .expect("use code")
    );
    assert!(!repo.claim_totp_step(&user.id, 200).await.expect("claim"));
    assert_eq!(
        repo.attempt_mfa_challenge("challenge-r-user", at, 5)
            .await
            .expect("attempt"),
        None
    );
    assert!(
        !repo
            .consume_mfa_challenge("challenge-r-user", at)
            .await
            .expect("consume")
    );

    // The events stay, found by the deleted user's id as actor or subject.
    let listed = repo
        .list_audit_events(&AuditQuery {
            filter: AuditFilter {
                user_id: Some(user.id),
                ..AuditFilter::default()
            },
            after: None,
            offset: 0,
            limit: 10,
        })
        .await
        .expect("list events");
    assert_eq!(listed.total, 3);
    let mut kept: Vec<EventId> = listed.items.iter().map(|e| e.id).collect();
    kept.sort();
    let mut given: Vec<EventId> = events.iter().map(|e| e.id).collect();
    given.sort();
    assert_eq!(kept, given);

    // The other user keeps everything.
    assert_eq!(
        repo.live_sessions(&other.id, at)
            .await
            .expect("live_sessions")
            .len(),
        1
    );
    let state = repo
        .totp_state(&other.id)
        .await
        .expect("totp_state")
        .expect("the other user exists");
    assert_eq!(
        state,
        TotpState {
            secret: Some(Secret::new("JBSWY3DPEHPK3PXP")),
            pending: None,
            last_step: Some(100),
        }
    );
    assert!(fetch(&repo, &other.id).await.mfa_enabled);
    assert_eq!(
        repo.attempt_mfa_challenge("challenge-r-other", at, 5)
            .await
            .expect("attempt"),
        Some(other.id)
    );
    assert!(
        repo.use_recovery_code(&other.id, "code")
            .await
            .expect("use code")
    );
    assert!(matches!(
        repo.use_refresh_token("r-other", at).await.expect("use"),
        RefreshTokenUse::Spent(_)
    ));
}

// ---------------------------------------------------------------------------------------
// Users: listing
// ---------------------------------------------------------------------------------------

pub async fn list_pages_with_a_total_independent_of_the_page(repo: DynRepository) {
    let mut users = Vec::new();
    for i in 0..7 {
        users.push(
            create(
                &repo,
                &format!("User {i}"),
                &format!("user{i}@example.com"),
                None,
            )
            .await,
        );
    }
    let all = expected_order(&users, SortOrder::Descending, |u| u.created_at);
    assert_eq!(
        listed(&repo, &ListQuery::default()).await,
        all,
        "default: newest first"
    );

    let mut seen = Vec::new();
    for (page, size) in [(1, 3), (2, 3), (3, 1), (4, 0), (9, 0)] {
        let q = ListQuery {
            offset: (page - 1) * 3,
            limit: 3,
            ..ListQuery::default()
        };
        let result = repo.list_users(&q).await.expect("list");
        assert_eq!(result.total, 7, "total on page {page}");
        assert_eq!(result.items.len(), size, "items on page {page}");
        seen.extend(ids(&result.items));
    }
    assert_eq!(
        seen, all,
        "the pages together are the whole list, each user once"
    );

    let one = repo
        .list_users(&ListQuery {
            offset: 1,
            limit: 1,
            ..ListQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(ids(&one.items), vec![all[1]]);
    assert_eq!(one.total, 7);
    // The listed users are complete records.
    let full = repo.list_users(&ListQuery::default()).await.expect("list");
    for user in &full.items {
        assert_eq!(user, &fetch(&repo, &user.id).await);
    }
}

pub async fn list_filters_by_q_on_name_email_and_username_ignoring_case(repo: DynRepository) {
    let by_name = create(&repo, "Giuseppe VERDI", "gv@example.com", None).await;
    let by_email = create(&repo, "Anna", "anna.verdi@example.com", None).await;
    let by_username = create(&repo, "Bruno", "bruno@example.com", Some("VerdiFan")).await;
    let none = create(&repo, "Carla Rossi", "carla@example.com", Some("carla")).await;

    let expected = set(&[&by_name, &by_email, &by_username]);
    for text in ["verdi", "VERDI", "Verdi", "vErDi"] {
        assert_eq!(found(&repo, q(text)).await, expected, "q = {text:?}");
    }
    assert_eq!(
        found(&repo, q("giuseppe v")).await,
        set(&[&by_name]),
        "substring with space"
    );
    assert_eq!(
        found(&repo, q("NA.VER")).await,
        set(&[&by_email]),
        "substring of email"
    );
    assert_eq!(
        found(&repo, q("difa")).await,
        set(&[&by_username]),
        "substring of username"
    );
    assert_eq!(found(&repo, q("ROSSI")).await, set(&[&none]));
    assert_eq!(found(&repo, q("@example.com")).await.len(), 4);
    assert_eq!(found(&repo, q("nobody-matches-this")).await, HashSet::new());
    assert_eq!(found(&repo, UserFilter::default()).await.len(), 4);
}

pub async fn list_filter_q_ignores_case_beyond_ascii(repo: DynRepository) {
    let elodie = create(&repo, "ÉLODIE Müller", "elodie@example.com", None).await;
    create(&repo, "Eloise", "eloise@example.com", None).await;
    for text in ["élodie", "Élodie", "MÜLLER", "müller"] {
        assert_eq!(found(&repo, q(text)).await, set(&[&elodie]), "q = {text:?}");
    }
}

pub async fn list_filter_q_matches_metacharacters_literally(repo: DynRepository) {
    // Names holding regular-expression (and SQL LIKE) metacharacters, plus decoys that a
    // pattern would match but a literal substring would not.
    let cases = [
        ("a.b", "axb"),
        ("x*y", "xxxy"),
        ("(p)", "p"),
        ("[q]", "q"),
        ("c+d", "ccd"),
        ("^e$", "e"),
        ("f\\g", "fg"),
        ("h|i", "h"),
        ("j?k", "k"),
        ("{2}", "mm"),
        ("50%", "500"),
        ("a_z", "abz"),
        ("#&~/-", "x"),
    ];
    let mut literal = Vec::new();
    for (i, (special, decoy)) in cases.iter().enumerate() {
        literal.push(
            create(
                &repo,
                &format!("n{special}n"),
                &format!("lit{i}@example.com"),
                None,
            )
            .await,
        );
        create(
            &repo,
            &format!("n{decoy}n"),
            &format!("decoy{i}@example.com"),
            None,
        )
        .await;
    }
    for ((special, _), user) in cases.iter().zip(&literal) {
        assert_eq!(
            found(&repo, q(special)).await,
            set(&[user]),
            "q = {special:?}"
        );
    }
    // Metacharacters in an email address are literal too.
    let dotted = create(&repo, "Dotted", "first.last@example.com", None).await;
    create(&repo, "Decoy", "firstxlast@example.com", None).await;
    assert_eq!(found(&repo, q("t.l")).await, set(&[&dotted]));
    // And in a username.
    let handle = create(&repo, "Handle", "handle@example.com", Some("a.b-c_d")).await;
    create(
        &repo,
        "Handle decoy",
        "handle2@example.com",
        Some("aXb-c_d"),
    )
    .await;
    assert_eq!(found(&repo, q("A.B-C")).await, set(&[&handle]));
}

pub async fn list_filters_by_role_active_and_combined(repo: DynRepository) {
    let make = |i: usize, role: Role, active: bool, display: &'static str| {
        let repo = repo.clone();
        async move {
            insert(
                &repo,
                User {
                    role,
                    active,
                    ..new_user(display, &format!("u{i}@example.com"), None)
                },
            )
            .await
        }
    };
    let active_admin = make(0, Role::Admin, true, "Alpha").await;
    let inactive_admin = make(1, Role::Admin, false, "Beta").await;
    let active_user = make(2, Role::User, true, "Alpha Two").await;
    let inactive_user = make(3, Role::User, false, "Gamma").await;

    let filter = |role: Option<Role>, active: Option<bool>, text: Option<&str>| UserFilter {
        q: text.map(str::to_owned),
        role,
        active,
    };
    assert_eq!(
        found(&repo, filter(Some(Role::Admin), None, None)).await,
        set(&[&active_admin, &inactive_admin])
    );
    assert_eq!(
        found(&repo, filter(Some(Role::User), None, None)).await,
        set(&[&active_user, &inactive_user])
    );
    assert_eq!(
        found(&repo, filter(None, Some(true), None)).await,
        set(&[&active_admin, &active_user])
    );
    assert_eq!(
        found(&repo, filter(None, Some(false), None)).await,
        set(&[&inactive_admin, &inactive_user])
    );
    assert_eq!(
        found(&repo, filter(Some(Role::Admin), Some(false), None)).await,
        set(&[&inactive_admin])
    );
    assert_eq!(
        found(&repo, filter(Some(Role::User), Some(true), Some("alpha"))).await,
        set(&[&active_user])
    );
    assert_eq!(
        found(&repo, filter(None, Some(true), Some("ALPHA"))).await,
        set(&[&active_admin, &active_user])
    );
    assert_eq!(
        found(&repo, filter(Some(Role::User), Some(false), Some("alpha"))).await,
        HashSet::new()
    );

    // Filters see changes made by updates (booleans and roles stored as such).
    update(
        &repo,
        &inactive_user.id,
        UserPatch::new()
            .set(UserField::Active(true))
            .set(UserField::Role(Role::Admin)),
    )
    .await;
    update(
        &repo,
        &active_admin.id,
        UserPatch::new().set(UserField::Active(false)),
    )
    .await;
    assert_eq!(
        found(&repo, filter(Some(Role::Admin), Some(true), None)).await,
        set(&[&inactive_user])
    );
    assert_eq!(
        found(&repo, filter(None, Some(false), None)).await,
        set(&[&active_admin, &inactive_admin])
    );
}

pub async fn list_sorts_by_created_at_with_ties_broken_by_id(repo: DynRepository) {
    let mut users = Vec::new();
    // Several users share a created_at, and the order of creation (that of the ids) is not
    // the order of created_at: the id decides only among equal times.
    for i in 0..8 {
        let created_at = moment(0) - time::Duration::milliseconds(i % 3);
        let user = User {
            created_at,
            updated_at: created_at,
            password_changed_at: created_at,
            ..new_user(&format!("User {i}"), &format!("c{i}@example.com"), None)
        };
        users.push(insert(&repo, user).await);
    }
    assert_sorted(&repo, &users, SortField::CreatedAt, 3, |u| u.created_at).await;
}

pub async fn list_sorts_by_name_with_ties_broken_by_id(repo: DynRepository) {
    let mut users = Vec::new();
    for (i, display) in [
        "delta", "alpha", "charlie", "bravo", "alpha", "charlie", "alpha",
    ]
    .iter()
    .enumerate()
    {
        users.push(create(&repo, display, &format!("n{i}@example.com"), None).await);
    }
    assert_sorted(&repo, &users, SortField::Name, 2, |u| {
        u.name.as_str().to_owned()
    })
    .await;
}

pub async fn list_sorts_by_email(repo: DynRepository) {
    let mut users = Vec::new();
    for address in [
        "delta@example.com",
        "Alpha@example.com",
        "charlie@example.com",
        "BRAVO@example.com",
        "alpha@example.org",
    ] {
        users.push(create(&repo, "Same Name", address, None).await);
    }
    assert_sorted(&repo, &users, SortField::Email, 2, |u| {
        u.email.as_str().to_owned()
    })
    .await;
    let ascending = repo
        .list_users(&sorted_query(SortField::Email, SortOrder::Ascending))
        .await
        .expect("list");
    let emails: Vec<&str> = ascending.items.iter().map(|u| u.email.as_str()).collect();
    assert_eq!(
        emails,
        [
            "alpha@example.com",
            "alpha@example.org",
            "bravo@example.com",
            "charlie@example.com",
            "delta@example.com"
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Listing at scale: keyset paging under writes, exact totals, the search rule
// ---------------------------------------------------------------------------------------

/// A user whose three sort keys (created_at, name, email) all follow the number `n`, so
/// that one data set orders the same way under every sort. `tag` keeps the email unique.
fn keyed_user(n: i64, tag: &str) -> User {
    let at = moment(n);
    User {
        created_at: at,
        updated_at: at,
        password_changed_at: at,
        ..new_user(
            &format!("Key {n:07}"),
            &format!("k{n:07}-{tag}@example.com"),
            None,
        )
    }
}

/// The number `n` a [`keyed_user`] was made from.
fn key_number(user: &User) -> i64 {
    user.name.as_str()["Key ".len()..]
        .parse()
        .expect("a keyed user")
}

/// A sortable form of `user`'s key under `sort`, as the contract compares it.
fn sort_value(user: &User, sort: SortField) -> (i64, String) {
    match sort {
        SortField::CreatedAt => (unix_millis(user.created_at), String::new()),
        SortField::Name => (0, user.name.as_str().to_owned()),
        SortField::Email => (0, user.email.as_str().to_owned()),
    }
}

/// Every user of `filter`, in `sort` `order`, on one page.
async fn whole_list(
    repo: &DynRepository,
    filter: UserFilter,
    sort: SortField,
    order: SortOrder,
) -> Vec<User> {
    let page = repo
        .list_users(&ListQuery {
            filter,
            sort,
            order,
            limit: 1000,
            ..ListQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(
        page.total,
        page.items.len() as u64,
        "total of the whole list"
    );
    page.items
}

/// The page strictly after `after` (or the first one), `limit` long.
async fn keyset_page(
    repo: &DynRepository,
    sort: SortField,
    order: SortOrder,
    after: Option<&User>,
    limit: u32,
) -> (Vec<User>, u64) {
    let page = repo
        .list_users(&ListQuery {
            sort,
            order,
            after: after.map(|last| UserCursor {
                key: SortKey::of(last, sort),
                id: last.id,
            }),
            limit,
            ..ListQuery::default()
        })
        .await
        .expect("list");
    (page.items, page.total)
}

pub async fn keyset_paging_stays_stable_while_users_are_added(repo: DynRepository) {
    let mut all = Vec::new();
    for i in 0..10 {
        all.push(insert(&repo, keyed_user(100_000 + 1_000 * i, "base")).await);
    }
    let mut round = 0;
    for sort in [SortField::CreatedAt, SortField::Name, SortField::Email] {
        for order in [SortOrder::Ascending, SortOrder::Descending] {
            round += 1;
            let what = format!("{sort:?} {order:?}");
            let before_walk = whole_list(&repo, UserFilter::default(), sort, order).await;
            let (first_page, _) = keyset_page(&repo, sort, order, None, 3).await;
            assert_eq!(ids(&first_page), ids(&before_walk[..3]), "{what}: page 1");
            let cursor = first_page.last().expect("a full first page").clone();
            // One step later in the list's order.
            let step = match order {
                SortOrder::Ascending => 1,
                SortOrder::Descending => -1,
            };
            let c = key_number(&cursor);
            let head = key_number(&before_walk[0]);
            let tail = key_number(before_walk.last().expect("users"));
            // Before the cursor: before everyone, and among the users of page 1.
            let mut earlier = Vec::new();
            for (j, n) in [head - step, c - step].into_iter().enumerate() {
                let user = keyed_user(n, &format!("r{round}b{j}"));
                earlier.push(insert(&repo, user).await);
            }
            // After it: right after the cursor, and after everyone.
            let mut later = Vec::new();
            for (j, n) in [c + step, tail + step].into_iter().enumerate() {
                let user = keyed_user(n, &format!("r{round}a{j}"));
                later.push(insert(&repo, user).await);
            }
            let mut walked = first_page.clone();
            let mut last = cursor;
            loop {
                let (page, total) = keyset_page(&repo, sort, order, Some(&last), 3).await;
                assert_eq!(
                    total,
                    before_walk.len() as u64 + 4,
                    "{what}: total counts the users added"
                );
                let Some(end) = page.last() else { break };
                last = end.clone();
                walked.extend(page);
            }
            let walked_ids = ids(&walked);
            let unique: HashSet<UserId> = walked_ids.iter().copied().collect();
            assert_eq!(
                unique.len(),
                walked_ids.len(),
                "{what}: a user was repeated"
            );
            for user in &before_walk {
                assert!(
                    unique.contains(&user.id),
                    "{what}: {} was skipped",
                    user.name
                );
            }
            for user in &earlier {
                assert!(
                    !unique.contains(&user.id),
                    "{what}: {} sorts before the cursor yet was listed",
                    user.name
                );
            }
            let mut expected_users = before_walk.clone();
            expected_users.extend(later.iter().cloned());
            assert_eq!(
                walked_ids,
                expected_order(&expected_users, order, |u| sort_value(u, sort)),
                "{what}: the walk is the list as it was plus the users added after the cursor"
            );
            all.extend(earlier);
            all.extend(later);
            assert_eq!(
                ids(&whole_list(&repo, UserFilter::default(), sort, order).await),
                expected_order(&all, order, |u| sort_value(u, sort)),
                "{what}: the whole list afterwards"
            );
        }
    }
}

pub async fn keyset_paging_through_equal_names_takes_each_once_ordered_by_id(repo: DynRepository) {
    let mut users = Vec::new();
    for (i, display) in [
        "Same", "Zulu", "Same", "Alpha", "Same", "Same", "Mid", "Same", "Mid",
    ]
    .iter()
    .enumerate()
    {
        users.push(create(&repo, display, &format!("tie{i}@example.com"), None).await);
    }
    let mut same: Vec<&User> = users.iter().filter(|u| u.name.as_str() == "Same").collect();
    same.sort_by_key(|u| u.id.to_hex());
    let same_ascending: Vec<UserId> = same.iter().map(|u| u.id).collect();
    for order in [SortOrder::Ascending, SortOrder::Descending] {
        let mut walked: Vec<User> = Vec::new();
        loop {
            let (page, total) = keyset_page(&repo, SortField::Name, order, walked.last(), 1).await;
            assert_eq!(total, users.len() as u64, "{order:?}: total");
            assert!(page.len() <= 1, "{order:?}: more than the limit");
            if page.is_empty() {
                break;
            }
            walked.extend(page);
            assert!(
                walked.len() <= users.len(),
                "{order:?}: the walk does not end"
            );
        }
        let expected = expected_order(&users, order, |u| u.name.as_str().to_owned());
        assert_eq!(ids(&walked), expected, "{order:?}");
        let ties: Vec<UserId> = walked
            .iter()
            .filter(|u| u.name.as_str() == "Same")
            .map(|u| u.id)
            .collect();
        let mut by_id = same_ascending.clone();
        if order == SortOrder::Descending {
            by_id.reverse();
        }
        assert_eq!(ties, by_id, "{order:?}: equal names in id order");
        let names: Vec<&str> = walked.iter().map(|u| u.name.as_str()).collect();
        let mut sorted_names = names.clone();
        sorted_names.sort_unstable();
        if order == SortOrder::Descending {
            sorted_names.reverse();
        }
        assert_eq!(names, sorted_names, "{order:?}: names in order");
    }
}

/// The filters whose totals are kept: none, each role, each state, and each pair.
fn count_filters() -> Vec<UserFilter> {
    let mut filters = Vec::new();
    for role in [None, Some(Role::User), Some(Role::Admin)] {
        for active in [None, Some(true), Some(false)] {
            filters.push(UserFilter {
                q: None,
                role,
                active,
            });
        }
    }
    filters
}

/// Checks `total` of every count filter (and of one with `q`) against the users the full
/// list holds and against `model`, the role and state the test gave each user.
async fn assert_totals(
    repo: &DynRepository,
    model: &std::collections::HashMap<UserId, (Role, bool)>,
    step: &str,
) {
    let mut filters = count_filters();
    filters.push(UserFilter {
        q: Some("@EXAMPLE.com".to_owned()),
        role: Some(Role::User),
        active: Some(true),
    });
    for filter in filters {
        let expected = model
            .values()
            .filter(|(role, active)| {
                filter.role.is_none_or(|r| r == *role) && filter.active.is_none_or(|a| a == *active)
            })
            .count() as u64;
        let everyone = repo
            .list_users(&ListQuery {
                filter: filter.clone(),
                limit: 1000,
                ..ListQuery::default()
            })
            .await
            .expect("list");
        assert_eq!(
            everyone.items.len() as u64,
            expected,
            "{step}: users listed for {filter:?}"
        );
        for user in &everyone.items {
            assert_eq!(
                model.get(&user.id),
                Some(&(user.role, user.active)),
                "{step}: {filter:?} listed {}",
                user.email
            );
        }
        for (offset, limit) in [(0, 1000), (0, 1), (1, 2), (5000, 1)] {
            let page = repo
                .list_users(&ListQuery {
                    filter: filter.clone(),
                    offset,
                    limit,
                    ..ListQuery::default()
                })
                .await
                .expect("list");
            assert_eq!(
                page.total, expected,
                "{step}: total for {filter:?} (offset {offset}, limit {limit})"
            );
        }
    }
}

pub async fn totals_stay_exact_through_inserts_deletes_role_changes_and_activation(
    repo: DynRepository,
) {
    use std::collections::HashMap;
    let mut model: HashMap<UserId, (Role, bool)> = HashMap::new();
    assert_totals(&repo, &model, "empty").await;
    let mut users = Vec::new();
    for i in 0..12 {
        let role = if i % 3 == 0 { Role::Admin } else { Role::User };
        let active = i % 4 != 1;
        let user = insert(
            &repo,
            User {
                role,
                active,
                ..new_user(
                    &format!("Count {i}"),
                    &format!("count{i}@example.com"),
                    None,
                )
            },
        )
        .await;
        model.insert(user.id, (role, active));
        users.push(user);
    }
    assert_totals(&repo, &model, "inserted").await;

    // A refused insert (a taken email) counts nobody.
    assert_duplicate(
        repo.create_user(&new_user("Copy", "COUNT1@example.com", None))
            .await,
        UniqueField::Email,
    );
    assert_totals(&repo, &model, "refused insert").await;

    // Each change with the role and state it leaves its user in.
    let change = |index: usize, patch: UserPatch, role: Role, active: bool| {
        (users[index].id, patch, (role, active))
    };
    let changes = vec![
        // Promote, demote, deactivate, activate, both at once, and no change at all.
        change(
            1,
            UserPatch::new().set(UserField::Role(Role::Admin)),
            Role::Admin,
            false,
        ),
        change(
            3,
            UserPatch::new().set(UserField::Role(Role::User)),
            Role::User,
            true,
        ),
        change(
            2,
            UserPatch::new().set(UserField::Active(false)),
            Role::User,
            false,
        ),
        change(
            5,
            UserPatch::new().set(UserField::Active(true)),
            Role::User,
            true,
        ),
        change(
            4,
            UserPatch::new()
                .set(UserField::Role(Role::Admin))
                .set(UserField::Active(false)),
            Role::Admin,
            false,
        ),
        change(
            6,
            UserPatch::new()
                .set(UserField::Role(Role::Admin))
                .set(UserField::Active(true)),
            Role::Admin,
            true,
        ),
        change(
            7,
            UserPatch::new()
                .set(UserField::Role(Role::User))
                .set(UserField::Active(true)),
            Role::User,
            true,
        ),
        change(
            8,
            UserPatch::new().set(UserField::Name(name("Renamed"))),
            Role::User,
            true,
        ),
    ];
    for (id, patch, state) in changes {
        update(&repo, &id, patch.clone()).await;
        model.insert(id, state);
        assert_totals(&repo, &model, &format!("after {patch:?}")).await;
    }

    // Deletes, of an active admin and of an inactive one; a second delete changes nothing.
    for index in [0, 9] {
        assert!(repo.delete_user(&users[index].id).await.expect("delete"));
        model.remove(&users[index].id);
        assert_totals(&repo, &model, &format!("deleted {index}")).await;
    }
    assert!(!repo.delete_user(&users[0].id).await.expect("delete"));
    assert_totals(&repo, &model, "second delete").await;

    // Refused changes of the last active admin leave the counts alone.
    let admins: Vec<UserId> = model
        .iter()
        .filter(|(_, state)| **state == (Role::Admin, true))
        .map(|(id, _)| *id)
        .collect();
    let (last, others) = admins.split_first().expect("an active admin");
    for other in others {
        update(&repo, other, UserPatch::new().set(UserField::Active(false))).await;
        model.insert(*other, (Role::Admin, false));
    }
    assert_totals(&repo, &model, "one active admin left").await;
    for patch in [
        UserPatch::new().set(UserField::Role(Role::User)),
        UserPatch::new().set(UserField::Active(false)),
    ] {
        assert!(matches!(
            repo.update_user(last, &patch).await,
            Err(StorageError::LastActiveAdmin)
        ));
        assert_totals(&repo, &model, &format!("refused {patch:?}")).await;
    }
    assert!(matches!(
        repo.delete_user(last).await,
        Err(StorageError::LastActiveAdmin)
    ));
    assert_totals(&repo, &model, "refused delete").await;
}

/// The rule of `q`: `text` is in the name, the email or the username, ignoring case.
fn matches_q(user: &User, text: &str) -> bool {
    let text = text.to_lowercase();
    user.name.as_str().to_lowercase().contains(&text)
        || user.email.as_str().to_lowercase().contains(&text)
        || user
            .username
            .as_ref()
            .is_some_and(|u| u.as_str().to_lowercase().contains(&text))
}

/// `found` for `text`, asserted to be `expected` and to agree with the rule over `users`.
async fn assert_q(repo: &DynRepository, users: &[User], text: &str, expected: &[&User]) {
    let rule: HashSet<UserId> = users
        .iter()
        .filter(|u| matches_q(u, text))
        .map(|u| u.id)
        .collect();
    assert_eq!(
        set(expected),
        rule,
        "the test's own expectation for {text:?}"
    );
    assert_eq!(found(repo, q(text)).await, rule, "q = {text:?}");
}

pub async fn search_finds_exactly_the_users_containing_q_in_any_case(repo: DynRepository) {
    let aero = create(&repo, "Ærøskøbing Ünal", "aero@example.com", None).await;
    let unal = create(&repo, "Bjørn Ünalan", "bjorn@example.com", Some("b.unal")).await;
    let quoted = create(
        &repo,
        "Anna \"Nan\" O'Hara",
        "anna@example.com",
        Some("ann_a"),
    )
    .await;
    let percent = create(&repo, "100% Pure_Joy", "pure@example.com", None).await;
    // Decoys for LIKE patterns: `%` and `_` would match these.
    let decoy = create(&repo, "1000 PureXJoy", "decoy@example.com", Some("annxa")).await;
    let plain = create(&repo, "Plain Person", "plain@example.com", None).await;
    let mut users = vec![
        aero.clone(),
        unal.clone(),
        quoted.clone(),
        percent.clone(),
        decoy.clone(),
        plain.clone(),
    ];

    // Beyond ASCII, in both directions of case.
    assert_q(&repo, &users, "ÜNAL", &[&aero, &unal]).await;
    assert_q(&repo, &users, "ünal ", &[]).await;
    assert_q(&repo, &users, "ærø", &[&aero]).await;
    assert_q(&repo, &users, "ÆRØSKØBING ü", &[&aero]).await;
    assert_q(&repo, &users, "SKØB", &[&aero]).await;
    assert_q(&repo, &users, "ørn ün", &[&unal]).await;
    // One and two characters: below the length of a trigram.
    assert_q(&repo, &users, "ø", &[&aero, &unal]).await;
    assert_q(&repo, &users, "Ø", &[&aero, &unal]).await;
    assert_q(&repo, &users, "æ", &[&aero]).await;
    assert_q(&repo, &users, "ün", &[&aero, &unal]).await;
    assert_q(&repo, &users, "xJ", &[&decoy]).await;
    assert_q(&repo, &users, "Jo", &[&unal, &percent, &decoy]).await;
    assert_q(&repo, &users, "y", &[&percent, &decoy]).await;
    assert_q(&repo, &users, "zq", &[]).await;
    // Quotes, `%` and `_`, literally.
    assert_q(&repo, &users, "\"", &[&quoted]).await;
    assert_q(&repo, &users, "\"n", &[&quoted]).await;
    assert_q(&repo, &users, "\"NAN\"", &[&quoted]).await;
    assert_q(&repo, &users, "a \"nan\" o'h", &[&quoted]).await;
    assert_q(&repo, &users, "\"\"", &[]).await;
    assert_q(&repo, &users, "o'hara", &[&quoted]).await;
    assert_q(&repo, &users, "%", &[&percent]).await;
    assert_q(&repo, &users, "0%", &[&percent]).await;
    assert_q(&repo, &users, "100%", &[&percent]).await;
    assert_q(&repo, &users, "%_", &[]).await;
    assert_q(&repo, &users, "_", &[&quoted, &percent]).await;
    assert_q(&repo, &users, "e_j", &[&percent]).await;
    assert_q(&repo, &users, "N_A", &[&quoted]).await;
    assert_q(&repo, &users, "pure_joy", &[&percent]).await;
    assert_q(&repo, &users, "*", &[]).await;
    assert_q(&repo, &users, "NEAR", &[]).await;
    assert_q(&repo, &users, "pure OR plain", &[]).await;
    assert_q(&repo, &users, "plain per", &[&plain]).await;
    // Every field: email and username.
    assert_q(&repo, &users, "ANNA@", &[&quoted]).await;
    assert_q(&repo, &users, "B.UN", &[&unal]).await;
    assert_q(
        &repo,
        &users,
        "@example.com",
        &users.iter().collect::<Vec<_>>(),
    )
    .await;

    // A rename: the old text no longer matches, the new one does.
    let aero_renamed = update(
        &repo,
        &aero.id,
        UserPatch::new().set(UserField::Name(name("Zoë Zebra"))),
    )
    .await;
    users[0] = aero_renamed.clone();
    assert_q(&repo, &users, "ærø", &[]).await;
    assert_q(&repo, &users, "ÜNAL", &[&unal]).await;
    assert_q(&repo, &users, "ZOË Z", &[&aero_renamed]).await;
    assert_q(&repo, &users, "zebra", &[&aero_renamed]).await;
    assert_q(&repo, &users, "ë", &[&aero_renamed]).await;
    // A cleared username: its text no longer matches.
    let quoted_cleared = update(
        &repo,
        &quoted.id,
        UserPatch::new().set(UserField::Username(None)),
    )
    .await;
    users[2] = quoted_cleared.clone();
    assert_q(&repo, &users, "ann_a", &[]).await;
    assert_q(&repo, &users, "_", &[&percent]).await;
    assert_q(&repo, &users, "\"nan\"", &[&quoted_cleared]).await;
    // A new username and a new email.
    let plain_changed = update(
        &repo,
        &plain.id,
        UserPatch::new()
            .set(UserField::Username(Some(username("Wandering-Star"))))
            .set(UserField::Email(email("nomad@example.org"))),
    )
    .await;
    users[5] = plain_changed.clone();
    assert_q(&repo, &users, "wandering", &[&plain_changed]).await;
    assert_q(&repo, &users, "NOMAD@", &[&plain_changed]).await;
    assert_q(&repo, &users, "plain@", &[]).await;
    assert_q(&repo, &users, "plain per", &[&plain_changed]).await;
    // A deleted user is found no more.
    assert!(repo.delete_user(&unal.id).await.expect("delete"));
    users.remove(1);
    assert_q(&repo, &users, "ÜNAL", &[]).await;
    assert_q(&repo, &users, "ø", &[]).await;

    // Every piece of every field, as written, upper- and lower-cased, agrees with the rule.
    let mut texts: Vec<String> = Vec::new();
    for user in &users {
        let fields = [
            Some(user.name.as_str()),
            Some(user.email.as_str()),
            user.username.as_ref().map(Username::as_str),
        ];
        for field in fields.into_iter().flatten() {
            let chars: Vec<char> = field.chars().collect();
            for len in 1..=4 {
                for start in 0..chars.len().saturating_sub(len - 1) {
                    let piece: String = chars[start..start + len].iter().collect();
                    texts.push(piece.to_uppercase());
                    texts.push(piece.to_lowercase());
                    texts.push(piece);
                }
            }
        }
    }
    let texts: std::collections::BTreeSet<String> = texts.into_iter().collect();
    for text in texts {
        let rule: HashSet<UserId> = users
            .iter()
            .filter(|u| matches_q(u, &text))
            .map(|u| u.id)
            .collect();
        assert_eq!(found(&repo, q(&text)).await, rule, "q = {text:?}");
    }
}

pub async fn search_agrees_with_a_scan_for_letters_that_change_length_or_form_in_lower_case(
    repo: DynRepository,
) {
    // "İ" lower-cases to two characters ("i" and a combining dot above), "K" (the Kelvin
    // sign) to a plain "k", "ẞ" to "ß", "ǅ" (a title-case digraph) to "ǆ".
    let istanbul = create(&repo, "İstanbul Ürün", "ist@example.com", None).await;
    let kelvin = create(&repo, "\u{212A}elvin Maß", "kel@example.com", None).await;
    let grosse = create(&repo, "GROẞE ǅemal", "gro@example.com", None).await;
    let plain = create(&repo, "Istanbul Kelvin", "plain@example.com", None).await;
    let users = vec![
        istanbul.clone(),
        kelvin.clone(),
        grosse.clone(),
        plain.clone(),
    ];
    assert_q(&repo, &users, "İ", &[&istanbul]).await;
    assert_q(&repo, &users, "İs", &[&istanbul]).await;
    assert_q(&repo, &users, "İSTANBUL", &[&istanbul]).await;
    assert_q(&repo, &users, "i\u{307}stanbul", &[&istanbul]).await;
    assert_q(&repo, &users, "istanbul", &[&plain]).await;
    assert_q(&repo, &users, "KELVIN", &[&kelvin, &plain]).await;
    assert_q(&repo, &users, "\u{212A}elvin", &[&kelvin, &plain]).await;
    assert_q(&repo, &users, "maß", &[&kelvin]).await;
    assert_q(&repo, &users, "große", &[&grosse]).await;
    assert_q(&repo, &users, "ǆemal", &[&grosse]).await;
    assert_q(&repo, &users, "Ǆ", &[&grosse]).await;
    for user in &users {
        let chars: Vec<char> = user.name.as_str().chars().collect();
        for len in 1..=4 {
            for start in 0..chars.len().saturating_sub(len - 1) {
                let piece: String = chars[start..start + len].iter().collect();
                for text in [piece.to_uppercase(), piece.to_lowercase(), piece] {
                    let rule: HashSet<UserId> = users
                        .iter()
                        .filter(|u| matches_q(u, &text))
                        .map(|u| u.id)
                        .collect();
                    assert_eq!(found(&repo, q(&text)).await, rule, "q = {text:?}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Refresh tokens
// ---------------------------------------------------------------------------------------

pub async fn refresh_token_is_spent_once_then_replayed(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let session_id = start_session(&repo, user.id).await;
    let record = refresh("hash-1", &session_id, user.id);
    repo.insert_refresh_token(record.clone())
        .await
        .expect("insert");

    assert_eq!(
        repo.use_refresh_token("hash-1", now()).await.expect("use"),
        RefreshTokenUse::Spent(record)
    );
    for _ in 0..2 {
        assert_eq!(
            repo.use_refresh_token("hash-1", now())
                .await
                .expect("use again"),
            RefreshTokenUse::Replayed {
                session_id: session_id.clone(),
                user_id: user.id,
            }
        );
    }
}

pub async fn unknown_refresh_token_is_unknown(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let session_id = start_session(&repo, user.id).await;
    repo.insert_refresh_token(refresh("known", &session_id, user.id))
        .await
        .expect("insert");
    assert_eq!(
        repo.use_refresh_token("unknown", now()).await.expect("use"),
        RefreshTokenUse::Unknown
    );
    assert_eq!(
        repo.use_refresh_token("", now()).await.expect("use"),
        RefreshTokenUse::Unknown
    );
    // Ending the sessions of unknown tokens, unknown sessions or unknown users is harmless.
    assert_eq!(
        repo.end_session_of_token("unknown", now())
            .await
            .expect("end the session of a token"),
        None
    );
    assert!(
        !repo
            .end_session(&user.id, &SessionId::generate(), now())
            .await
            .expect("end a session")
    );
    assert_eq!(
        repo.end_user_sessions(&UserId::generate(), now())
            .await
            .expect("end a user's sessions"),
        0
    );
    assert!(matches!(
        repo.use_refresh_token("known", now()).await.expect("use"),
        RefreshTokenUse::Spent(_)
    ));
}

pub async fn concurrent_uses_of_a_refresh_token_spend_it_once(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let session = start_session(&repo, user.id).await;
    repo.insert_refresh_token(refresh("contested", &session, user.id))
        .await
        .expect("insert");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let repo = repo.clone();
            tokio::spawn(async move { repo.use_refresh_token("contested", now()).await })
        })
        .collect();
    let mut spent = 0;
    for task in tasks {
        match task.await.expect("task").expect("use") {
            RefreshTokenUse::Spent(_) => spent += 1,
            RefreshTokenUse::Replayed {
                session_id,
                user_id,
            } => assert_eq!((session_id, user_id), (session.clone(), user.id)),
            other => panic!("neither spent nor replayed: {other:?}"),
        }
    }
    assert_eq!(spent, 1);
}

pub async fn ending_the_session_of_a_token_ends_it_and_a_revoked_token_is_not_a_replay(
    repo: DynRepository,
) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let session = start_session(&repo, user.id).await;
    let other = start_session(&repo, user.id).await;
    repo.insert_refresh_token(refresh("spent", &session, user.id))
        .await
        .expect("insert");
    repo.insert_refresh_token(refresh("sibling", &session, user.id))
        .await
        .expect("insert");
    repo.insert_refresh_token(refresh("stranger", &other, user.id))
        .await
        .expect("insert");
    assert!(matches!(
        repo.use_refresh_token("spent", now()).await.expect("use"),
        RefreshTokenUse::Spent(_)
    ));
    // A spent token is a replay until its session ends.
    assert_eq!(
        repo.use_refresh_token("spent", now()).await.expect("use"),
        RefreshTokenUse::Replayed {
            session_id: session.clone(),
            user_id: user.id,
        }
    );
    // A logout presents one token and ends its whole session.
    assert_eq!(
        repo.end_session_of_token("sibling", now())
            .await
            .expect("end the session of a token"),
        Some((user.id, session.clone()))
    );
    for token in ["spent", "sibling"] {
        assert_eq!(
            repo.use_refresh_token(token, now()).await.expect("use"),
            RefreshTokenUse::Revoked,
            "{token}"
        );
    }
    assert!(matches!(
        repo.use_refresh_token("stranger", now())
            .await
            .expect("use"),
        RefreshTokenUse::Spent(_)
    ));
    // Ending the session of an unknown token changes nothing.
    assert_eq!(
        repo.end_session_of_token("unknown", now())
            .await
            .expect("end the session of a token"),
        None
    );
}

pub async fn a_token_added_to_an_ended_session_is_revoked(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let session = start_session(&repo, user.id).await;
    repo.insert_refresh_token(refresh("first", &session, user.id))
        .await
        .expect("insert");
    assert!(
        repo.end_session(&user.id, &session, now())
            .await
            .expect("end")
    );
    repo.insert_refresh_token(refresh("late", &session, user.id))
        .await
        .expect("insert");
    assert_eq!(
        repo.use_refresh_token("late", now()).await.expect("use"),
        RefreshTokenUse::Revoked
    );
    // Likewise after every session of the user ended (a password change).
    let second = start_session(&repo, user.id).await;
    repo.insert_refresh_token(refresh("second", &second, user.id))
        .await
        .expect("insert");
    assert_eq!(
        repo.end_user_sessions(&user.id, now())
            .await
            .expect("end all"),
        1
    );
    repo.insert_refresh_token(refresh("later", &second, user.id))
        .await
        .expect("insert");
    assert_eq!(
        repo.use_refresh_token("later", now()).await.expect("use"),
        RefreshTokenUse::Revoked
    );
    // And a token of a session that was never started is dead too.
    repo.insert_refresh_token(refresh("orphan", &SessionId::generate(), user.id))
        .await
        .expect("insert");
    assert_eq!(
        repo.use_refresh_token("orphan", now()).await.expect("use"),
        RefreshTokenUse::Revoked
    );
}

pub async fn concurrent_uses_of_one_refresh_token_leave_no_live_token_in_its_session(
    repo: DynRepository,
    twin: DynRepository,
) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    for round in 0..25 {
        let session = start_session(&repo, user.id).await;
        let first = format!("first-{round}");
        repo.insert_refresh_token(refresh(&first, &session, user.id))
            .await
            .expect("insert");
        let present = |repo: DynRepository, next: String| {
            let first = first.clone();
            tokio::spawn(async move {
                match repo.use_refresh_token(&first, now()).await.expect("use") {
                    RefreshTokenUse::Spent(record) => {
                        // The service reads the user and signs a token in between: a gap
                        // of varying length, in which the replay may be handled.
                        tokio::time::sleep(Duration::from_millis(round % 4)).await;
                        repo.insert_refresh_token(refresh(
                            &next,
                            &record.session_id,
                            record.user_id,
                        ))
                        .await
                        .expect("insert the next token");
                        Some(next)
                    }
                    RefreshTokenUse::Replayed {
                        session_id,
                        user_id,
                    } => {
                        assert!(
                            repo.end_session(&user_id, &session_id, now())
                                .await
                                .expect("end"),
                            "round {round}: the replayed session was live"
                        );
                        None
                    }
                    other => panic!("round {round}: {other:?}"),
                }
            })
        };
        let (a, b) = tokio::join!(
            present(repo.clone(), format!("a-{round}")),
            present(twin.clone(), format!("b-{round}"))
        );
        let issued: Vec<String> = [a.expect("task"), b.expect("task")]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(issued.len(), 1, "round {round}: exactly one use wins");
        assert_eq!(
            repo.use_refresh_token(&issued[0], now())
                .await
                .expect("use"),
            RefreshTokenUse::Revoked,
            "round {round}: the winner's token outlived the reuse"
        );
    }
}

pub async fn a_refused_demotion_leaves_both_admins_removable(repo: DynRepository) {
    let first = insert(&repo, admin_user("First", "first@example.com")).await;
    let second = insert(&repo, admin_user("Second", "second@example.com")).await;
    // Refused for the address, after the role was found removable.
    let demotion = UserPatch::new()
        .set(UserField::Role(Role::User))
        .set(UserField::Email(email("second@example.com")));
    assert!(matches!(
        repo.update_user(&first.id, &demotion).await,
        Err(StorageError::Duplicate(UniqueField::Email))
    ));
    assert_eq!(fetch(&repo, &first.id).await, first, "nothing was written");
    // Nothing of the refused one holds up the next removals: the second admin goes (the
    // first is left), and then the first is the last.
    assert!(repo.delete_user(&second.id).await.expect("delete"));
    assert!(matches!(
        repo.delete_user(&first.id).await,
        Err(StorageError::LastActiveAdmin)
    ));
}

pub async fn the_last_active_admin_cannot_be_demoted_deactivated_or_deleted(repo: DynRepository) {
    let admin = insert(&repo, admin_user("Admin", "admin@example.com")).await;
    let user = create(&repo, "User", "user@example.com", None).await;
    for patch in [
        UserPatch::new().set(UserField::Role(Role::User)),
        UserPatch::new().set(UserField::Active(false)),
        UserPatch::new()
            .set(UserField::Name(name("Renamed")))
            .set(UserField::Active(false)),
    ] {
        assert!(
            matches!(
                repo.update_user(&admin.id, &patch).await,
                Err(StorageError::LastActiveAdmin)
            ),
            "{patch:?}"
        );
    }
    assert!(matches!(
        repo.delete_user(&admin.id).await,
        Err(StorageError::LastActiveAdmin)
    ));
    assert_eq!(
        fetch(&repo, &admin.id).await,
        admin,
        "nothing of it was written"
    );
    // Changes that keep them an active admin, and changes to anyone else, are no matter.
    update(
        &repo,
        &admin.id,
        UserPatch::new()
            .set(UserField::Role(Role::Admin))
            .set(UserField::Active(true)),
    )
    .await;
    update(
        &repo,
        &user.id,
        UserPatch::new().set(UserField::Active(false)),
    )
    .await;
    assert!(repo.delete_user(&user.id).await.expect("delete"));
    // With a second active admin either may go, and then the other is the last.
    let second = insert(&repo, admin_user("Second", "second@example.com")).await;
    update(
        &repo,
        &admin.id,
        UserPatch::new().set(UserField::Active(false)),
    )
    .await;
    assert!(matches!(
        repo.delete_user(&second.id).await,
        Err(StorageError::LastActiveAdmin)
    ));
    // An inactive admin is no active admin: it may be deleted.
    assert!(repo.delete_user(&admin.id).await.expect("delete"));
    assert_eq!(active_admins(&repo).await, vec![second.id]);
}

/// Two handles on one database, as two service instances: in every round two admins are
/// the only active ones, and each handle removes one of them at the same moment (the other
/// admin, or itself), by demotion, deactivation or deletion. At least one must be left.
pub async fn concurrent_removals_of_the_last_two_admins_leave_one(
    repo: DynRepository,
    twin: DynRepository,
) {
    for round in 0..30 {
        let x = insert(&repo, admin_user("X", &format!("x{round}@example.com"))).await;
        let y = insert(&twin, admin_user("Y", &format!("y{round}@example.com"))).await;
        for old in active_admins(&repo).await {
            if old != x.id && old != y.id {
                assert!(repo.delete_user(&old).await.expect("delete a survivor"));
            }
        }
        let kind = round % 3;
        let remove = |repo: DynRepository, target: UserId| {
            tokio::spawn(async move {
                match kind {
                    0 => repo
                        .update_user(&target, &UserPatch::new().set(UserField::Role(Role::User)))
                        .await
                        .map(drop),
                    1 => repo
                        .update_user(&target, &UserPatch::new().set(UserField::Active(false)))
                        .await
                        .map(drop),
                    _ => repo.delete_user(&target).await.map(drop),
                }
            })
        };
        // Even rounds: each removes the other; odd rounds: each removes itself.
        let (a, b) = if round % 2 == 0 {
            (y.id, x.id)
        } else {
            (x.id, y.id)
        };
        let (first, second) = tokio::join!(remove(repo.clone(), a), remove(twin.clone(), b));
        for result in [first.expect("task"), second.expect("task")] {
            match result {
                Ok(()) | Err(StorageError::LastActiveAdmin) => {}
                Err(other) => panic!("round {round}: unexpected {other:?}"),
            }
        }
        assert!(
            !active_admins(&repo).await.is_empty(),
            "round {round}: no active admin left"
        );
    }
}

pub async fn ending_a_session_affects_only_that_session(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let a = start_session(&repo, user.id).await;
    let b = start_session(&repo, user.id).await;
    for token in ["a1", "a2", "a3"] {
        repo.insert_refresh_token(refresh(token, &a, user.id))
            .await
            .expect("insert");
    }
    repo.insert_refresh_token(refresh("b1", &b, user.id))
        .await
        .expect("insert");
    assert!(matches!(
        repo.use_refresh_token("a1", now()).await.expect("use"),
        RefreshTokenUse::Spent(_)
    ));

    assert!(
        repo.end_session(&user.id, &a, now())
            .await
            .expect("end session")
    );
    for token in ["a1", "a2", "a3"] {
        assert_eq!(
            repo.use_refresh_token(token, now()).await.expect("use"),
            RefreshTokenUse::Revoked,
            "{token}"
        );
    }
    assert!(matches!(
        repo.use_refresh_token("b1", now()).await.expect("use"),
        RefreshTokenUse::Spent(_)
    ));
}

pub async fn ending_a_users_sessions_affects_only_that_user(repo: DynRepository) {
    let mario = create(&repo, "Mario", "mario@example.com", None).await;
    let luigi = create(&repo, "Luigi", "luigi@example.com", None).await;
    let mario_phone = start_session(&repo, mario.id).await;
    let mario_laptop = start_session(&repo, mario.id).await;
    let luigi_phone = start_session(&repo, luigi.id).await;
    repo.insert_refresh_token(refresh("m1", &mario_phone, mario.id))
        .await
        .expect("insert");
    repo.insert_refresh_token(refresh("m2", &mario_laptop, mario.id))
        .await
        .expect("insert");
    repo.insert_refresh_token(refresh("l1", &luigi_phone, luigi.id))
        .await
        .expect("insert");

    assert_eq!(
        repo.end_user_sessions(&mario.id, now())
            .await
            .expect("end the user's sessions"),
        2
    );
    for token in ["m1", "m2"] {
        assert_eq!(
            repo.use_refresh_token(token, now()).await.expect("use"),
            RefreshTokenUse::Revoked,
            "{token}"
        );
    }
    assert!(matches!(
        repo.use_refresh_token("l1", now()).await.expect("use"),
        RefreshTokenUse::Spent(_)
    ));
    // Tokens of a session started afterwards work.
    let mario_new = start_session(&repo, mario.id).await;
    repo.insert_refresh_token(refresh("m3", &mario_new, mario.id))
        .await
        .expect("insert");
    assert!(matches!(
        repo.use_refresh_token("m3", now()).await.expect("use"),
        RefreshTokenUse::Spent(_)
    ));
}

// ---------------------------------------------------------------------------------------
// Password-reset tokens
// ---------------------------------------------------------------------------------------

/// Presents a reset token now; whose it was, if it was live.
async fn consume(repo: &DynRepository, token: &str) -> Option<UserId> {
    repo.consume_reset_token(token, now())
        .await
        .expect("consume_reset_token")
}

pub async fn reset_token_is_consumed_once(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    repo.insert_reset_token(reset("reset-1", user.id))
        .await
        .expect("insert");
    assert_eq!(consume(&repo, "reset-1").await, Some(user.id));
    assert_eq!(consume(&repo, "reset-1").await, None);
}

pub async fn a_reset_tokens_owner_is_told_without_spending_it(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    repo.insert_reset_token(reset("live", user.id))
        .await
        .expect("insert");
    let owner = |token: &'static str, at: OffsetDateTime| {
        let repo = repo.clone();
        async move { repo.reset_token_owner(token, at).await.expect("owner") }
    };
    assert_eq!(owner("live", now()).await, Some(user.id));
    assert_eq!(owner("live", now()).await, Some(user.id), "still live");
    assert_eq!(
        owner("live", now() + time::Duration::hours(2)).await,
        None,
        "expired"
    );
    assert_eq!(owner("unknown", now()).await, None);
    assert_eq!(consume(&repo, "live").await, Some(user.id));
    assert_eq!(owner("live", now()).await, None, "used");
}

pub async fn expired_or_unknown_reset_token_is_refused(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let created_at = now() - time::Duration::hours(2);
    repo.insert_reset_token(OneTimeTokenRecord {
        token_hash: "expired".into(),
        user_id: user.id,
        created_at,
        expires_at: created_at + time::Duration::hours(1),
    })
    .await
    .expect("insert");
    assert_eq!(consume(&repo, "expired").await, None);
    assert_eq!(consume(&repo, "unknown").await, None);

    // Expiry is judged at the time given: a live token presented after its expiry is refused.
    let record = reset("short-lived", user.id);
    repo.insert_reset_token(record.clone())
        .await
        .expect("insert");
    assert_eq!(
        repo.consume_reset_token("short-lived", record.expires_at)
            .await
            .expect("consume"),
        None,
        "a token is dead at its expires_at"
    );
    assert_eq!(
        repo.consume_reset_token(
            "short-lived",
            record.expires_at - time::Duration::milliseconds(1)
        )
        .await
        .expect("consume"),
        Some(user.id)
    );
}

/// Stores a reset token under each name, for its user.
async fn reset_tokens(repo: &DynRepository, tokens: &[(&str, UserId)]) {
    for &(token, user) in tokens {
        repo.insert_reset_token(reset(token, user))
            .await
            .expect("insert");
    }
}

/// Two users, Mario with the reset tokens m1 to m3 and Luigi with l1.
async fn mario_and_luigi_with_reset_tokens(repo: &DynRepository) -> (User, User) {
    let mario = create(repo, "Mario", "mario@example.com", None).await;
    let luigi = create(repo, "Luigi", "luigi@example.com", None).await;
    let (m, l) = (mario.id, luigi.id);
    reset_tokens(repo, &[("m1", m), ("m2", m), ("m3", m), ("l1", l)]).await;
    (mario, luigi)
}

pub async fn consuming_a_reset_token_voids_the_users_other_reset_tokens(repo: DynRepository) {
    let (mario, luigi) = mario_and_luigi_with_reset_tokens(&repo).await;

    assert_eq!(consume(&repo, "m2").await, Some(mario.id));
    assert_eq!(consume(&repo, "m1").await, None);
    assert_eq!(consume(&repo, "m3").await, None);
    assert_eq!(consume(&repo, "l1").await, Some(luigi.id));

    // A token issued afterwards works.
    reset_tokens(&repo, &[("m4", mario.id)]).await;
    assert_eq!(consume(&repo, "m4").await, Some(mario.id));
}

pub async fn voiding_a_users_reset_tokens_spends_only_their_live_ones(repo: DynRepository) {
    let (mario, luigi) = mario_and_luigi_with_reset_tokens(&repo).await;
    assert_eq!(consume(&repo, "m1").await, Some(mario.id));
    reset_tokens(&repo, &[("m4", mario.id), ("m5", mario.id)]).await;

    let voided = repo
        .void_reset_tokens(&mario.id, now())
        .await
        .expect("void");
    assert_eq!(voided, 2, "only the two live ones (m4, m5) count");
    for token in ["m4", "m5"] {
        assert_eq!(
            repo.reset_token_owner(token, now()).await.expect("owner"),
            None
        );
        assert_eq!(consume(&repo, token).await, None, "{token} is void");
    }
    assert_eq!(
        consume(&repo, "l1").await,
        Some(luigi.id),
        "another user's stays"
    );
    assert_eq!(
        repo.void_reset_tokens(&mario.id, now())
            .await
            .expect("void"),
        0,
        "nothing left to void"
    );

    // A token issued afterwards works.
    reset_tokens(&repo, &[("m6", mario.id)]).await;
    assert_eq!(consume(&repo, "m6").await, Some(mario.id));
}

pub async fn concurrent_consumes_of_a_reset_token_succeed_once(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    repo.insert_reset_token(reset("contested", user.id))
        .await
        .expect("insert");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let repo = repo.clone();
            tokio::spawn(async move { repo.consume_reset_token("contested", now()).await })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        if let Some(id) = task.await.expect("task").expect("consume") {
            assert_eq!(id, user.id);
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

const LOCK_FOR: Duration = Duration::from_secs(60);

async fn attempt(repo: &DynRepository, key: &str, at: OffsetDateTime) -> LoginAttempts {
    repo.count_login_attempt(key, at, 3, LOCK_FOR)
        .await
        .expect("count a login attempt")
}

pub async fn a_forgiven_attempt_is_taken_back_with_the_lock_it_started(repo: DynRepository) {
    let forgive = |key: &'static str| {
        let repo = repo.clone();
        async move {
            repo.forgive_login_attempt(key, 3)
                .await
                .expect("forgive an attempt")
        }
    };
    let at = now();
    // Nothing counted: nothing to take back, and the next attempt is the first.
    forgive("k").await;
    assert_eq!(attempt(&repo, "k", at).await.count, 1);
    attempt(&repo, "k", at).await;
    // The attempt that reached the threshold started a lock; taken back, so is the lock.
    assert_eq!(
        attempt(&repo, "k", at).await.locked_until,
        Some(at + LOCK_FOR)
    );
    forgive("k").await;
    assert_eq!(
        attempt(&repo, "k", at).await,
        LoginAttempts {
            count: 3,
            locked_until: Some(at + LOCK_FOR)
        },
        "the count went back to 2, so this attempt locks again"
    );
    // Past the threshold, one taken back leaves the lock: the count still reaches it.
    let later = at + time::Duration::seconds(30);
    assert_eq!(attempt(&repo, "k", later).await.count, 4);
    forgive("k").await;
    assert_eq!(
        attempt(&repo, "k", later).await,
        LoginAttempts {
            count: 4,
            locked_until: Some(at + LOCK_FOR)
        }
    );
    // Other keys are their own.
    forgive("other").await;
    assert_eq!(attempt(&repo, "other", at).await.count, 1);
}

pub async fn login_attempts_lock_at_the_threshold_and_start_again_after_the_lock(
    repo: DynRepository,
) {
    let at = now();
    let lock_of = |key: &'static str| {
        let repo = repo.clone();
        async move { repo.login_lock(key).await.expect("login_lock") }
    };
    assert_eq!(lock_of("k").await, None, "nothing counted");
    assert_eq!(
        attempt(&repo, "k", at).await,
        LoginAttempts {
            count: 1,
            locked_until: None
        }
    );
    assert_eq!(attempt(&repo, "k", at).await.count, 2);
    assert_eq!(lock_of("k").await, None, "counted, not locked");
    let locked = attempt(&repo, "k", at).await;
    assert_eq!(
        locked,
        LoginAttempts {
            count: 3,
            locked_until: Some(at + LOCK_FOR)
        }
    );
    assert_eq!(lock_of("k").await, Some(at + LOCK_FOR));
    assert_eq!(lock_of("other").await, None);
    // Attempts while locked still count, and leave the lock as it was.
    let later = at + time::Duration::seconds(30);
    assert_eq!(
        attempt(&repo, "k", later).await,
        LoginAttempts {
            count: 4,
            locked_until: Some(at + LOCK_FOR)
        }
    );
    // Other keys are their own.
    assert_eq!(attempt(&repo, "other", at).await.count, 1);
    // Once the lock has ended, a new series starts.
    let after = at + LOCK_FOR + time::Duration::seconds(1);
    assert_eq!(
        attempt(&repo, "k", after).await,
        LoginAttempts {
            count: 1,
            locked_until: None
        }
    );
    // A series left idle for the lock's length starts again too.
    assert_eq!(attempt(&repo, "k", after).await.count, 2);
    let idle = after + LOCK_FOR + time::Duration::seconds(1);
    assert_eq!(attempt(&repo, "k", idle).await.count, 1);
    // Clearing ends the series.
    assert_eq!(attempt(&repo, "k", idle).await.count, 2);
    repo.clear_login_attempts("k").await.expect("clear");
    assert_eq!(lock_of("k").await, None);
    assert_eq!(
        attempt(&repo, "k", idle).await,
        LoginAttempts {
            count: 1,
            locked_until: None
        }
    );
    repo.clear_login_attempts("nobody")
        .await
        .expect("clearing an unknown key");
}

/// 50 simultaneous attempts through two handles, as two instances would make them: each
/// gets its own count, 1 to 50, and the lock is set once, by the attempt that reached the
/// threshold.
pub async fn concurrent_login_attempts_are_counted_exactly_and_lock_once(
    repo: DynRepository,
    twin: DynRepository,
) {
    let at = now();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let repo = if i % 2 == 0 {
                repo.clone()
            } else {
                twin.clone()
            };
            tokio::spawn(async move {
                repo.count_login_attempt("burst", at, 10, LOCK_FOR)
                    .await
                    .expect("count")
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task"));
    }
    let mut counts: Vec<u32> = results.iter().map(|r| r.count).collect();
    counts.sort();
    assert_eq!(counts, (1..=50).collect::<Vec<_>>());
    let tenth = results.iter().find(|r| r.count == 10).unwrap();
    assert_eq!(tenth.locked_until, Some(at + LOCK_FOR));
    assert!(
        results
            .iter()
            .filter(|r| r.count < 10)
            .all(|r| r.locked_until.is_none())
    );
    let locks: HashSet<_> = results.iter().filter_map(|r| r.locked_until).collect();
    assert_eq!(locks.len(), 1, "the lock was set once");
    assert_eq!(attempt(&repo, "burst", at).await.count, 51);
}

fn verification(token_hash: &str, user: &User, at: OffsetDateTime) -> VerificationTokenRecord {
    VerificationTokenRecord {
        token_hash: token_hash.to_owned(),
        user_id: user.id,
        email: user.email.clone(),
        created_at: at,
        expires_at: at + time::Duration::hours(1),
    }
}

pub async fn a_verification_token_works_once_within_its_time_and_a_newer_one_voids_it(
    repo: DynRepository,
) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let at = now();
    let consume = |token: &'static str, at: OffsetDateTime| {
        let repo = repo.clone();
        async move {
            repo.consume_verification_token(token, at)
                .await
                .expect("consume")
        }
    };
    repo.insert_verification_token(verification("first", &user, at))
        .await
        .expect("insert");
    assert_eq!(
        consume("first", at + time::Duration::hours(2)).await,
        None,
        "expired"
    );
    assert_eq!(
        consume("first", at).await,
        Some((user.id, user.email.clone()))
    );
    assert_eq!(consume("first", at).await, None, "used");
    assert_eq!(consume("unknown", at).await, None);
    // Only the newest link works.
    repo.insert_verification_token(verification("older", &user, at))
        .await
        .expect("insert");
    repo.insert_verification_token(verification("newer", &user, at))
        .await
        .expect("insert");
    assert_eq!(consume("older", at).await, None);
    assert_eq!(
        consume("newer", at).await,
        Some((user.id, user.email.clone()))
    );
    // Deleting the user deletes their tokens.
    repo.insert_verification_token(verification("left", &user, at))
        .await
        .expect("insert");
    assert!(repo.delete_user(&user.id).await.expect("delete"));
    assert_eq!(consume("left", at).await, None);
}

pub async fn a_mail_claim_holds_for_its_window_per_kind_and_address(repo: DynRepository) {
    let (at, window) = (now(), Duration::from_secs(60));
    let address = email("mario@example.com");
    let claim = |kind: &'static str, address: Email, at: OffsetDateTime| {
        let repo = repo.clone();
        async move {
            repo.claim_mail(kind, &address, at, window)
                .await
                .expect("claim")
        }
    };
    assert!(claim("reset", address.clone(), at).await);
    assert!(!claim("reset", address.clone(), at + time::Duration::seconds(30)).await);
    assert!(
        claim("verification", address.clone(), at).await,
        "another kind"
    );
    assert!(
        claim("reset", email("luigi@example.com"), at).await,
        "another address"
    );
    assert!(claim("reset", address.clone(), at + time::Duration::seconds(61)).await);
    assert!(!claim("reset", address, at + time::Duration::seconds(62)).await);
}

/// Through two handles, as two instances: of 20 simultaneous claims, one holds.
pub async fn concurrent_mail_claims_hold_once(repo: DynRepository, twin: DynRepository) {
    let at = now();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let repo = if i % 2 == 0 {
                repo.clone()
            } else {
                twin.clone()
            };
            tokio::spawn(async move {
                repo.claim_mail(
                    "reset",
                    &email("race@example.com"),
                    at,
                    Duration::from_secs(60),
                )
                .await
                .expect("claim")
            })
        })
        .collect();
    let mut held = 0;
    for task in tasks {
        held += usize::from(task.await.expect("task"));
    }
    assert_eq!(held, 1);
}

pub async fn import_creates_new_users_as_given_and_reports_the_rest_line_by_line(
    repo: DynRepository,
) {
    let existing = create(&repo, "Existing", "existing@example.com", Some("taken")).await;
    let given = User {
        created_at: moment(10),
        updated_at: moment(20),
        password_changed_at: moment(5),
        last_login_at: Some(moment(30)),
        email_verified: true,
        role: Role::Admin,
        ..new_user("Given", "given@example.com", Some("given"))
    };
    let same_id = User {
        id: existing.id,
        ..new_user("Same Id", "same.id@example.com", None)
    };
    let lines = vec![
        given.clone(),
        // Already there: by id, and by email in another case.
        same_id,
        new_user("Shouting", "EXISTING@example.com", None),
        // A username someone has, in another case.
        new_user("Taker", "taker@example.com", Some("TAKEN")),
        // An earlier line of this batch took the email, then the username.
        new_user("Twice", "given@example.com", None),
        new_user("Copycat", "copycat@example.com", Some("Given")),
        User {
            id: given.id,
            ..new_user("Clone", "clone@example.com", None)
        },
        // Fine, after all the refusals.
        new_user("Last", "last@example.com", None),
    ];
    let outcomes = repo.import_users(&lines).await.expect("import");
    assert_eq!(
        outcomes,
        [
            Imported::Created,
            Imported::Exists,
            Imported::Exists,
            Imported::UsernameTaken,
            Imported::Exists,
            Imported::UsernameTaken,
            Imported::Exists,
            Imported::Created,
        ]
    );
    assert_eq!(fetch(&repo, &given.id).await, given);
    assert_eq!(fetch(&repo, &existing.id).await, existing);
    assert!(
        repo.user_by_email(&email("taker@example.com"))
            .await
            .expect("user_by_email")
            .is_none()
    );
    assert_eq!(user_count(&repo).await, 3);

    // The same file again creates nothing.
    let again = repo.import_users(&lines).await.expect("import again");
    assert!(
        again.iter().all(|outcome| *outcome != Imported::Created),
        "{again:?}"
    );
    assert_eq!(user_count(&repo).await, 3);
}

/// Every filter but none, walked by cursor two at a time in every sort and order, lists
/// exactly its users in that order, with its total on every page: a role or a state alone
/// (whose pages merge the other's values), both, and searches with and without them.
pub async fn every_filter_walked_by_cursor_lists_its_users_in_every_sort(repo: DynRepository) {
    let mut everyone = Vec::new();
    let names = ["Kilo", "Alpha", "Kilo", "Zulu", "Mike", "Bravo", "Kilo"];
    for display in names {
        for role in [Role::Admin, Role::User] {
            let n = everyone.len();
            let user = User {
                role,
                active: n % 3 != 1,
                created_at: moment(100 - 7 * n as i64),
                // Some of them match the searches by email alone.
                ..new_user(
                    display,
                    &format!("{}{}@example.com", ["kilo", "user"][n % 2], (n * 5) % 14),
                    None,
                )
            };
            everyone.push(insert(&repo, user).await);
        }
    }
    let filters = [
        (None, Some(Role::Admin), None),
        (None, None, Some(false)),
        (None, None, Some(true)),
        (None, Some(Role::User), Some(true)),
        (Some("KILO"), None, None),
        (Some("kilo"), Some(Role::Admin), None),
        (Some("Kilo"), None, Some(true)),
        (Some("kil"), Some(Role::User), Some(false)),
        // Too short for the search index: looked for in every row of each merged walk.
        (Some("KI"), Some(Role::Admin), None),
        (Some("lo"), None, Some(true)),
    ];
    for (q, role, active) in filters {
        let filter = UserFilter {
            q: q.map(str::to_owned),
            role,
            active,
        };
        let listed: Vec<User> = everyone
            .iter()
            .filter(|u| {
                q.is_none_or(|q| {
                    let q = q.to_lowercase();
                    u.name.as_str().to_lowercase().contains(&q) || u.email.as_str().contains(&q)
                }) && role.is_none_or(|r| u.role == r)
                    && active.is_none_or(|a| u.active == a)
            })
            .cloned()
            .collect();
        assert!(listed.len() >= 2, "{filter:?} lists a few users");
        for sort in [SortField::CreatedAt, SortField::Name, SortField::Email] {
            for order in [SortOrder::Ascending, SortOrder::Descending] {
                let what = format!("{filter:?} {sort:?} {order:?}");
                let query = ListQuery {
                    sort,
                    order,
                    filter: filter.clone(),
                    limit: 2,
                    ..ListQuery::default()
                };
                let walked = walk_by_cursor(&repo, &query, listed.len(), &what).await;
                let expected = expected_order(&listed, order, |u| sort_value(u, sort));
                assert_eq!(ids(&walked), expected, "{what}");
            }
        }
    }
}
