//! Unit tests of the services' rules (access, tokens, updates) on the in-memory repository.

use std::{sync::Arc, time::Duration};

use futures_util::FutureExt;

use super::*;
use crate::{
    domain::{
        DisplayName, Email, NewPassword, Origin, Role, Secret, SessionId, User, UserField, UserId,
        UserPatch,
    },
    mail::{MailSettings, MailTransport},
    storage::{MemoryRepository, Repository},
};

const PASSWORD: &str = "first password";

struct Harness {
    services: Services,
    repo: Arc<MemoryRepository>,
}

fn settings(allow_registration: bool) -> ServiceSettings {
    ServiceSettings {
        bcrypt_cost: 4,
        tokens: TokenSettings {
            keys: Keyring::hmac(&Secret::new("0123456789abcdef0123456789abcdef")),
            issuer: "user-service".to_owned(),
            audience: None,
            access_ttl: Duration::from_secs(900),
        },
        accounts: AccountSettings {
            allow_registration,
            refresh_token_ttl: Duration::from_secs(3600),
            reset_token_ttl: Duration::from_secs(1800),
            password_reset_url: "http://localhost/reset".parse().unwrap(),
            verification: VerificationSettings {
                url: "http://localhost/verify".parse().unwrap(),
                token_ttl: Duration::from_secs(3600),
            },
            require_verified_email: false,
            mail_throttle: Some(Duration::from_secs(60)),
            lockout: Some(Lockout {
                threshold: 3,
                duration: Duration::from_secs(60),
            }),
        },
        mail: MailSettings {
            transport: MailTransport::Disabled,
            from: "no-reply@localhost".parse().unwrap(),
        },
        mfa_issuer: "user-service".to_owned(),
        audit_retention: Duration::from_secs(86_400),
    }
}

/// Where the tests' requests come from.
fn here() -> Origin {
    Origin::new(Some([127, 0, 0, 1].into()), Some("unit-test"))
}

async fn harness_with(settings: ServiceSettings) -> Harness {
    let repo = Arc::new(MemoryRepository::new());
    let services = Services::new(settings, repo.clone()).await.unwrap();
    Harness { services, repo }
}

async fn harness() -> Harness {
    harness_with(settings(true)).await
}

fn account(email: &str) -> NewAccount {
    NewAccount {
        name: DisplayName::parse("Someone").unwrap(),
        email: Email::parse(email).unwrap(),
        username: None,
        password: NewPassword::parse(PASSWORD).unwrap(),
    }
}

impl Harness {
    /// A stored user and the actor they are once signed in.
    async fn user(&self, email: &str, role: Role) -> Actor {
        let user = self
            .services
            .users
            .insert(account(email), role, true, false)
            .await
            .unwrap();
        Actor::new(user, SessionId::generate(), here())
    }

    async fn stored(&self, user: &User) -> User {
        self.repo.user_by_id(&user.id).await.unwrap().unwrap()
    }

    async fn update(
        &self,
        access: AccountAccess<'_>,
        changes: UserChanges,
    ) -> Result<User, ServiceError> {
        self.services.users.update(access, changes).await
    }

    /// A live reset token for `user`, as a mailed link would carry it.
    async fn reset_token(&self, user: &Actor) -> String {
        let token = OpaqueToken::generate();
        let now = crate::domain::now();
        self.repo
            .insert_reset_token(crate::storage::OneTimeTokenRecord {
                token_hash: token.hash,
                user_id: user.id(),
                created_at: now,
                expires_at: now + Duration::from_secs(600),
            })
            .await
            .unwrap();
        token.secret
    }

    async fn login(&self, email: &str, password: &str) -> Result<TokenPair, ServiceError> {
        match self.login_outcome(email, password).await? {
            LoginOutcome::Tokens(pair) => Ok(pair),
            LoginOutcome::MfaRequired { .. } => panic!("MFA is not on for {email}"),
        }
    }

    async fn login_outcome(
        &self,
        email: &str,
        password: &str,
    ) -> Result<LoginOutcome, ServiceError> {
        let id = LoginId::Email(Email::parse(email).unwrap());
        self.services.accounts.login(id, password, &here()).await
    }
}

fn changes() -> UserChanges {
    UserChanges::default()
}

#[tokio::test]
async fn only_admins_get_the_admin_proof() {
    let h = harness().await;
    let user = h.user("user@example.com", Role::User).await;
    let admin = h.user("admin@example.com", Role::Admin).await;
    assert!(matches!(
        user.admin(),
        Err(ServiceError::Forbidden(Refusal::NotAdmin))
    ));
    assert!(admin.admin().is_ok());
}

