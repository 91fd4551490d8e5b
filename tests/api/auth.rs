//! Registration, login, bearer tokens, refresh and logout.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_EMAIL, JWT_SECRET, PASSWORD, Reply, TestApp, spawn_app, spawn_app_with,
};

fn is_object_id(id: &str) -> bool {
    id.len() == 24 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn assert_rfc3339(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"));
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text} is not RFC 3339: {e}"));
    assert_eq!(parsed.offset(), time::UtcOffset::UTC, "{text} is not UTC");
}

// ---------------------------------------------------------------- registration

#[tokio::test]
async fn register_returns_201_with_location_and_the_user() {
    let app = spawn_app().await;
    let reply = app
        .register(&json!({
            "name": "  Mario Rossi  ",
            "email": "Mario@Example.com",
            "password": PASSWORD,
            "username": "mario"
        }))
        .await;
    reply.assert_status(201);
    let user = reply.json();
    let id = user["id"].as_str().unwrap();
    assert!(is_object_id(id), "{id}");
    assert_eq!(
        reply.header("location"),
        Some(format!("/api/users/{id}").as_str())
    );
    assert!(
        reply
            .header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json"))
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert!(reply.header("x-request-id").is_some());

    assert_eq!(user["name"], "Mario Rossi");
    assert_eq!(user["email"], "mario@example.com");
    assert_eq!(user["username"], "mario");
    assert_eq!(user["role"], "user");
    assert_eq!(user["active"], true);
    assert_eq!(user["last_login_at"], Value::Null);
    assert_rfc3339(&user["created_at"]);
    assert_rfc3339(&user["updated_at"]);
    let keys: Vec<&String> = user.as_object().unwrap().keys().collect();
    for key in &keys {
        assert!(
            !key.contains("password") && !key.contains("hash"),
            "{keys:?}"
        );
    }
    assert!(!reply.text.contains(PASSWORD));
    assert!(
        !reply.text.contains("$2"),
        "looks like a bcrypt hash: {}",
        reply.text
    );
}

#[tokio::test]
async fn register_without_username_gives_null_username() {
    let app = spawn_app().await;
    let user = app.register_user("Anna", "anna@example.com", None).await;
    assert_eq!(user["username"], Value::Null);
}

#[tokio::test]
async fn register_returns_422_for_missing_name() {
    let app = spawn_app().await;
    app.register(&json!({"email": "a@example.com", "password": PASSWORD}))
        .await
        .assert_invalid_fields(&["name"]);
}

#[tokio::test]
async fn register_returns_422_for_blank_or_too_long_name() {
    let app = spawn_app().await;
    app.register(&json!({"name": "   ", "email": "a@example.com", "password": PASSWORD}))
        .await
        .assert_invalid_fields(&["name"]);
    app.register(&json!({"name": "x".repeat(31), "email": "a@example.com", "password": PASSWORD}))
        .await
        .assert_invalid_fields(&["name"]);
    // 30 characters is the limit, counted in characters.
    app.register(&json!({"name": "é".repeat(30), "email": "a@example.com", "password": PASSWORD}))
        .await
        .assert_status(201);
}

#[tokio::test]
async fn register_returns_422_for_invalid_email() {
    let app = spawn_app().await;
    for email in ["not-an-email", "", "a@", "@example.com"] {
        app.register(&json!({"name": "A", "email": email, "password": PASSWORD}))
            .await
            .assert_invalid_fields(&["email"]);
    }
    let long = format!("{}@example.com", "a".repeat(250));
    app.register(&json!({"name": "A", "email": long, "password": PASSWORD}))
        .await
        .assert_invalid_fields(&["email"]);
}

#[tokio::test]
async fn register_returns_422_for_a_password_shorter_than_8_bytes() {
    let app = spawn_app().await;
    app.register(&json!({"name": "A", "email": "a@example.com", "password": "1234567"}))
        .await
        .assert_invalid_fields(&["password"]);
}

#[tokio::test]
async fn register_returns_422_for_a_password_longer_than_72_bytes() {
    let app = spawn_app().await;
    app.register(&json!({"name": "A", "email": "a@example.com", "password": "a".repeat(73)}))
        .await
        .assert_invalid_fields(&["password"]);
    // Bytes, not characters: 37 two-byte characters are 74 bytes.
    app.register(&json!({"name": "A", "email": "a@example.com", "password": "é".repeat(37)}))
        .await
        .assert_invalid_fields(&["password"]);
    app.register(&json!({"name": "A", "email": "a@example.com", "password": "a".repeat(72)}))
        .await
        .assert_status(201);
}

#[tokio::test]
async fn a_72_byte_password_is_not_cut() {
    let app = spawn_app().await;
    let password = "a".repeat(72);
    app.register(&json!({"name": "A", "email": "a@example.com", "password": password}))
        .await
        .assert_status(201);
    app.login_email("a@example.com", &password)
        .await
        .assert_status(200);
    app.login_email("a@example.com", &"a".repeat(71))
        .await
        .assert_problem(401);
    // bcrypt reads only 72 bytes: a longer attempt that starts with the password must fail.
    app.login_email("a@example.com", &"a".repeat(73))
        .await
        .assert_problem(401);
}

#[tokio::test]
async fn register_returns_422_for_a_common_password_or_one_equal_to_the_account() {
    let app = spawn_app().await;
    for password in [
        "Password1",
        "qwertyuiop",
        "mario@example.com",
        "MARIO.ROSSI",
        "Mario Rossi",
    ] {
        let problem = app
            .register(&json!({"name": "Mario Rossi", "email": "mario@example.com",
                "username": "mario.rossi", "password": password}))
            .await
            .assert_invalid_fields(&["password"]);
        assert_eq!(problem["detail"], "the request is invalid");
    }
    // A common password is named with the request's other bad fields.
    app.register(&json!({"name": "Mario Rossi", "email": "not an address",
        "password": "qwertyuiop"}))
        .await
        .assert_invalid_fields(&["email", "password"]);
    // Through an update too, as an admin setting someone's password.
    let admin = app.admin_token().await;
    let user = app.register_user("Luigi", "luigi@example.com", None).await;
    let id = user["id"].as_str().unwrap();
    app.patch(
        id,
        &json!({"password": "iloveyou", "username": "x"}),
        &admin,
    )
    .await
    .assert_invalid_fields(&["password", "username"]);
    app.patch(id, &json!({"password": "LUIGI@EXAMPLE.COM"}), &admin)
        .await
        .assert_invalid_fields(&["password"]);
    app.login_email("luigi@example.com", PASSWORD)
        .await
        .assert_status(200);
}

#[tokio::test]
async fn register_returns_422_for_a_bad_username() {
    let app = spawn_app().await;
    for username in ["ab", "has space", "émile", "x!y", &"u".repeat(31)] {
        app.register(&json!({
            "name": "A", "email": "a@example.com", "password": PASSWORD, "username": username
        }))
        .await
        .assert_invalid_fields(&["username"]);
    }
    app.register(&json!({
        "name": "A", "email": "a@example.com", "password": PASSWORD, "username": "A_b.c-9"
    }))
    .await
    .assert_status(201);
}

#[tokio::test]
async fn register_reports_every_bad_field_at_once() {
    let app = spawn_app().await;
    app.register(&json!({"name": "", "email": "nope", "password": "short", "username": "x"}))
        .await
        .assert_invalid_fields(&["name", "email", "password", "username"]);
}

#[tokio::test]
async fn register_reports_unknown_and_invalid_fields_together() {
    let app = spawn_app().await;
    app.register(&json!({"name": "", "email": "nope", "password": PASSWORD, "role": "admin"}))
        .await
        .assert_invalid_fields(&["name", "email", "role"]);
}

#[tokio::test]
async fn register_returns_422_for_a_field_of_the_wrong_type() {
    let app = spawn_app().await;
    app.register(&json!({"name": 5, "email": "a@example.com", "password": PASSWORD}))
        .await
        .assert_invalid_fields(&["name"]);
}

#[tokio::test]
async fn register_returns_422_naming_role_when_a_role_is_sent() {
    let app = spawn_app().await;
    app.register(&json!({
        "name": "Eve", "email": "eve@example.com", "password": PASSWORD, "role": "admin"
    }))
    .await
    .assert_invalid_fields(&["role"]);
    // And nobody was created.
    app.login_email("eve@example.com", PASSWORD)
        .await
        .assert_problem(401);
}

#[tokio::test]
async fn register_returns_422_naming_every_unknown_field() {
    let app = spawn_app().await;
    app.register(&json!({
        "name": "Eve", "email": "eve@example.com", "password": PASSWORD,
        "active": false, "id": "x"
    }))
    .await
    .assert_invalid_fields(&["active", "id"]);
}

#[tokio::test]
async fn register_returns_409_for_an_email_differing_only_in_case() {
    let app = spawn_app().await;
    app.register_user("A", "dup@example.com", None).await;
    let body = app
        .register(&json!({"name": "B", "email": "DUP@Example.COM", "password": PASSWORD}))
        .await
        .assert_problem(409);
    assert!(
        crate::helpers::error_fields(&body).contains(&"email".to_owned()),
        "{body}"
    );
}

#[tokio::test]
async fn register_returns_409_for_a_username_differing_only_in_case() {
    let app = spawn_app().await;
    app.register_user("A", "a@example.com", Some("Mario")).await;
    let body = app
        .register(&json!({
            "name": "B", "email": "b@example.com", "password": PASSWORD, "username": "mARIO"
        }))
        .await
        .assert_problem(409);
    assert!(
        crate::helpers::error_fields(&body).contains(&"username".to_owned()),
        "{body}"
    );
}

#[tokio::test]
async fn register_returns_403_when_registration_is_closed() {
    let app = spawn_app_with(&[("ALLOW_REGISTRATION", "false")]).await;
    app.register(&json!({"name": "A", "email": "a@example.com", "password": PASSWORD}))
        .await
        .assert_problem(403);
    // Whatever is sent: the fields of a registration that cannot happen are not judged.
    for body in [json!({"name": ""}), json!({"role": "admin"})] {
        let problem = app.register(&body).await.assert_problem(403);
        assert!(problem.get("errors").is_none(), "{problem}");
    }
    // Admins can still create users.
    let admin = app.admin_token().await;
    app.create_user(
        &json!({"name": "A", "email": "a@example.com", "password": PASSWORD}),
        &admin,
    )
    .await
    .assert_status(201);
}

// ---------------------------------------------------------------- login

fn assert_token_pair(reply: &Reply) -> Value {
    reply.assert_status(200);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let body = reply.json();
    assert!(
        body["access_token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3),
        "{body}"
    );
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let refresh = body["refresh_token"].as_str().expect("refresh_token");
    // At least 256 bits: 43 characters of base64.
    assert!(refresh.len() >= 43, "{refresh}");
    body
}

#[tokio::test]
async fn login_by_email_returns_a_token_pair() {
    let app = spawn_app().await;
    app.register_user("A", "a@example.com", None).await;
    let body = assert_token_pair(&app.login_email("a@example.com", PASSWORD).await);
    let me = app.me(body["access_token"].as_str().unwrap()).await;
    me.assert_status(200);
    assert_eq!(me.json()["email"], "a@example.com");
}

#[tokio::test]
async fn login_by_email_ignores_case() {
    let app = spawn_app().await;
    app.register_user("A", "a@example.com", None).await;
    assert_token_pair(&app.login_email("A@EXAMPLE.com", PASSWORD).await);
}

#[tokio::test]
async fn login_by_username_returns_a_token_pair_regardless_of_case() {
    let app = spawn_app().await;
    app.register_user("A", "a@example.com", Some("Mario")).await;
    assert_token_pair(&app.login_username("Mario", PASSWORD).await);
    assert_token_pair(&app.login_username("mario", PASSWORD).await);
}

#[tokio::test]
async fn login_returns_401_for_a_wrong_password() {
    let app = spawn_app().await;
    app.register_user("A", "a@example.com", None).await;
    app.login_email("a@example.com", "wrong password")
        .await
        .assert_problem(401);
}

#[tokio::test]
async fn login_returns_401_for_unknown_user() {
    let app = spawn_app().await;
    app.login_email("ghost@example.com", PASSWORD)
        .await
        .assert_problem(401);
    app.login_username("ghost", PASSWORD)
        .await
        .assert_problem(401);
}

#[tokio::test]
async fn login_failures_are_byte_identical_for_unknown_user_and_wrong_password() {
    let app = spawn_app().await;
    app.register_user("A", "a@example.com", Some("known")).await;
    let wrong = app.login_email("a@example.com", "wrong password").await;
    let unknown = app.login_email("ghost@example.com", "wrong password").await;
    let wrong_name = app.login_username("known", "wrong password").await;
    let unknown_name = app.login_username("ghost", "wrong password").await;
    for reply in [&wrong, &unknown, &wrong_name, &unknown_name] {
        reply.assert_problem(401);
    }
    assert_eq!(wrong.text, unknown.text);
    assert_eq!(wrong.text, wrong_name.text);
    assert_eq!(wrong.text, unknown_name.text);
    assert_eq!(wrong.header("content-type"), unknown.header("content-type"));
}

#[tokio::test]
async fn login_returns_422_without_credentials() {
    let app = spawn_app().await;
    app.login(&json!({"password": PASSWORD}))
        .await
        .assert_problem(422);
    app.login(&json!({"email": "a@example.com"}))
        .await
        .assert_invalid_fields(&["password"]);
    app.login(&json!({"email": "a@example.com", "username": "abc", "password": PASSWORD}))
        .await
        .assert_problem(422);
}

#[tokio::test]
async fn login_returns_422_for_a_null_email_or_username() {
    let app = spawn_app().await;
    app.register(
        &json!({"name": "A", "email": "a@example.com", "password": PASSWORD, "username": "abc"}),
    )
    .await
    .assert_status(201);
    // `null` is a value of the wrong type, not a way of leaving the field out.
    app.login(&json!({"email": "a@example.com", "username": null, "password": PASSWORD}))
        .await
        .assert_invalid_fields(&["username"]);
    app.login(&json!({"email": null, "username": "abc", "password": PASSWORD}))
        .await
        .assert_invalid_fields(&["email"]);
}

#[tokio::test]
async fn name_and_email_are_trimmed_before_they_are_checked() {
    let app = spawn_app().await;
    // White space around them (tabs, line feeds, U+3000 alike) is trimmed before the length
    // is counted, so 30 characters inside it fit.
    let reply = app
        .register(&json!({"name": format!("\t{}\u{3000}", "n".repeat(30)),
            "email": "\n A@Example.com\u{2028}", "password": PASSWORD}))
        .await;
    reply.assert_status(201);
    assert_eq!(reply.json()["name"], "n".repeat(30));
    assert_eq!(reply.json()["email"], "a@example.com");
    // Control characters inside a name are refused.
    for name in ["a\tb", "a\u{7f}", "\u{85}a\u{9f}"] {
        app.register(&json!({"name": name, "email": "b@example.com", "password": PASSWORD}))
            .await
            .assert_invalid_fields(&["name"]);
    }
}

#[tokio::test]
async fn deactivated_user_cannot_log_in() {
    let app = spawn_app().await;
    let user = app.register_user("A", "a@example.com", None).await;
    let admin = app.admin_token().await;
    app.deactivate(user["id"].as_str().unwrap(), &admin)
        .await
        .assert_status(200);
    let reply = app.login_email("a@example.com", PASSWORD).await;
    reply.assert_problem(401);
    // The same body as any failed login: nothing tells that the account exists.
    let unknown = app.login_email("ghost@example.com", PASSWORD).await;
    assert_eq!(reply.text, unknown.text);
}

#[tokio::test]
async fn last_login_at_is_set_by_login() {
    let app = spawn_app().await;
    let user = app.register_user("A", "a@example.com", None).await;
    assert_eq!(user["last_login_at"], Value::Null);
    let session = app.login_session("a@example.com", PASSWORD).await;
    let me = app.me(&session.access_token).await.json();
    assert_rfc3339(&me["last_login_at"]);
    let first = me["last_login_at"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    app.login_session("a@example.com", PASSWORD).await;
    let again = app.me(&session.access_token).await.json();
    assert_ne!(again["last_login_at"].as_str().unwrap(), first);
}

// ---------------------------------------------------------------- bearer tokens

fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let header = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
    let payload = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
    (
        serde_json::from_slice(&header).unwrap(),
        serde_json::from_slice(&payload).unwrap(),
    )
}

fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn user_token(app: &TestApp) -> String {
    app.register_and_login("A", "a@example.com")
        .await
        .access_token
}

#[tokio::test]
async fn access_token_carries_the_contract_claims() {
    let app = spawn_app().await;
    let token = user_token(&app).await;
    let (header, claims) = jwt_parts(&token);
    assert_eq!(header["alg"], "HS256");
    assert!(claims["sub"].as_str().is_some_and(is_object_id), "{claims}");
    assert_eq!(claims["role"], "user");
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 900);
}

#[tokio::test]
async fn missing_token_returns_401() {
    let app = spawn_app().await;
    let reply = app.get("/api/users/me", None).await;
    reply.assert_problem(401);
    // Not a bearer scheme.
    let basic = app
        .client
        .get(app.url("/api/users/me"))
        .header("authorization", "Basic YTpi")
        .send()
        .await
        .unwrap();
    Reply::from(basic).await.assert_problem(401);
}

#[tokio::test]
async fn garbage_token_returns_401() {
    let app = spawn_app().await;
    app.me("not-a-jwt").await.assert_problem(401);
}

#[tokio::test]
async fn a_resigned_token_with_the_right_secret_is_accepted() {
    // The control for the crafted-token tests below: signing works as they assume.
    let app = spawn_app().await;
    let token = user_token(&app).await;
    let (_, claims) = jwt_parts(&token);
    app.me(&sign(&claims, JWT_SECRET)).await.assert_status(200);
}

#[tokio::test]
async fn tampered_token_returns_401() {
    let app = spawn_app().await;
    let token = user_token(&app).await;
    let (_, mut claims) = jwt_parts(&token);
    claims["role"] = json!("admin");
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let tampered = parts.join(".");
    app.me(&tampered).await.assert_problem(401);
    app.list("", &tampered).await.assert_problem(401);
}

#[tokio::test]
async fn token_signed_with_another_secret_returns_401() {
    let app = spawn_app().await;
    let token = user_token(&app).await;
    let (_, claims) = jwt_parts(&token);
    app.me(&sign(&claims, "some other secret, forty characters long"))
        .await
        .assert_problem(401);
}

#[tokio::test]
async fn expired_token_returns_401() {
    let app = spawn_app().await;
    let token = user_token(&app).await;
    let (_, mut claims) = jwt_parts(&token);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    claims["iat"] = json!(now - 7200);
    claims["exp"] = json!(now - 3600);
    app.me(&sign(&claims, JWT_SECRET)).await.assert_problem(401);
}

#[tokio::test]
async fn alg_none_token_returns_401() {
    let app = spawn_app().await;
    let token = user_token(&app).await;
    let (_, claims) = jwt_parts(&token);
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    app.me(&format!("{header}.{payload}."))
        .await
        .assert_problem(401);
    app.me(&format!("{header}.{payload}"))
        .await
        .assert_problem(401);
}

#[tokio::test]
async fn token_for_a_deleted_user_returns_401() {
    let app = spawn_app().await;
    let session = app.register_and_login("A", "a@example.com").await;
    let admin = app.admin_token().await;
    app.delete(&session.id, &admin).await.assert_status(204);
    app.me(&session.access_token).await.assert_problem(401);
    app.refresh(&session.refresh_token)
        .await
        .assert_problem(401);
}

// ---------------------------------------------------------------- refresh and logout

#[tokio::test]
async fn refresh_returns_a_new_pair_and_retires_the_old_refresh_token() {
    let app = spawn_app().await;
    let session = app.register_and_login("A", "a@example.com").await;
    let reply = app.refresh(&session.refresh_token).await;
    let pair = assert_token_pair(&reply);
    let new_refresh = pair["refresh_token"].as_str().unwrap();
    assert_ne!(new_refresh, session.refresh_token);
    app.me(pair["access_token"].as_str().unwrap())
        .await
        .assert_status(200);
    app.refresh(&session.refresh_token)
        .await
        .assert_problem(401);
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_whole_session() {
    let app = spawn_app().await;
    let session = app.register_and_login("A", "a@example.com").await;
    // Another session of the same user is not touched.
    let other = app.login_session("a@example.com", PASSWORD).await;
    let first = app.refresh(&session.refresh_token).await;
    let newer = assert_token_pair(&first)["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The thief (or the victim) replays the rotated-out token...
    app.refresh(&session.refresh_token)
        .await
        .assert_problem(401);
    // ...and the newer token of that session dies with it.
    app.refresh(&newer).await.assert_problem(401);
    assert_token_pair(&app.refresh(&other.refresh_token).await);
}

#[tokio::test]
async fn refresh_returns_401_for_an_unknown_token() {
    let app = spawn_app().await;
    app.refresh("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await
        .assert_problem(401);
}

#[tokio::test]
async fn refresh_returns_422_without_a_token() {
    let app = spawn_app().await;
    app.post_json("/api/auth/refresh", &json!({}), None)
        .await
        .assert_invalid_fields(&["refresh_token"]);
}

#[tokio::test]
async fn logout_returns_204_and_the_refresh_token_stops_working() {
    let app = spawn_app().await;
    let session = app.register_and_login("A", "a@example.com").await;
    let reply = app.logout(&session.refresh_token).await;
    reply.assert_status(204);
    assert!(reply.text.is_empty());
    app.refresh(&session.refresh_token)
        .await
        .assert_problem(401);
}

#[tokio::test]
async fn logout_with_an_unknown_token_still_returns_204() {
    let app = spawn_app().await;
    app.logout("unknown-token").await.assert_status(204);
}

#[tokio::test]
async fn deactivated_user_cannot_refresh() {
    let app = spawn_app().await;
    let session = app.register_and_login("A", "a@example.com").await;
    let admin = app.admin_token().await;
    app.deactivate(&session.id, &admin).await.assert_status(200);
    app.refresh(&session.refresh_token)
        .await
        .assert_problem(401);
    // Once reactivated, they can sign in again.
    app.activate(&session.id, &admin).await.assert_status(200);
    app.login_session("a@example.com", PASSWORD).await;
}

#[tokio::test]
async fn admin_seed_exists_and_is_an_admin() {
    let app = spawn_app().await;
    let admin = app.admin_session().await;
    let me = app.me(&admin.access_token).await.json();
    assert_eq!(me["email"], ADMIN_EMAIL);
    assert_eq!(me["role"], "admin");
    assert_eq!(me["name"], "Admin");
}
