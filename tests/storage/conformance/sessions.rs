//! Sessions: what a login starts, what its refresh tokens keep alive, and how it ends.
//!
//! Times here are fixed [`moment`]s, and the "now" of each call is given explicitly, so that
//! liveness is judged at known instants. Every session expires well after every other one
//! is created: the backends may sweep sessions that expired before a write.

use std::net::IpAddr;

use super::*;

/// Stores `session` and returns it.
async fn open(repo: &DynRepository, session: Session) -> Session {
    repo.create_session(&session)
        .await
        .unwrap_or_else(|e| panic!("create_session {}: {e:?}", session.id));
    session
}

/// A session of `user_id` created `created` seconds after [`moment`]`(0)` and expiring at
/// `expires`.
fn at(user_id: UserId, created: i64, expires: i64) -> Session {
    session_of(user_id, moment(created), moment(expires))
}

/// Whether `session` is a live session of `user_id` at `instant`, as `user_with_session`
/// tells it; panics when the user is not found.
async fn is_live(
    repo: &DynRepository,
    user_id: UserId,
    session: &SessionId,
    instant: OffsetDateTime,
) -> bool {
    repo.user_with_session(&user_id, session, instant)
        .await
        .expect("user_with_session")
        .expect("the user exists")
        .1
}

async fn live_ids(
    repo: &DynRepository,
    user_id: UserId,
    instant: OffsetDateTime,
) -> Vec<SessionId> {
    repo.live_sessions(&user_id, instant)
        .await
        .expect("live_sessions")
        .into_iter()
        .map(|s| s.id)
        .collect()
}

/// The order `live_sessions` promises: newest first, ties broken by id, descending.
fn newest_first(sessions: &[&Session]) -> Vec<SessionId> {
    let mut sorted = sessions.to_vec();
    sorted.sort_by(|a, b| (b.created_at, b.id.as_str()).cmp(&(a.created_at, a.id.as_str())));
    sorted.into_iter().map(|s| s.id.clone()).collect()
}

async fn end(
    repo: &DynRepository,
    user_id: UserId,
    session: &SessionId,
    instant: OffsetDateTime,
) -> bool {
    repo.end_session(&user_id, session, instant)
        .await
        .expect("end_session")
}

async fn use_token(repo: &DynRepository, token: &str) -> RefreshTokenUse {
    repo.use_refresh_token(token, now())
        .await
        .expect("use_refresh_token")
}

pub async fn a_session_round_trips_with_its_origin(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let precise = |seconds: i64| {
        moment(seconds)
            .replace_nanosecond(987_654_321)
            .expect("a valid nanosecond")
    };
    let ipv4: IpAddr = "203.0.113.7".parse().expect("an IPv4 address");
    let ipv6: IpAddr = "2001:db8::7".parse().expect("an IPv6 address");
    let browser = Session {
        id: SessionId::generate(),
        user_id: user.id,
        created_at: precise(0),
        last_used_at: precise(5),
        expires_at: precise(1000),
        origin: Origin {
            ip: Some(ipv4),
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0 ✓".into()),
        },
    };
    let phone = Session {
        created_at: precise(10),
        last_used_at: precise(10),
        origin: Origin {
            ip: Some(ipv6),
            user_agent: None,
        },
        ..at(user.id, 0, 1000)
    };
    let bare = Session {
        created_at: moment(20),
        last_used_at: moment(30),
        ..at(user.id, 0, 1000)
    };
    for session in [&browser, &phone, &bare] {
        open(&repo, session.clone()).await;
    }
    let truncated = |session: &Session| Session {
        created_at: truncate_to_millis(session.created_at),
        last_used_at: truncate_to_millis(session.last_used_at),
        expires_at: truncate_to_millis(session.expires_at),
        ..session.clone()
    };
    let stored = repo
        .live_sessions(&user.id, moment(100))
        .await
        .expect("live_sessions");
    assert_eq!(
        stored,
        vec![truncated(&bare), truncated(&phone), truncated(&browser)]
    );
    for session in &stored {
        assert_millis(session.created_at, "created_at");
        assert_millis(session.last_used_at, "last_used_at");
        assert_millis(session.expires_at, "expires_at");
    }
}

