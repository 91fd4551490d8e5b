//! Tokens other services can verify: RS256 and EdDSA keys, the JWK set, `kid`, issuer and
//! audience. Tokens are forged here with the test key files to show that each check, not
//! just a bad signature, is what refuses them.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{JWT_SECRET, TestApp, spawn_app_with};

fn key_file(name: &str) -> String {
    format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(key_file(name)).unwrap()
}

/// One asymmetric algorithm and its test keys.
#[derive(Clone, Copy, Debug)]
struct Scheme {
    name: &'static str,
    algorithm: Algorithm,
    /// Listed in `JWT_PRIVATE_KEYS`: the first signs.
    signing: &'static str,
    /// Listed after it in rotation; otherwise a key the service does not hold.
    older: &'static str,
}

const RS256: Scheme = Scheme {
    name: "RS256",
    algorithm: Algorithm::RS256,
    signing: "rsa-a.pem",
    older: "rsa-b.pem",
};

const EDDSA: Scheme = Scheme {
    name: "EdDSA",
    algorithm: Algorithm::EdDSA,
    signing: "ed25519-a.pem",
    older: "ed25519-b.pem",
};

impl Scheme {
    fn encoding_key(self, file: &str) -> EncodingKey {
        match self.algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem(file)).unwrap(),
            _ => EncodingKey::from_ed_pem(&pem(file)).unwrap(),
        }
    }

    async fn spawn(self, keys: &[&str], extra: &[(&str, &str)]) -> TestApp {
        let keys = keys
            .iter()
            .map(|k| key_file(k))
            .collect::<Vec<_>>()
            .join(",");
        let mut vars = vec![
            ("JWT_ALGORITHM", self.name),
            ("JWT_PRIVATE_KEYS", keys.as_str()),
        ];
        vars.extend_from_slice(extra);
        spawn_app_with(&vars).await
    }
}

/// RFC 7638, section 3: the required members in lexicographic order, no white space,
/// SHA-256, base64url. Written out here rather than asked of the library under test.
fn thumbprint(jwk: &Value) -> String {
    let canonical = match jwk["kty"].as_str().unwrap() {
        "RSA" => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            jwk["e"].as_str().unwrap(),
            jwk["n"].as_str().unwrap()
        ),
        "OKP" => format!(
            r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#,
            jwk["crv"].as_str().unwrap(),
            jwk["x"].as_str().unwrap()
        ),
        other => panic!("unexpected kty {other}"),
    };
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

fn decoding_key(jwk: &Value) -> DecodingKey {
    match jwk["kty"].as_str().unwrap() {
        "RSA" => {
            DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
                .unwrap()
        }
        _ => DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).unwrap(),
    }
}

async fn jwks(app: &TestApp) -> Vec<Value> {
    let reply = app.get("/.well-known/jwks.json", None).await;
    reply.assert_status(200);
    assert_eq!(reply.header("cache-control"), Some("public, max-age=300"));
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    reply.json()["keys"].as_array().unwrap().clone()
}

fn header_of(token: &str) -> Header {
    jsonwebtoken::decode_header(token).unwrap()
}

/// The claims of a real token, read without checking anything, as a forger would.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn sign(header: Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

async fn me_status(app: &TestApp, token: &str) -> u16 {
    app.me(token).await.status.as_u16()
}

#[tokio::test]
async fn hs256_publishes_an_empty_key_set() {
    let app = spawn_app_with(&[]).await;
    assert!(jwks(&app).await.is_empty());
    let token = app.admin_token().await;
    let header = header_of(&token);
    assert_eq!(header.alg, Algorithm::HS256);
    assert_eq!(header.kid, None);
    assert_eq!(claims_of(&token)["iss"], "user-service");
    assert!(claims_of(&token).get("aud").is_none());
}

#[tokio::test]
async fn rs256_tokens_verify_with_the_published_key() {
    tokens_verify_with_the_published_key(RS256).await;
}

#[tokio::test]
async fn eddsa_tokens_verify_with_the_published_key() {
    tokens_verify_with_the_published_key(EDDSA).await;
}

