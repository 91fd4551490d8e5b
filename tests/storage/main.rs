//! The storage conformance suite: written once against `Repository` (see `conformance.rs`)
//! and instantiated here for every backend, so the backends cannot drift apart.
//!
//! SQLite and the in-memory test double (`MemoryRepository`) always run. MongoDB needs a
//! server, so its tests are ignored by default:
//! `MONGODB_TEST_URI=mongodb://... cargo test --test storage -- --ignored` uses that server
//! (each test in its own database, dropped when the test passes); without the variable each
//! test starts its own `mongo:7` container through testcontainers (needs Docker).

mod conformance;

use std::{any::Any, sync::Arc, time::Duration};

use user_service::storage::{DynRepository, MemoryRepository, MongoRepository, SqliteRepository};

/// A repository under test, with whatever keeps its database alive (a temporary directory,
/// a container) and how to clean up after a passing test.
pub struct Backend {
    pub repo: DynRepository,
    /// A second, independent handle on the same database (its own connection or client),
    /// as a second service instance would have.
    pub twin: DynRepository,
    _keep_alive: Box<dyn Any + Send>,
    /// A MongoDB database on a shared server, dropped once the test has passed
    /// (a failing test leaves it behind for inspection).
    drop_database: Option<(String, String)>,
}

impl Backend {
    async fn finish(self) {
        drop(self.repo);
        drop(self.twin);
        if let Some((uri, database)) = self.drop_database {
            let client = mongodb::Client::with_uri_str(&uri)
                .await
                .expect("connect to MongoDB to drop the test database");
            if let Err(error) = client.database(&database).drop().await {
                eprintln!("could not drop the test database {database}: {error}");
            }
        }
    }
}

async fn sqlite_backend() -> Backend {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let path = dir.path().join("users.db");
    let repo = SqliteRepository::open(&path)
        .await
        .expect("open the SQLite database");
    let twin = SqliteRepository::open(&path)
        .await
        .expect("open the SQLite database again");
    Backend {
        repo: Arc::new(repo),
        twin: Arc::new(twin),
        _keep_alive: Box::new(dir),
        drop_database: None,
    }
}

/// The services' test double, held to the same contract as the real backends.
async fn memory_backend() -> Backend {
    let repo: DynRepository = Arc::new(MemoryRepository::new());
    Backend {
        twin: Arc::clone(&repo),
        repo,
        _keep_alive: Box::new(()),
        drop_database: None,
    }
}

async fn mongo_backend() -> Backend {
    // A database per test, so tests never see each other's documents.
    let database = format!("user_service_test_{}", bson::oid::ObjectId::new().to_hex());
    let open = |uri: String, database: String| async move {
        let repo: DynRepository = Arc::new(
            MongoRepository::connect(
                &uri,
                &database,
                Duration::from_secs(30),
                Duration::from_secs(365 * 86400),
            )
            .await
            .expect("connect to MongoDB"),
        );
        repo
    };
    if let Ok(uri) = std::env::var("MONGODB_TEST_URI") {
        return Backend {
            repo: open(uri.clone(), database.clone()).await,
            twin: open(uri.clone(), database.clone()).await,
            _keep_alive: Box::new(()),
            drop_database: Some((uri, database)),
        };
    }

    use testcontainers_modules::{
        mongo::Mongo,
        testcontainers::{ImageExt, runners::AsyncRunner},
    };
    // One container per test: each #[tokio::test] has its own runtime, and a container
    // shared across tests would outlive the runtime that started it.
    let container = Mongo::default()
        .with_tag("7")
        .start()
        .await
        .expect("start a mongo:7 container (is Docker running? or set MONGODB_TEST_URI)");
    let host = container.get_host().await.expect("container host");
    let port = container
        .get_host_port_ipv4(27017)
        .await
        .expect("container port for 27017");
    let uri = format!("mongodb://{host}:{port}");
    Backend {
        repo: open(uri.clone(), database.clone()).await,
        twin: open(uri, database).await,
        _keep_alive: Box::new(container),
        drop_database: None,
    }
}