pub async fn user_with_session_tells_live_ended_expired_and_others_sessions(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let other = create(&repo, "Luigi", "luigi@example.com", None).await;
    let live = open(&repo, at(user.id, 0, 100)).await;
    let ended = open(&repo, at(user.id, 0, 100)).await;
    let theirs = open(&repo, at(other.id, 0, 100)).await;
    assert!(end(&repo, user.id, &ended.id, moment(10)).await);

    let check = |id: UserId, session: SessionId, instant: OffsetDateTime| {
        let repo = repo.clone();
        async move {
            repo.user_with_session(&id, &session, instant)
                .await
                .expect("user_with_session")
        }
    };
    // The user comes back whole, with the answer about the session.
    assert_eq!(
        check(user.id, live.id.clone(), moment(50)).await,
        Some((user.clone(), true))
    );
    assert_eq!(
        check(
            user.id,
            live.id.clone(),
            moment(100) - time::Duration::milliseconds(1)
        )
        .await,
        Some((user.clone(), true)),
        "live until the last millisecond"
    );
    assert_eq!(
        check(user.id, live.id.clone(), moment(100)).await,
        Some((user.clone(), false)),
        "dead at its expires_at"
    );
    assert_eq!(
        check(user.id, live.id.clone(), moment(500)).await,
        Some((user.clone(), false)),
        "expired"
    );
    assert_eq!(
        check(user.id, ended.id.clone(), moment(50)).await,
        Some((user.clone(), false)),
        "ended"
    );
    assert_eq!(
        check(user.id, theirs.id.clone(), moment(50)).await,
        Some((user.clone(), false)),
        "another user's session"
    );
    assert_eq!(
        check(other.id, theirs.id.clone(), moment(50)).await,
        Some((other.clone(), true))
    );
    assert_eq!(
        check(other.id, live.id.clone(), moment(50)).await,
        Some((other.clone(), false)),
        "the user's session is not the other's"
    );
    assert_eq!(
        check(user.id, SessionId::generate(), moment(50)).await,
        Some((user.clone(), false)),
        "an unknown session"
    );
    assert_eq!(
        check(UserId::generate(), live.id.clone(), moment(50)).await,
        None,
        "an unknown user"
    );
}

pub async fn live_sessions_are_newest_first_and_only_the_users_live_ones(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let other = create(&repo, "Luigi", "luigi@example.com", None).await;
    // Created out of order, two of them at the same instant.
    let middle_a = open(&repo, at(user.id, 10, 1000)).await;
    let oldest = open(&repo, at(user.id, 0, 1000)).await;
    let newest = open(&repo, at(user.id, 30, 1000)).await;
    let middle_b = open(&repo, at(user.id, 10, 1000)).await;
    let ended = open(&repo, at(user.id, 20, 1000)).await;
    let expiring = open(&repo, at(user.id, 25, 60)).await;
    open(&repo, at(other.id, 35, 1000)).await;
    assert!(end(&repo, user.id, &ended.id, moment(40)).await);

    assert_eq!(
        live_ids(&repo, user.id, moment(50)).await,
        newest_first(&[&middle_a, &oldest, &newest, &middle_b, &expiring])
    );
    // At its expires_at a session is no longer listed.
    assert_eq!(
        live_ids(&repo, user.id, moment(60)).await,
        newest_first(&[&middle_a, &oldest, &newest, &middle_b])
    );
    assert_eq!(
        live_ids(&repo, user.id, moment(1000)).await,
        Vec::<SessionId>::new(),
        "all expired"
    );
    assert_eq!(live_ids(&repo, other.id, moment(50)).await.len(), 1);
    assert_eq!(
        live_ids(&repo, UserId::generate(), moment(50)).await,
        Vec::<SessionId>::new()
    );
}

pub async fn end_session_refuses_another_users_ended_or_expired_sessions(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let other = create(&repo, "Luigi", "luigi@example.com", None).await;
    let mine = open(&repo, at(user.id, 0, 100)).await;
    let theirs = open(&repo, at(other.id, 0, 100)).await;
    let expired = open(&repo, at(user.id, 0, 40)).await;

    assert!(
        !end(&repo, other.id, &mine.id, moment(50)).await,
        "not theirs to end"
    );
    assert!(is_live(&repo, user.id, &mine.id, moment(50)).await);
    assert!(
        !end(&repo, user.id, &theirs.id, moment(50)).await,
        "not mine to end"
    );
    assert!(is_live(&repo, other.id, &theirs.id, moment(50)).await);
    assert!(
        !end(&repo, user.id, &expired.id, moment(50)).await,
        "expired"
    );
    assert!(
        !end(&repo, user.id, &mine.id, moment(100)).await,
        "expired at its expires_at"
    );
    assert!(
        !end(&repo, user.id, &SessionId::generate(), moment(50)).await,
        "unknown"
    );

    assert!(end(&repo, user.id, &mine.id, moment(50)).await);
    assert!(!is_live(&repo, user.id, &mine.id, moment(50)).await);
    assert!(
        !end(&repo, user.id, &mine.id, moment(60)).await,
        "ended already"
    );
    assert!(is_live(&repo, other.id, &theirs.id, moment(60)).await);
}