#[tokio::test]
async fn users_may_act_on_their_own_account_and_admins_on_any() {
    let h = harness().await;
    let user = h.user("user@example.com", Role::User).await;
    let other = h.user("other@example.com", Role::User).await;
    let admin = h.user("admin@example.com", Role::Admin).await;
    assert!(user.access(user.id()).is_ok());
    assert!(matches!(
        user.access(other.id()),
        Err(ServiceError::Forbidden(Refusal::NotTheirAccount))
    ));
    let read = h
        .services
        .users
        .get(admin.access(other.id()).unwrap())
        .await
        .unwrap();
    assert_eq!(read.id, other.id());
}

#[tokio::test]
async fn an_authenticated_read_of_oneself_costs_one_round_trip_session_check_included() {
    let h = harness().await;
    h.user("me@example.com", Role::User).await;
    let pair = h.login("me@example.com", PASSWORD).await.unwrap();
    let before = h.repo.round_trips();
    let actor = h
        .services
        .accounts
        .authenticate(&pair.access_token, here())
        .await
        .unwrap();
    let me = h
        .services
        .users
        .get(actor.access(actor.id()).unwrap())
        .await
        .unwrap();
    assert_eq!(me.id, actor.id());
    // The user and the session's state come in one round trip, and the read is reused.
    assert_eq!(h.repo.round_trips() - before, 1);
}

#[tokio::test]
async fn only_admins_may_set_role_or_active() {
    let h = harness().await;
    let user = h.user("user@example.com", Role::User).await;
    for change in [
        UserChanges {
            role: Some(Role::Admin),
            ..changes()
        },
        UserChanges {
            active: Some(true),
            ..changes()
        },
    ] {
        let refused = h.update(user.access(user.id()).unwrap(), change).await;
        assert!(matches!(
            refused,
            Err(ServiceError::Forbidden(Refusal::AdminOnlyFields))
        ));
    }
    assert_eq!(h.stored(user.user()).await, *user.user());
}

#[tokio::test]
async fn a_new_own_password_needs_the_current_one_and_ends_every_session() {
    let h = harness().await;
    let user = h.user("user@example.com", Role::User).await;
    let session = h.login("user@example.com", PASSWORD).await.unwrap();
    let new_password = || Some(NewPassword::parse("second password").unwrap());
    for current in [None, Some("wrong password".to_owned())] {
        let refused = h
            .update(
                user.access(user.id()).unwrap(),
                UserChanges {
                    password: new_password(),
                    current_password: current,
                    ..changes()
                },
            )
            .await;
        assert!(matches!(
            refused,
            Err(ServiceError::Forbidden(Refusal::CurrentPasswordWrong))
        ));
    }
    let changed = h
        .update(
            user.access(user.id()).unwrap(),
            UserChanges {
                password: new_password(),
                current_password: Some(PASSWORD.to_owned()),
                ..changes()
            },
        )
        .await
        .unwrap();
    assert!(changed.password_changed_at > user.user().password_changed_at);
    assert_eq!(changed.updated_at, changed.password_changed_at);
    assert!(matches!(
        h.services
            .accounts
            .refresh(&session.refresh_token, &here())
            .await,
        Err(ServiceError::InvalidCredentials(Credential::RefreshToken))
    ));
    assert!(h.login("user@example.com", "second password").await.is_ok());
}

#[tokio::test]
async fn an_admin_sets_another_users_password_without_theirs() {
    let h = harness().await;
    let user = h.user("user@example.com", Role::User).await;
    let admin = h.user("admin@example.com", Role::Admin).await;
    h.update(
        admin.access(user.id()).unwrap(),
        UserChanges {
            password: Some(NewPassword::parse("set by admin").unwrap()),
            ..changes()
        },
    )
    .await
    .unwrap();
    assert!(h.login("user@example.com", "set by admin").await.is_ok());
}