async fn tokens_verify_with_the_published_key(scheme: Scheme) {
    let app = scheme.spawn(&[scheme.signing, scheme.older], &[]).await;
    let keys = jwks(&app).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    for jwk in &keys {
        assert_eq!(jwk["kid"], thumbprint(jwk), "{jwk}");
        assert_eq!(jwk["alg"], scheme.name);
        assert_eq!(jwk["use"], "sig");
        // Public halves only: no private RSA or OKP member.
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(jwk.get(private).is_none(), "{private} in {jwk}");
        }
    }
    match scheme.algorithm {
        Algorithm::RS256 => {
            assert_eq!(keys[0]["kty"], "RSA");
            assert_eq!(keys[0]["e"], "AQAB");
        }
        _ => {
            assert_eq!(keys[0]["kty"], "OKP");
            assert_eq!(keys[0]["crv"], "Ed25519");
        }
    }

    let token = app.admin_token().await;
    let header = header_of(&token);
    assert_eq!(header.alg, scheme.algorithm);
    assert_eq!(
        header.kid.as_deref(),
        keys[0]["kid"].as_str(),
        "the first key signs"
    );

    // What another service does: pick the key by kid, pin the algorithm and the issuer.
    let jwk = keys
        .iter()
        .find(|k| k["kid"].as_str() == header.kid.as_deref())
        .unwrap();
    let mut validation = Validation::new(scheme.algorithm);
    validation.set_issuer(&["user-service"]);
    let claims = jsonwebtoken::decode::<Value>(&token, &decoding_key(jwk), &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["iss"], "user-service");
    assert_eq!(claims["role"], "admin");
    let me = app.me(&token).await;
    me.assert_status(200);
    assert_eq!(claims["sub"], me.json()["id"]);
    // The other published key does not verify it.
    assert!(jsonwebtoken::decode::<Value>(&token, &decoding_key(&keys[1]), &validation).is_err());
}

#[tokio::test]
async fn rs256_refuses_forged_and_misaddressed_tokens() {
    refuses_forged_and_misaddressed_tokens(RS256).await;
}

#[tokio::test]
async fn eddsa_refuses_forged_and_misaddressed_tokens() {
    refuses_forged_and_misaddressed_tokens(EDDSA).await;
}

async fn refuses_forged_and_misaddressed_tokens(scheme: Scheme) {
    let app = scheme.spawn(&[scheme.signing], &[]).await;
    let token = app.admin_token().await;
    let claims = claims_of(&token);
    let kid = header_of(&token).kid.unwrap();
    let own = scheme.encoding_key(scheme.signing);
    let with_kid = |alg: Algorithm, kid: Option<&str>| {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        header
    };

    // The control: the test's own signing, with the real claims and kid, is accepted, so
    // each refusal below is for the one thing changed.
    let control = sign(with_kid(scheme.algorithm, Some(&kid)), &claims, &own);
    assert_eq!(me_status(&app, &control).await, 200);

    let mut refused = Vec::new();
    // Key confusion: HS256 keyed with the public key (as PEM, and as published).
    let public_pem = match scheme.algorithm {
        Algorithm::RS256 => pem("rsa-a-public.pem"),
        _ => jwks(&app).await[0]["x"]
            .as_str()
            .unwrap()
            .as_bytes()
            .to_vec(),
    };
    for secret in [
        public_pem,
        serde_json::to_vec(&jwks(&app).await[0]).unwrap(),
    ] {
        refused.push((
            "HS256 keyed with the public key",
            sign(
                with_kid(Algorithm::HS256, Some(&kid)),
                &claims,
                &EncodingKey::from_secret(&secret),
            ),
        ));
    }
    // The HS256 secret the service was also given (unused with key files).
    refused.push((
        "HS256 with JWT_SECRET",
        sign(
            with_kid(Algorithm::HS256, Some(&kid)),
            &claims,
            &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        ),
    ));
    // Our own key under another algorithm of its family, or a key of the other algorithm.
    match scheme.algorithm {
        Algorithm::RS256 => {
            for alg in [Algorithm::RS512, Algorithm::PS256] {
                refused.push((
                    "RS512 or PS256 with our key",
                    sign(with_kid(alg, Some(&kid)), &claims, &own),
                ));
            }
            let ed = EDDSA.encoding_key(EDDSA.signing);
            refused.push((
                "EdDSA",
                sign(with_kid(Algorithm::EdDSA, Some(&kid)), &claims, &ed),
            ));
        }
        _ => {
            let rsa = RS256.encoding_key(RS256.signing);
            refused.push((
                "RS256",
                sign(with_kid(Algorithm::RS256, Some(&kid)), &claims, &rsa),
            ));
        }
    }
    // `alg: none`: the header and claims with an empty signature.
    let none_header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","kid":"{kid}"}}"#));
    let (_, rest) = control.split_once('.').unwrap();
    let (payload, _) = rest.split_once('.').unwrap();
    refused.push(("alg none", format!("{none_header}.{payload}.")));
    // Our key, but a kid that names no key, or none at all.
    refused.push((
        "unknown kid",
        sign(with_kid(scheme.algorithm, Some("not-a-key")), &claims, &own),
    ));
    refused.push((
        "no kid",
        sign(with_kid(scheme.algorithm, None), &claims, &own),
    ));
    // A key the service does not hold, claiming to be ours.
    let foreign = scheme.encoding_key(scheme.older);
    refused.push((
        "foreign key",
        sign(with_kid(scheme.algorithm, Some(&kid)), &claims, &foreign),
    ));
    // Our key and kid, other issuer or an audience nobody configured.
    let mut other_issuer = claims.clone();
    other_issuer["iss"] = json!("someone-else");
    refused.push((
        "other iss",
        sign(with_kid(scheme.algorithm, Some(&kid)), &other_issuer, &own),
    ));
    let mut no_issuer = claims.clone();
    no_issuer.as_object_mut().unwrap().remove("iss");
    refused.push((
        "no iss",
        sign(with_kid(scheme.algorithm, Some(&kid)), &no_issuer, &own),
    ));
    let mut audience = claims.clone();
    audience["aud"] = json!("another-service");
    refused.push((
        "unexpected aud",
        sign(with_kid(scheme.algorithm, Some(&kid)), &audience, &own),
    ));

    for (what, forged) in refused {
        let reply = app.me(&forged).await;
        assert_eq!(
            reply.status.as_u16(),
            401,
            "{} {what}: {}",
            scheme.name,
            reply.text
        );
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer"),
            "{} {what}",
            scheme.name
        );
    }
}