pub async fn end_user_sessions_ends_and_counts_only_the_users_live_sessions(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let other = create(&repo, "Luigi", "luigi@example.com", None).await;
    for created in [0, 5, 10] {
        open(&repo, at(user.id, created, 100)).await;
    }
    let ended = open(&repo, at(user.id, 0, 100)).await;
    open(&repo, at(user.id, 0, 40)).await;
    let theirs = open(&repo, at(other.id, 0, 100)).await;
    assert!(end(&repo, user.id, &ended.id, moment(20)).await);
    // A login of each, waiting for its second step.
    for (who, hash) in [(user.id, "waiting-user"), (other.id, "waiting-other")] {
        repo.insert_mfa_challenge(OneTimeTokenRecord {
            token_hash: hash.to_owned(),
            user_id: who,
            created_at: moment(0),
            expires_at: moment(100),
        })
        .await
        .expect("insert_mfa_challenge");
    }

    assert_eq!(
        repo.end_user_sessions(&user.id, moment(50))
            .await
            .expect("end_user_sessions"),
        3,
        "the live ones: not the ended one, not the expired one"
    );
    assert_eq!(live_ids(&repo, user.id, moment(50)).await, vec![]);
    let attempt = |hash: &'static str| {
        let repo = repo.clone();
        async move {
            repo.attempt_mfa_challenge(hash, moment(50), 5)
                .await
                .expect("attempt_mfa_challenge")
        }
    };
    assert_eq!(
        attempt("waiting-user").await,
        None,
        "its second step ended too"
    );
    assert_eq!(attempt("waiting-other").await, Some(other.id));
    assert_eq!(
        repo.end_user_sessions(&user.id, moment(60))
            .await
            .expect("end_user_sessions"),
        0,
        "none left"
    );
    assert_eq!(live_ids(&repo, other.id, moment(60)).await, vec![theirs.id]);
    assert_eq!(
        repo.end_user_sessions(&UserId::generate(), moment(60))
            .await
            .expect("end_user_sessions"),
        0
    );
}

pub async fn a_refresh_token_moves_its_sessions_last_use_and_extends_its_expiry(
    repo: DynRepository,
) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let session = open(&repo, at(user.id, 0, 100)).await;
    let token = |hash: &str, created_at: OffsetDateTime, expires: i64| RefreshTokenRecord {
        token_hash: hash.to_owned(),
        session_id: session.id.clone(),
        user_id: user.id,
        created_at,
        expires_at: moment(expires),
    };
    let stored = |instant: OffsetDateTime| {
        let repo = repo.clone();
        async move {
            repo.live_sessions(&user.id, instant)
                .await
                .expect("live_sessions")
        }
    };

    repo.insert_refresh_token(token("t1", moment(10), 200))
        .await
        .expect("insert");
    assert_eq!(
        stored(moment(20)).await,
        vec![Session {
            last_used_at: moment(10),
            expires_at: moment(200),
            ..session.clone()
        }]
    );
    // The session now lives as long as its newest token.
    assert!(is_live(&repo, user.id, &session.id, moment(150)).await);

    // A token that expires sooner moves the last use but never shortens the session.
    let precise = moment(20)
        .replace_nanosecond(123_456_789)
        .expect("a valid nanosecond");
    repo.insert_refresh_token(token("t2", precise, 150))
        .await
        .expect("insert");
    assert_eq!(
        stored(moment(30)).await,
        vec![Session {
            last_used_at: truncate_to_millis(precise),
            expires_at: moment(200),
            ..session.clone()
        }]
    );
    assert!(
        is_live(
            &repo,
            user.id,
            &session.id,
            moment(200) - time::Duration::milliseconds(1)
        )
        .await
    );
    assert!(!is_live(&repo, user.id, &session.id, moment(200)).await);

    // A token stored into an ended session changes nothing of it: it stays ended.
    assert!(end(&repo, user.id, &session.id, moment(40)).await);
    repo.insert_refresh_token(token("t3", moment(50), 300))
        .await
        .expect("insert");
    assert!(!is_live(&repo, user.id, &session.id, moment(60)).await);
    assert_eq!(stored(moment(60)).await, vec![]);
    assert_eq!(use_token(&repo, "t3").await, RefreshTokenUse::Revoked);
}

