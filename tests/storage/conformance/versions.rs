//! Guarded writes (`update_user_if`, `delete_user_if`): made only while the user is still as
//! read, checked atomically with the write, so that of two writes from one read one wins.

use super::*;

/// The other writes that may come between a read and a guarded write: each changes one
/// stored field.
fn other_writes() -> Vec<UserPatch> {
    vec![
        UserPatch::new().set(UserField::Name(name("Someone Else"))),
        UserPatch::new().set(UserField::Username(Some(username("someone")))),
        UserPatch::new().set(UserField::Email(email("someone@example.com"))),
        UserPatch::new().set(UserField::Role(Role::Admin)),
        UserPatch::new().set(UserField::Active(false)),
        UserPatch::new().set(UserField::UpdatedAt(moment(10))),
        UserPatch::new().set(UserField::LastLoginAt(moment(20))),
        UserPatch::new().set(UserField::LockedUntil(Some(moment(30)))),
        UserPatch::new().set(UserField::EmailVerified(true)),
        UserPatch::new().set(UserField::PasswordHash("$2b$04$another".into())),
    ]
}

pub async fn a_guarded_update_applies_to_the_user_as_read_and_is_refused_after_another_write(
    repo: DynRepository,
) {
    // The admin keeps an active admin around, so that no write here meets that rule.
    insert(&repo, admin_user("Admin", "admin@example.com")).await;
    let user = create(&repo, "Mario", "mario@example.com", Some("mario")).await;
    let rename = UserPatch::new()
        .set(UserField::Name(name("Luigi")))
        .set(UserField::UpdatedAt(moment(1)));
    let renamed = repo
        .update_user_if(&user.id, &rename, &user)
        .await
        .expect("a guarded update of the user as read")
        .expect("the user exists");
    assert_eq!(renamed.name, name("Luigi"));
    assert_eq!(fetch(&repo, &user.id).await, renamed);
    // The first read is stale now.
    let again = UserPatch::new().set(UserField::Name(name("Stale")));
    assert!(matches!(
        repo.update_user_if(&user.id, &again, &user).await,
        Err(StorageError::Changed)
    ));
    assert_eq!(fetch(&repo, &user.id).await, renamed, "nothing was written");

    for other in other_writes() {
        let read = fetch(&repo, &user.id).await;
        let after_other = update(&repo, &user.id, other.clone()).await;
        let refused = repo
            .update_user_if(
                &user.id,
                &UserPatch::new().set(UserField::Name(name("Too Late"))),
                &read,
            )
            .await;
        assert!(
            matches!(refused, Err(StorageError::Changed)),
            "after {other:?}: {refused:?}"
        );
        assert_eq!(fetch(&repo, &user.id).await, after_other, "after {other:?}");
    }

    // No such user: None, as for an unguarded update.
    let ghost = new_user("Ghost", "ghost@example.com", None);
    assert!(
        repo.update_user_if(&ghost.id, &rename, &ghost)
            .await
            .expect("update of nobody")
            .is_none()
    );
}

pub async fn a_guarded_delete_applies_to_the_user_as_read_and_is_refused_after_another_write(
    repo: DynRepository,
) {
    insert(&repo, admin_user("Admin", "admin@example.com")).await;
    let user = create(&repo, "Mario", "mario@example.com", Some("mario")).await;
    for other in other_writes() {
        let read = fetch(&repo, &user.id).await;
        let after_other = update(&repo, &user.id, other.clone()).await;
        let refused = repo.delete_user_if(&user.id, &read).await;
        assert!(
            matches!(refused, Err(StorageError::Changed)),
            "after {other:?}: {refused:?}"
        );
        assert_eq!(fetch(&repo, &user.id).await, after_other, "after {other:?}");
    }
    let read = fetch(&repo, &user.id).await;
    assert!(repo.delete_user_if(&user.id, &read).await.expect("delete"));
    assert!(repo.user_by_id(&user.id).await.expect("read").is_none());
    assert!(
        !repo
            .delete_user_if(&user.id, &read)
            .await
            .expect("a second delete")
    );
}

pub async fn guarded_writes_keep_the_last_active_admin(repo: DynRepository) {
    let admin = insert(&repo, admin_user("Admin", "admin@example.com")).await;
    let demote = UserPatch::new().set(UserField::Active(false));
    assert!(matches!(
        repo.update_user_if(&admin.id, &demote, &admin).await,
        Err(StorageError::LastActiveAdmin)
    ));
    assert!(matches!(
        repo.delete_user_if(&admin.id, &admin).await,
        Err(StorageError::LastActiveAdmin)
    ));
    assert_eq!(fetch(&repo, &admin.id).await, admin);
    // With another active admin, the guarded removal goes ahead.
    insert(&repo, admin_user("Second", "second@example.com")).await;
    let demoted = repo
        .update_user_if(&admin.id, &demote, &admin)
        .await
        .expect("demote")
        .expect("the admin exists");
    assert!(!demoted.active);
    // And a stale read of an admin is refused as any other.
    assert!(matches!(
        repo.delete_user_if(&admin.id, &admin).await,
        Err(StorageError::Changed)
    ));
    assert!(
        repo.delete_user_if(&admin.id, &demoted)
            .await
            .expect("delete")
    );
}

/// Two handles on one database, as two service instances, each write from the same read at
/// the same moment: exactly one applies, the other finds the user changed.
pub async fn concurrent_guarded_writes_from_one_read_have_one_winner(
    repo: DynRepository,
    twin: DynRepository,
) {
    insert(&repo, admin_user("Admin", "admin@example.com")).await;
    for round in 0..30 {
        let user = create(&repo, "Mario", &format!("mario{round}@example.com"), None).await;
        let write = |repo: DynRepository, user: User, which: usize| {
            tokio::spawn(async move {
                // Every third round, one of the two deletes instead.
                if round % 3 == 2 && which == 1 {
                    return repo
                        .delete_user_if(&user.id, &user)
                        .await
                        .map(|deleted| deleted.then(|| "deleted".to_owned()));
                }
                let new_name = format!("Writer {which}");
                let patch = UserPatch::new().set(UserField::Name(name(&new_name)));
                repo.update_user_if(&user.id, &patch, &user)
                    .await
                    .map(|updated| updated.map(|u| u.name.as_str().to_owned()))
            })
        };
        let (first, second) = tokio::join!(
            write(repo.clone(), user.clone(), 0),
            write(twin.clone(), user.clone(), 1)
        );
        let outcomes = [first.expect("task"), second.expect("task")];
        let winners: Vec<&str> = outcomes
            .iter()
            .filter_map(|outcome| match outcome {
                Ok(Some(won)) => Some(won.as_str()),
                // Lost: the user changed, or (after a delete won) is gone.
                Err(StorageError::Changed) | Ok(None) => None,
                other => panic!("round {round}: unexpected {other:?}"),
            })
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        let stored = repo.user_by_id(&user.id).await.expect("read");
        match (winners[0], stored) {
            ("deleted", None) => {}
            (won, Some(stored)) => assert_eq!(stored.name.as_str(), won, "round {round}"),
            (won, None) => panic!("round {round}: {won} won, yet the user is gone"),
        }
    }
}