#[tokio::test]
async fn rs256_stamps_and_requires_a_configured_issuer_and_audience() {
    a_configured_issuer_and_audience_are_stamped_and_required(RS256).await;
}

#[tokio::test]
async fn eddsa_stamps_and_requires_a_configured_issuer_and_audience() {
    a_configured_issuer_and_audience_are_stamped_and_required(EDDSA).await;
}

async fn a_configured_issuer_and_audience_are_stamped_and_required(scheme: Scheme) {
    let app = scheme
        .spawn(
            &[scheme.signing],
            &[
                ("JWT_ISSUER", "https://id.example.com"),
                ("JWT_AUDIENCE", "orders"),
            ],
        )
        .await;
    let token = app.admin_token().await;
    let claims = claims_of(&token);
    assert_eq!(header_of(&token).alg, scheme.algorithm);
    assert_eq!(claims["iss"], "https://id.example.com");
    assert_eq!(claims["aud"], "orders");
    assert_eq!(me_status(&app, &token).await, 200);

    let kid = header_of(&token).kid.unwrap();
    let own = scheme.encoding_key(scheme.signing);
    let mut header = Header::new(scheme.algorithm);
    header.kid = Some(kid);
    // The control: re-signed as it was, it passes.
    assert_eq!(
        me_status(&app, &sign(header.clone(), &claims, &own)).await,
        200
    );
    for (what, aud, iss) in [
        (
            "another audience",
            json!("billing"),
            json!("https://id.example.com"),
        ),
        (
            "a list without ours",
            json!(["billing", "shipping"]),
            json!("https://id.example.com"),
        ),
        // The service issues one audience as a string and reads nothing else.
        (
            "a list, even with ours",
            json!(["orders", "billing"]),
            json!("https://id.example.com"),
        ),
        ("no audience", Value::Null, json!("https://id.example.com")),
        ("the default issuer", json!("orders"), json!("user-service")),
    ] {
        let mut forged = claims.clone();
        forged["aud"] = aud;
        forged["iss"] = iss;
        if forged["aud"].is_null() {
            forged.as_object_mut().unwrap().remove("aud");
        }
        let token = sign(header.clone(), &forged, &own);
        assert_eq!(me_status(&app, &token).await, 401, "{what}");
    }
}