pub async fn a_replay_names_its_session_and_ending_that_session_revokes_its_tokens(
    repo: DynRepository,
) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let session = start_session(&repo, user.id).await;
    let bystander = start_session(&repo, user.id).await;
    repo.insert_refresh_token(refresh("first", &session, user.id))
        .await
        .expect("insert");
    repo.insert_refresh_token(refresh("elsewhere", &bystander, user.id))
        .await
        .expect("insert");
    assert!(matches!(
        use_token(&repo, "first").await,
        RefreshTokenUse::Spent(_)
    ));
    // The rotation: the next token of the session.
    repo.insert_refresh_token(refresh("second", &session, user.id))
        .await
        .expect("insert");

    // The spent token comes back: a thief or a confused client.
    let replay = use_token(&repo, "first").await;
    assert_eq!(
        replay,
        RefreshTokenUse::Replayed {
            session_id: session.clone(),
            user_id: user.id,
        }
    );
    // The services end the session the replay names.
    let RefreshTokenUse::Replayed {
        session_id,
        user_id,
    } = replay
    else {
        unreachable!()
    };
    assert!(end(&repo, user_id, &session_id, now()).await);
    for token in ["first", "second"] {
        assert_eq!(
            use_token(&repo, token).await,
            RefreshTokenUse::Revoked,
            "{token}"
        );
    }
    assert!(!is_live(&repo, user.id, &session, now()).await);
    // The user's other session is untouched.
    assert!(is_live(&repo, user.id, &bystander, now()).await);
    assert!(matches!(
        use_token(&repo, "elsewhere").await,
        RefreshTokenUse::Spent(_)
    ));
}

pub async fn peeking_at_a_refresh_token_tells_its_state_and_spends_nothing(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let session = start_session(&repo, user.id).await;
    repo.insert_refresh_token(refresh("kept", &session, user.id))
        .await
        .expect("insert");
    let peek = |token: &'static str| {
        let repo = repo.clone();
        async move {
            repo.peek_refresh_token(token)
                .await
                .expect("peek_refresh_token")
        }
    };
    // Looked at as often as anyone likes, the token stays live and can still be spent once.
    for _ in 0..2 {
        match peek("kept").await {
            RefreshTokenUse::Live(found) => {
                assert_eq!(found.session_id, session);
                assert_eq!(found.user_id, user.id);
                assert_eq!(found.token_hash, "kept");
            }
            other => panic!("expected Live, got {other:?}"),
        }
    }
    assert!(matches!(
        use_token(&repo, "kept").await,
        RefreshTokenUse::Spent(_)
    ));
    // Once spent, a look finds what a second use would: a replay of its session.
    assert_eq!(
        peek("kept").await,
        RefreshTokenUse::Replayed {
            session_id: session.clone(),
            user_id: user.id,
        }
    );
    assert_eq!(peek("nobody's").await, RefreshTokenUse::Unknown);
    assert!(end(&repo, user.id, &session, now()).await);
    assert_eq!(peek("kept").await, RefreshTokenUse::Revoked);
}

pub async fn end_session_of_token_ends_a_live_session_once(repo: DynRepository) {
    let user = create(&repo, "Mario", "mario@example.com", None).await;
    let session = start_session(&repo, user.id).await;
    let other = start_session(&repo, user.id).await;
    let ended = start_session(&repo, user.id).await;
    for (token, of) in [
        ("a", &session),
        ("b", &session),
        ("c", &other),
        ("d", &ended),
    ] {
        repo.insert_refresh_token(refresh(token, of, user.id))
            .await
            .expect("insert");
    }
    assert!(end(&repo, user.id, &ended, now()).await);
    let end_of = |token: &'static str| {
        let repo = repo.clone();
        async move {
            repo.end_session_of_token(token, now())
                .await
                .expect("end_session_of_token")
        }
    };

    assert_eq!(end_of("a").await, Some((user.id, session.clone())));
    assert!(!is_live(&repo, user.id, &session, now()).await);
    assert_eq!(end_of("a").await, None, "the session ended already");
    assert_eq!(end_of("b").await, None, "its sibling finds it ended too");
    assert_eq!(end_of("d").await, None, "a session ended otherwise");
    assert_eq!(end_of("unknown").await, None);
    assert!(
        !end(&repo, user.id, &session, now()).await,
        "nothing left to end"
    );
    // The user's other session lives on.
    assert!(is_live(&repo, user.id, &other, now()).await);
    assert!(matches!(
        use_token(&repo, "c").await,
        RefreshTokenUse::Spent(_)
    ));
    // A spent token still names its session for a logout.
    assert_eq!(end_of("c").await, Some((user.id, other.clone())));
    assert_eq!(use_token(&repo, "c").await, RefreshTokenUse::Revoked);
}