/// Instantiates every suite function as a `#[tokio::test]` against `$backend`, with the
/// extra attributes given (e.g. `#[ignore]`). The list of tests lives here, once.
macro_rules! conformance_suite {
    ($backend:path $(, #[$attr:meta])*) => {
        conformance_suite!(@tests $backend, [$(#[$attr])*],
            ping_succeeds,
            created_user_round_trips_by_id_email_and_username,
            lookups_of_unknown_users_return_none,
            timestamps_are_stored_with_millisecond_precision,
            create_rejects_an_email_taken_in_another_case,
            update_rejects_an_email_taken_by_another_user,
            create_rejects_a_username_taken_in_another_case,
            update_rejects_a_username_taken_by_another_user,
            duplicates_name_the_taken_field_when_both_unique_fields_are_written,
            a_user_may_change_the_case_of_their_own_username,
            many_users_without_username_coexist,
            partial_update_stores_only_the_given_fields,
            full_update_round_trips_every_field,
            update_with_username_none_clears_it_and_frees_it,
            password_hash_update_stores_password_changed_at_only_when_given,
            login_patch_sets_last_login_at_and_nothing_else,
            login_patch_stores_an_upgraded_hash_without_moving_timestamps,
            update_of_a_missing_user_returns_none,
            delete_removes_the_user_and_a_second_delete_returns_false,
            delete_removes_the_users_refresh_and_reset_tokens,
            delete_removes_the_users_sessions_and_mfa_but_keeps_their_audit_events,
            list_pages_with_a_total_independent_of_the_page,
            import_creates_new_users_as_given_and_reports_the_rest_line_by_line,
            list_filters_by_q_on_name_email_and_username_ignoring_case,
            list_filter_q_ignores_case_beyond_ascii,
            list_filter_q_matches_metacharacters_literally,
            list_filters_by_role_active_and_combined,
            list_sorts_by_created_at_with_ties_broken_by_id,
            list_sorts_by_name_with_ties_broken_by_id,
            list_sorts_by_email,
            keyset_paging_stays_stable_while_users_are_added,
            keyset_paging_through_equal_names_takes_each_once_ordered_by_id,
            every_filter_walked_by_cursor_lists_its_users_in_every_sort,
            totals_stay_exact_through_inserts_deletes_role_changes_and_activation,
            search_finds_exactly_the_users_containing_q_in_any_case,
            search_agrees_with_a_scan_for_letters_that_change_length_or_form_in_lower_case,
            refresh_token_is_spent_once_then_replayed,
            unknown_refresh_token_is_unknown,
            concurrent_uses_of_a_refresh_token_spend_it_once,
            ending_a_session_affects_only_that_session,
            ending_a_users_sessions_affects_only_that_user,
            ending_the_session_of_a_token_ends_it_and_a_revoked_token_is_not_a_replay,
            a_token_added_to_an_ended_session_is_revoked,
            the_last_active_admin_cannot_be_demoted_deactivated_or_deleted,
            a_refused_demotion_leaves_both_admins_removable,
            reset_token_is_consumed_once,
            a_reset_tokens_owner_is_told_without_spending_it,
            login_attempts_lock_at_the_threshold_and_start_again_after_the_lock,
            a_forgiven_attempt_is_taken_back_with_the_lock_it_started,
            a_verification_token_works_once_within_its_time_and_a_newer_one_voids_it,
            a_mail_claim_holds_for_its_window_per_kind_and_address,
            expired_or_unknown_reset_token_is_refused,
            consuming_a_reset_token_voids_the_users_other_reset_tokens,
            voiding_a_users_reset_tokens_spends_only_their_live_ones,
            concurrent_consumes_of_a_reset_token_succeed_once,
            // Sessions (conformance/sessions.rs).
            a_session_round_trips_with_its_origin,
            user_with_session_tells_live_ended_expired_and_others_sessions,
            live_sessions_are_newest_first_and_only_the_users_live_ones,
            end_session_refuses_another_users_ended_or_expired_sessions,
            end_user_sessions_ends_and_counts_only_the_users_live_sessions,
            a_refresh_token_moves_its_sessions_last_use_and_extends_its_expiry,
            a_replay_names_its_session_and_ending_that_session_revokes_its_tokens,
            peeking_at_a_refresh_token_tells_its_state_and_spends_nothing,
            end_session_of_token_ends_a_live_session_once,
            // TOTP, recovery codes and MFA challenges (conformance/mfa.rs).
            a_pending_totp_secret_is_replaced_until_mfa_is_on,
            enable_totp_needs_the_pending_secret_and_sets_mfa_enabled_and_updated_at,
            a_new_secret_starts_its_own_steps_from_its_enrolment,
            claim_totp_step_accepts_only_ever_later_steps_while_mfa_is_on,
            a_recovery_code_is_spent_once_and_only_by_its_user,
            replacing_recovery_codes_voids_the_old_ones,
            disable_totp_forgets_secrets_and_codes_and_is_false_when_off,
            an_mfa_challenge_takes_at_most_max_attempts,
            an_mfa_challenge_is_dead_from_its_expires_at,
            an_mfa_challenge_is_consumed_once_and_then_not_attemptable,
            // The audit log (conformance/audit.rs).
            an_audit_event_round_trips_every_field,
            audit_filters_select_by_user_subject_kind_and_time,
            audit_events_are_newest_first_with_ties_broken_by_id,
            audit_events_page_by_offset_and_by_keyset_with_a_total_of_the_whole_filter,
            deleting_audit_events_before_a_time_removes_only_older_ones,
            // Idempotency keys (conformance/idempotency.rs).
            an_idempotency_key_is_claimed_once_then_replays_its_answer,
            a_released_idempotency_key_is_free_again,
            an_expired_idempotency_key_is_free_again,
            an_abandoned_idempotency_claim_may_be_claimed_again,
            // Guarded writes of a user (conformance/versions.rs).
            a_guarded_update_applies_to_the_user_as_read_and_is_refused_after_another_write,
            a_guarded_delete_applies_to_the_user_as_read_and_is_refused_after_another_write,
            guarded_writes_keep_the_last_active_admin,
        );
        // Tests that write through two handles on one database at once.
        conformance_suite!(@pairs $backend, [$(#[$attr])*],
            concurrent_creates_with_one_email_yield_exactly_one_user,
            concurrent_uses_of_one_refresh_token_leave_no_live_token_in_its_session,
            concurrent_removals_of_the_last_two_admins_leave_one,
            concurrent_login_attempts_are_counted_exactly_and_lock_once,
            concurrent_mail_claims_hold_once,
            concurrent_claims_of_one_totp_step_have_one_winner,
            concurrent_uses_of_one_recovery_code_have_one_winner,
            concurrent_consumes_of_an_mfa_challenge_have_one_winner,
            concurrent_attempts_at_an_mfa_challenge_never_exceed_the_limit,
            concurrent_claims_of_one_idempotency_key_have_one_winner,
            concurrent_guarded_writes_from_one_read_have_one_winner,
        );
    };
    (@pairs $backend:path, $attrs:tt, $($test:ident),+ $(,)?) => {
        $( conformance_suite!(@pair $backend, $attrs, $test); )+
    };
    (@pair $backend:path, [$(#[$attr:meta])*], $test:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn $test() {
            let backend = $backend().await;
            crate::conformance::$test(Arc::clone(&backend.repo), Arc::clone(&backend.twin)).await;
            backend.finish().await;
        }
    };
    (@tests $backend:path, $attrs:tt, $($test:ident),+ $(,)?) => {
        $( conformance_suite!(@test $backend, $attrs, $test); )+
    };
    (@test $backend:path, [$(#[$attr:meta])*], $test:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn $test() {
            let backend = $backend().await;
            crate::conformance::$test(Arc::clone(&backend.repo)).await;
            backend.finish().await;
        }
    };
}

mod sqlite {
    use super::*;

    conformance_suite!(sqlite_backend);
}

mod memory {
    use super::*;

    conformance_suite!(memory_backend);
}

mod mongo {
    use super::*;

    conformance_suite!(
        mongo_backend,
        #[ignore = "needs MongoDB: set MONGODB_TEST_URI or have Docker, then run cargo test --test storage -- --ignored"]
    );
}