#[tokio::test]
async fn an_empty_change_writes_nothing_and_a_profile_change_moves_only_updated_at() {
    let h = harness().await;
    let user = h.user("user@example.com", Role::User).await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    let unchanged = h
        .update(user.access(user.id()).unwrap(), changes())
        .await
        .unwrap();
    assert_eq!(unchanged, *user.user());
    let renamed = h
        .update(
            user.access(user.id()).unwrap(),
            UserChanges {
                name: Some(DisplayName::parse("New Name").unwrap()),
                ..changes()
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.name.as_str(), "New Name");
    assert!(renamed.updated_at > user.user().updated_at);
    assert_eq!(renamed.password_changed_at, user.user().password_changed_at);
    assert_eq!(h.stored(&renamed).await, renamed);
}

#[tokio::test]
async fn a_login_records_its_time_without_counting_as_a_change() {
    let h = harness().await;
    let user = h.user("user@example.com", Role::User).await;
    h.login("user@example.com", PASSWORD).await.unwrap();
    let stored = h.stored(user.user()).await;
    assert!(stored.last_login_at.is_some());
    assert_eq!(stored.updated_at, user.user().updated_at);
    assert_eq!(stored.password_changed_at, user.user().password_changed_at);
}

#[tokio::test]
async fn a_weaker_hash_is_replaced_at_login_without_moving_password_changed_at() {
    let weak = harness().await;
    weak.user("user@example.com", Role::User).await;
    let old = weak
        .repo
        .user_by_email(&Email::parse("user@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    let stronger = Services::new(
        ServiceSettings {
            bcrypt_cost: 5,
            ..settings(true)
        },
        weak.repo.clone(),
    )
    .await
    .unwrap();
    let id = LoginId::Email(old.email.clone());
    stronger
        .accounts
        .login(id, PASSWORD, &here())
        .await
        .unwrap();
    let upgraded = weak.stored(&old).await;
    assert!(upgraded.password_hash.starts_with("$2b$05$"));
    assert_eq!(upgraded.password_changed_at, old.password_changed_at);
}

#[tokio::test]
async fn the_last_active_admin_cannot_be_demoted_deactivated_or_deleted() {
    let h = harness().await;
    let admin = h.user("admin@example.com", Role::Admin).await;
    let proof = || admin.admin().unwrap();
    let demote = UserChanges {
        role: Some(Role::User),
        ..changes()
    };
    let users = &h.services.users;
    assert!(matches!(
        users
            .update(admin.access(admin.id()).unwrap(), demote)
            .await,
        Err(ServiceError::LastAdmin)
    ));
    assert!(matches!(
        users.set_active(proof(), admin.id(), false).await,
        Err(ServiceError::LastAdmin)
    ));
    assert!(matches!(
        users.delete(admin.access(admin.id()).unwrap()).await,
        Err(ServiceError::LastAdmin)
    ));
    let second = h.user("second@example.com", Role::Admin).await;
    // With a second active admin, either may go; an inactive one does not count.
    users.set_active(proof(), second.id(), false).await.unwrap();
    assert!(matches!(
        users.delete(admin.access(admin.id()).unwrap()).await,
        Err(ServiceError::LastAdmin)
    ));
    users.set_active(proof(), second.id(), true).await.unwrap();
    users
        .delete(admin.access(admin.id()).unwrap())
        .await
        .unwrap();
    assert!(h.repo.user_by_id(&admin.id()).await.unwrap().is_none());
}

#[tokio::test]
async fn registration_makes_active_users_and_can_be_switched_off() {
    let open = harness().await;
    let user = open
        .services
        .accounts
        .registration()
        .unwrap()
        .register(account("new@example.com"), &here())
        .await
        .unwrap();
    assert_eq!((user.role, user.active), (Role::User, true));
    assert!(matches!(
        open.services
            .accounts
            .registration()
            .unwrap()
            .register(account("NEW@example.com"), &here())
            .await,
        Err(ServiceError::Taken(_))
    ));
    let closed = harness_with(settings(false)).await;
    assert!(matches!(
        closed.services.accounts.registration(),
        Err(ServiceError::Forbidden(Refusal::RegistrationClosed))
    ));
}

#[tokio::test]
async fn access_tokens_die_with_their_user_its_deactivation_or_a_new_password() {
    let h = harness().await;
    let accounts = &h.services.accounts;
    let admin = h.user("admin@example.com", Role::Admin).await;
    let user = h.user("user@example.com", Role::User).await;
    let token = h
        .login("user@example.com", PASSWORD)
        .await
        .unwrap()
        .access_token;
    assert_eq!(
        accounts.authenticate(&token, here()).await.unwrap().id(),
        user.id()
    );
    assert!(matches!(
        accounts.authenticate("not.a.token", here()).await,
        Err(ServiceError::Unauthenticated)
    ));

    let users = &h.services.users;
    users
        .set_active(admin.admin().unwrap(), user.id(), false)
        .await
        .unwrap();
    assert!(matches!(
        accounts.authenticate(&token, here()).await,
        Err(ServiceError::Unauthenticated)
    ));
    // Deactivation ended the session: reactivation does not bring the token back.
    users
        .set_active(admin.admin().unwrap(), user.id(), true)
        .await
        .unwrap();
    assert!(matches!(
        accounts.authenticate(&token, here()).await,
        Err(ServiceError::Unauthenticated)
    ));
    let token = h
        .login("user@example.com", PASSWORD)
        .await
        .unwrap()
        .access_token;

    tokio::time::sleep(Duration::from_millis(2)).await;
    let new_password = UserChanges {
        password: Some(NewPassword::parse("second password").unwrap()),
        ..changes()
    };
    users
        .update(admin.access(user.id()).unwrap(), new_password)
        .await
        .unwrap();
    assert!(matches!(
        accounts.authenticate(&token, here()).await,
        Err(ServiceError::Unauthenticated)
    ));

    let token = h
        .login("user@example.com", "second password")
        .await
        .unwrap()
        .access_token;
    users
        .delete(admin.access(user.id()).unwrap())
        .await
        .unwrap();
    assert!(matches!(
        accounts.authenticate(&token, here()).await,
        Err(ServiceError::Unauthenticated)
    ));
}

#[tokio::test]
async fn refresh_rotates_and_a_replay_ends_the_session() {
    let h = harness().await;
    h.user("user@example.com", Role::User).await;
    let accounts = &h.services.accounts;
    let first = h.login("user@example.com", PASSWORD).await.unwrap();
    let second = accounts
        .refresh(&first.refresh_token, &here())
        .await
        .unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    // The first token again: a theft. The whole session ends, the newest token included.
    assert!(
        accounts
            .refresh(&first.refresh_token, &here())
            .await
            .is_err()
    );
    assert!(matches!(
        accounts.refresh(&second.refresh_token, &here()).await,
        Err(ServiceError::InvalidCredentials(Credential::RefreshToken))
    ));
    // Another session of the same user lives on.
    let other = h.login("user@example.com", PASSWORD).await.unwrap();
    assert!(
        accounts
            .refresh(&other.refresh_token, &here())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn an_access_token_for_a_refresh_token_leaves_it_live_in_the_same_session() {
    let h = harness().await;
    h.user("user@example.com", Role::User).await;
    let accounts = &h.services.accounts;
    let pair = h.login("user@example.com", PASSWORD).await.unwrap();
    let first = accounts
        .authenticate(&pair.access_token, here())
        .await
        .unwrap();
    for _ in 0..2 {
        let fresh = accounts
            .access_token(&pair.refresh_token, &here())
            .await
            .unwrap();
        let actor = accounts
            .authenticate(&fresh.access_token, here())
            .await
            .unwrap();
        assert_eq!(actor.session(), first.session());
        assert_eq!(fresh.expires_in, 900);
    }
    // Not rotated: the token still refreshes, once.
    assert!(accounts.refresh(&pair.refresh_token, &here()).await.is_ok());
}

#[tokio::test]
async fn an_access_token_is_refused_where_a_refresh_would_be() {
    let h = harness().await;
    let admin = h.user("admin@example.com", Role::Admin).await;
    let user = h.user("user@example.com", Role::User).await;
    let accounts = &h.services.accounts;
    let refused = |result: Result<crate::services::AccessToken, ServiceError>| {
        matches!(
            result,
            Err(ServiceError::InvalidCredentials(Credential::RefreshToken))
        )
    };
    assert!(refused(
        accounts.access_token("no such token", &here()).await
    ));

    // Spent by a refresh, then presented here: a replay, which ends the session.
    let rotated = h.login("user@example.com", PASSWORD).await.unwrap();
    let next = accounts
        .refresh(&rotated.refresh_token, &here())
        .await
        .unwrap();
    assert!(refused(
        accounts.access_token(&rotated.refresh_token, &here()).await
    ));
    assert!(matches!(
        accounts.refresh(&next.refresh_token, &here()).await,
        Err(ServiceError::InvalidCredentials(Credential::RefreshToken))
    ));

    // Ended by a logout.
    let out = h.login("user@example.com", PASSWORD).await.unwrap();
    accounts.logout(&out.refresh_token, &here()).await.unwrap();
    assert!(refused(
        accounts.access_token(&out.refresh_token, &here()).await
    ));

    // Older than the password.
    let old = h.login("user@example.com", PASSWORD).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    let patch = crate::domain::UserPatch::new().set(crate::domain::UserField::PasswordChangedAt(
        crate::domain::now(),
    ));
    h.repo.update_user(&user.id(), &patch).await.unwrap();
    assert!(refused(
        accounts.access_token(&old.refresh_token, &here()).await
    ));

    // A deactivated user.
    let live = h.login("user@example.com", PASSWORD).await.unwrap();
    h.services
        .users
        .set_active(admin.admin().unwrap(), user.id(), false)
        .await
        .unwrap();
    assert!(refused(
        accounts.access_token(&live.refresh_token, &here()).await
    ));
}

/// A refresh that spends its token just before a reset revokes the user's tokens must not
/// hand out a new session afterwards.
#[tokio::test]
async fn refresh_tokens_older_than_the_password_are_refused() {
    let h = harness().await;
    let user = h.user("race@example.com", Role::User).await;
    let pair = h.login("race@example.com", PASSWORD).await.unwrap();
    // The password changes, as a reset would, but this token escapes the revocation.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let patch = crate::domain::UserPatch::new()
        .set(crate::domain::UserField::PasswordHash("$2b$04$x".into()))
        .set(crate::domain::UserField::PasswordChangedAt(
            crate::domain::now(),
        ));
    h.repo.update_user(&user.id(), &patch).await.unwrap();
    assert!(matches!(
        h.services
            .accounts
            .refresh(&pair.refresh_token, &here())
            .await,
        Err(ServiceError::InvalidCredentials(Credential::RefreshToken))
    ));
}

#[tokio::test]
async fn a_deactivated_user_can_neither_log_in_nor_refresh() {
    let h = harness().await;
    let admin = h.user("admin@example.com", Role::Admin).await;
    let user = h.user("user@example.com", Role::User).await;
    let pair = h.login("user@example.com", PASSWORD).await.unwrap();
    h.services
        .users
        .set_active(admin.admin().unwrap(), user.id(), false)
        .await
        .unwrap();
    assert!(matches!(
        h.login("user@example.com", PASSWORD).await,
        Err(ServiceError::InvalidCredentials(Credential::Login))
    ));
    assert!(
        h.services
            .accounts
            .refresh(&pair.refresh_token, &here())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_bootstrap_admin_is_created_once() {
    let h = harness().await;
    let users = &h.services.users;
    let ensure = |email: &'static str| users.ensure_admin(account(email));
    assert_eq!(
        ensure("boot@example.com").await.unwrap(),
        EnsuredAdmin::Created
    );
    assert_eq!(
        ensure("boot@example.com").await.unwrap(),
        EnsuredAdmin::Exists
    );
    // An address a user who is not an admin has: that user is left as they are.
    let member = h.user("member@example.com", Role::User).await;
    assert_eq!(
        ensure("member@example.com").await.unwrap(),
        EnsuredAdmin::NotAnActiveAdmin
    );
    let member = h.repo.user_by_id(&member.id()).await.unwrap().unwrap();
    assert_eq!(member.role, Role::User);
    let admin = h
        .repo
        .user_by_email(&Email::parse("boot@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(admin.is_active_admin());
}

#[tokio::test(start_paused = true)]
async fn background_work_is_tried_again_while_the_database_is_away_but_not_forever() {
    use super::accounts::retry_while_unavailable;
    let down = || ServiceError::Unavailable(anyhow::anyhow!("no server"));
    let mut tries = 0;
    let started = tokio::time::Instant::now();
    let result = retry_while_unavailable(Duration::from_secs(60), || {
        tries += 1;
        let outcome = if tries < 4 { Err(down()) } else { Ok(tries) };
        async move { outcome }
    })
    .await;
    assert_eq!(result.unwrap(), 4);
    // 0.5 + 1 + 2 seconds of pauses.
    assert_eq!(started.elapsed(), Duration::from_millis(3500));

    let mut tries = 0;
    let started = tokio::time::Instant::now();
    let result: Result<(), _> = retry_while_unavailable(Duration::from_secs(60), || {
        tries += 1;
        let error = down();
        async move { Err(error) }
    })
    .await;
    assert!(matches!(result, Err(ServiceError::Unavailable(_))));
    assert!(started.elapsed() <= Duration::from_secs(60));
    assert!((6..=12).contains(&tries), "{tries} tries");

    // Other failures are final at once.
    let mut tries = 0;
    let result: Result<(), _> = retry_while_unavailable(Duration::from_secs(60), || {
        tries += 1;
        async { Err(ServiceError::NotFound) }
    })
    .await;
    assert!(matches!(result, Err(ServiceError::NotFound)));
    assert_eq!(tries, 1);
}

#[tokio::test]
async fn the_accounts_own_words_are_refused_wherever_a_password_is_set() {
    let h = harness().await;
    let refused = |result: Result<User, ServiceError>, field: &str| {
        assert!(
            matches!(&result, Err(ServiceError::Invalid { field: f, .. }) if *f == field),
            "{result:?}"
        );
    };
    let weak = |password: &str| NewAccount {
        name: DisplayName::parse("Someone Else").unwrap(),
        password: NewPassword::parse(password).unwrap(),
        ..account("weakling@example.com")
    };
    let accounts = &h.services.accounts;
    for password in ["WEAKLING@EXAMPLE.COM", "Weakling", "someone else"] {
        let registration = accounts.registration().unwrap();
        refused(
            registration.register(weak(password), &here()).await,
            "password",
        );
    }
    let admin = h.user("admin@example.com", Role::Admin).await;
    refused(
        h.services
            .users
            .create(
                admin.admin().unwrap(),
                weak("Someone ELSE"),
                Role::User,
                true,
                false,
            )
            .await,
        "password",
    );
    assert!(
        h.repo
            .user_by_email(&Email::parse("weakling@example.com").unwrap())
            .await
            .unwrap()
            .is_none()
    );

    // An update is judged against the account as the update leaves it.
    let user = h.user("user@example.com", Role::User).await;
    let rename_to_password = UserChanges {
        name: Some(DisplayName::parse("Tangerine Dream").unwrap()),
        password: Some(NewPassword::parse("tangerine dream").unwrap()),
        current_password: Some(PASSWORD.to_owned()),
        ..changes()
    };
    refused(
        h.update(user.access(user.id()).unwrap(), rename_to_password)
            .await,
        "password",
    );
    let by_admin = UserChanges {
        password: Some(NewPassword::parse("User@Example.com").unwrap()),
        ..changes()
    };
    refused(
        h.update(admin.access(user.id()).unwrap(), by_admin).await,
        "password",
    );
    assert_eq!(
        h.stored(user.user()).await,
        *user.user(),
        "nothing was written"
    );
}

#[tokio::test]
async fn a_refused_new_password_does_not_spend_the_reset_token() {
    let h = harness().await;
    let user = h.user("user@example.com", Role::User).await;
    let token = h.reset_token(&user).await;
    let accounts = &h.services.accounts;
    let result = accounts
        .reset_password(
            &token,
            &NewPassword::parse("user@example.com").unwrap(),
            &here(),
        )
        .await;
    assert!(
        matches!(
            result,
            Err(ServiceError::Invalid {
                field: "new_password",
                ..
            })
        ),
        "{result:?}"
    );
    accounts
        .reset_password(
            &token,
            &NewPassword::parse("a fine new password").unwrap(),
            &here(),
        )
        .await
        .unwrap();
    assert!(
        h.login("user@example.com", "a fine new password")
            .await
            .is_ok()
    );
}

fn locked<T>(result: &Result<T, ServiceError>) -> bool {
    matches!(result, Err(ServiceError::LoginLocked { .. }))
}

fn refused<T>(result: &Result<T, ServiceError>) -> bool {
    matches!(
        result,
        Err(ServiceError::InvalidCredentials(Credential::Login))
    )
}

#[tokio::test]
async fn failed_logins_lock_the_account_and_then_even_the_right_password_is_refused() {
    let h = harness().await;
    let user = h.user("user@example.com", Role::User).await;
    for _ in 0..3 {
        assert!(refused(
            &h.login("user@example.com", "wrong password").await
        ));
    }
    let result = h.login("user@example.com", PASSWORD).await;
    let Err(ServiceError::LoginLocked { retry_after }) = result else {
        panic!("{result:?}")
    };
    assert!(retry_after > Duration::from_secs(55) && retry_after <= Duration::from_secs(60));
    let stored = h.stored(user.user()).await;
    assert!(stored.lock_in_force(crate::domain::now()).is_some());
    // The username shares the count of the email.
    let by_username = LoginId::Username(crate::domain::Username::parse("someone").unwrap());
    h.update(
        user.access(user.id()).unwrap(),
        UserChanges {
            username: Some(Some(crate::domain::Username::parse("someone").unwrap())),
            ..changes()
        },
    )
    .await
    .unwrap();
    assert!(locked(
        &h.services
            .accounts
            .login(by_username, PASSWORD, &here())
            .await
    ));

    // An admin's unlock ends it.
    let admin = h.user("admin@example.com", Role::Admin).await;
    let unlocked = h
        .services
        .accounts
        .unlock(admin.admin().unwrap(), user.id())
        .await
        .unwrap();
    assert_eq!(unlocked.locked_until, None);
    assert!(h.login("user@example.com", PASSWORD).await.is_ok());
}

#[tokio::test]
async fn a_successful_login_starts_the_count_again() {
    let h = harness().await;
    h.user("user@example.com", Role::User).await;
    for _ in 0..2 {
        assert!(refused(
            &h.login("user@example.com", "wrong password").await
        ));
    }
    assert!(h.login("user@example.com", PASSWORD).await.is_ok());
    for _ in 0..2 {
        assert!(refused(
            &h.login("user@example.com", "wrong password").await
        ));
    }
    assert!(h.login("user@example.com", PASSWORD).await.is_ok());
}

#[tokio::test]
async fn names_that_are_nobodys_lock_the_same_way() {
    let h = harness().await;
    for _ in 0..3 {
        assert!(refused(
            &h.login("nobody@example.com", "wrong password").await
        ));
    }
    assert!(locked(
        &h.login("nobody@example.com", "wrong password").await
    ));
    assert!(locked(
        &h.login("NOBODY@example.com", "wrong password").await
    ));
}

#[tokio::test]
async fn a_password_reset_ends_the_lock() {
    let h = harness().await;
    let user = h.user("user@example.com", Role::User).await;
    for _ in 0..4 {
        let _ = h.login("user@example.com", "wrong password").await;
    }
    assert!(locked(&h.login("user@example.com", PASSWORD).await));
    let token = h.reset_token(&user).await;
    h.services
        .accounts
        .reset_password(
            &token,
            &NewPassword::parse("a fine new password").unwrap(),
            &here(),
        )
        .await
        .unwrap();
    assert!(
        h.login("user@example.com", "a fine new password")
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_many_simultaneous_wrong_attempts_only_the_threshold_are_checked() {
    let h = harness().await;
    h.user("user@example.com", Role::User).await;
    let accounts = h.services.accounts.clone();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let accounts = accounts.clone();
            tokio::spawn(async move {
                let id = LoginId::Email(Email::parse("user@example.com").unwrap());
                accounts.login(id, "wrong password", &here()).await
            })
        })
        .collect();
    let mut checked = 0;
    let mut locked_out = 0;
    for task in tasks {
        let result = task.await.unwrap();
        if refused(&result) {
            checked += 1;
        } else if locked(&result) {
            locked_out += 1;
        } else {
            panic!("{result:?}");
        }
    }
    assert_eq!((checked, locked_out), (3, 17));
}

/// A verification link for `email`, stored for `user` as a mail would carry it.
async fn verification_token(h: &Harness, user: &Actor, email: &str) -> String {
    let token = OpaqueToken::generate();
    let now = crate::domain::now();
    h.repo
        .insert_verification_token(crate::storage::VerificationTokenRecord {
            token_hash: token.hash,
            user_id: user.id(),
            email: Email::parse(email).unwrap(),
            created_at: now,
            expires_at: now + Duration::from_secs(600),
        })
        .await
        .unwrap();
    token.secret
}

/// `patch` written to the user right after the next read of them by id, as a request of
/// someone else landing in between.
fn write_after_next_read(h: &Harness, id: UserId, patch: UserPatch) {
    let repo = h.repo.clone();
    h.repo.after_next("user_by_id", move || {
        repo.update_user(&id, &patch)
            .now_or_never()
            .expect("the memory repository answers at once")
            .expect("the write");
    });
}

#[tokio::test]
async fn a_verification_link_never_verifies_the_address_that_replaced_its_own() {
    let h = harness().await;
    let user = h.user("first@example.com", Role::User).await;
    let token = verification_token(&h, &user, "first@example.com").await;
    let moved = UserPatch::new()
        .set(UserField::Email(
            Email::parse("second@example.com").unwrap(),
        ))
        .set(UserField::EmailVerified(false));
    write_after_next_read(&h, user.id(), moved);
    let result = h.services.accounts.verify_email(&token, &here()).await;
    assert!(
        matches!(
            result,
            Err(ServiceError::InvalidCredentials(
                Credential::VerificationToken
            ))
        ),
        "{result:?}"
    );
    let stored = h.stored(user.user()).await;
    assert_eq!(stored.email.as_str(), "second@example.com");
    assert!(!stored.email_verified);
}

#[tokio::test]
async fn a_verification_link_still_verifies_when_another_change_comes_first() {
    let h = harness().await;
    let user = h.user("first@example.com", Role::User).await;
    let token = verification_token(&h, &user, "first@example.com").await;
    let renamed = UserPatch::new().set(UserField::Name(DisplayName::parse("Renamed").unwrap()));
    write_after_next_read(&h, user.id(), renamed);
    let verified = h
        .services
        .accounts
        .verify_email(&token, &here())
        .await
        .unwrap();
    assert!(verified.email_verified);
    assert_eq!(verified.name.as_str(), "Renamed");
}

/// What a change that ends sessions does, run right after a login has read the user by
/// email: `patch` (or, without one, the removal of the user), then the end of their sessions.
fn change_after_login_read(h: &Harness, id: UserId, patch: Option<UserPatch>) {
    let repo = h.repo.clone();
    h.repo.after_next("user_by_email", move || {
        let at_once = "the memory repository answers at once";
        match patch {
            Some(patch) => {
                repo.update_user(&id, &patch)
                    .now_or_never()
                    .expect(at_once)
                    .expect("the change");
            }
            None => {
                repo.delete_user(&id)
                    .now_or_never()
                    .expect(at_once)
                    .expect("the removal");
            }
        }
        repo.end_user_sessions(&id, crate::domain::now())
            .now_or_never()
            .expect(at_once)
            .expect("the end of the sessions");
    });
}

#[tokio::test]
async fn a_login_racing_a_new_password_a_deactivation_or_a_removal_keeps_no_session() {
    let h = harness().await;
    let now = crate::domain::now();
    let changes = [
        Some(
            UserPatch::new()
                .set(UserField::PasswordHash("$2b$04$elsewhere".to_owned()))
                .set(UserField::PasswordChangedAt(now + Duration::from_secs(1))),
        ),
        Some(UserPatch::new().set(UserField::Active(false))),
        None,
    ];
    for (i, change) in changes.into_iter().enumerate() {
        let email = format!("racer{i}@example.com");
        let user = h.user(&email, Role::User).await;
        change_after_login_read(&h, user.id(), change);
        let login = h.login(&email, PASSWORD).await;
        assert!(
            matches!(
                login,
                Err(ServiceError::InvalidCredentials(Credential::Login))
            ),
            "change {i}: {login:?}"
        );
        let later = crate::domain::now();
        assert!(
            h.repo
                .live_sessions(&user.id(), later)
                .await
                .unwrap()
                .is_empty(),
            "change {i} left a session"
        );
    }
}

/// Two-factor sign-in on for `user`, with the recovery codes `aaaa-bbbb` and `cccc-dddd`;
/// their hashes.
async fn mfa_on(h: &Harness, user: &Actor) -> [String; 2] {
    let secret = Secret::new("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP");
    assert!(h.repo.set_pending_totp(&user.id(), &secret).await.unwrap());
    let hashes = ["aaaa-bbbb", "cccc-dddd"].map(super::mfa::recovery_hash);
    assert!(
        h.repo
            .enable_totp(&user.id(), &secret, 1, &hashes, crate::domain::now())
            .await
            .unwrap()
    );
    hashes
}

/// The first step of a login with two-factor sign-in on: its `mfa_token`.
async fn first_step(h: &Harness, email: &str) -> String {
    match h.login_outcome(email, PASSWORD).await.unwrap() {
        LoginOutcome::MfaRequired { mfa_token, .. } => mfa_token,
        LoginOutcome::Tokens(_) => panic!("no second step"),
    }
}

/// Asserts that the second step with `mfa_token` and a right recovery code is refused for
/// the `mfa_token`: a login to start again.
async fn assert_mfa_token_refused(h: &Harness, mfa_token: &str) {
    let second = h
        .services
        .accounts
        .login_mfa(mfa_token, "aaaa-bbbb", &here())
        .await;
    assert!(
        matches!(
            second,
            Err(ServiceError::InvalidCredentials(Credential::MfaToken))
        ),
        "{second:?}"
    );
}

#[tokio::test]
async fn a_second_step_stands_only_for_the_password_of_the_first() {
    let h = harness().await;
    let user = h.user("two@example.com", Role::User).await;
    mfa_on(&h, &user).await;
    // The password changes between the two steps: the second no longer works.
    let mfa_token = first_step(&h, "two@example.com").await;
    h.update(
        user.access(user.id()).unwrap(),
        UserChanges {
            password: Some(NewPassword::parse("second password").unwrap()),
            current_password: Some(PASSWORD.to_owned()),
            ..changes()
        },
    )
    .await
    .unwrap();
    assert_mfa_token_refused(&h, &mfa_token).await;
    // The password changes while the first step checks the old one: no second step.
    let user = h.user("three@example.com", Role::User).await;
    mfa_on(&h, &user).await;
    let now = crate::domain::now();
    change_after_login_read(
        &h,
        user.id(),
        Some(
            UserPatch::new()
                .set(UserField::PasswordHash("$2b$04$elsewhere".to_owned()))
                .set(UserField::PasswordChangedAt(now + Duration::from_secs(1))),
        ),
    );
    let first = h.login_outcome("three@example.com", PASSWORD).await;
    assert!(
        matches!(
            first,
            Err(ServiceError::InvalidCredentials(Credential::Login))
        ),
        "{first:?}"
    );
}

#[tokio::test]
async fn a_code_whose_request_loses_the_mfa_token_is_not_spent() {
    let h = harness().await;
    let user = h.user("two@example.com", Role::User).await;
    let hashes = mfa_on(&h, &user).await;
    let mfa_token = first_step(&h, "two@example.com").await;
    // Another request with the same mfa_token (and another code) wins it right after this
    // one has read the user.
    let repo = h.repo.clone();
    let token_hash = super::tokens::hash_token(&mfa_token);
    h.repo.after_next("user_by_id", move || {
        assert!(
            repo.consume_mfa_challenge(&token_hash, crate::domain::now())
                .now_or_never()
                .expect("the memory repository answers at once")
                .unwrap()
        );
    });
    assert_mfa_token_refused(&h, &mfa_token).await;
    assert!(
        h.repo
            .holds_recovery_code(&user.id(), &hashes[0])
            .await
            .unwrap(),
        "the losing request spent its code"
    );
}

#[tokio::test]
async fn a_lock_that_a_passing_login_ended_meanwhile_is_not_shown_on_the_user() {
    let h = harness().await;
    let user = h.user("user@example.com", Role::User).await;
    for _ in 0..2 {
        assert!(refused(
            &h.login("user@example.com", "wrong password").await
        ));
    }
    // The third wrong one starts the lock; a login with the right password passes right
    // after it is counted, before the lock is written on the user.
    let repo = h.repo.clone();
    let id = user.id();
    h.repo.after_next("count_login_attempt", move || {
        let at_once = "the memory repository answers at once";
        repo.clear_login_attempts(&super::lockout::LoginLock::key(&id))
            .now_or_never()
            .expect(at_once)
            .unwrap();
        let signed_in = UserPatch::new()
            .set(UserField::LastLoginAt(crate::domain::now()))
            .set(UserField::LockedUntil(None));
        repo.update_user(&id, &signed_in)
            .now_or_never()
            .expect(at_once)
            .unwrap();
    });
    assert!(refused(
        &h.login("user@example.com", "wrong password").await
    ));
    assert_eq!(h.stored(user.user()).await.locked_until, None);
    assert!(h.login("user@example.com", PASSWORD).await.is_ok());
}
