use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::Validation;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::keys::{Keyring, PublicKey};
use crate::domain::{Role, SessionId, User, unix_millis};

/// What the token service is configured with.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub keys: Keyring,
    /// The `iss` of every token made, and the only one accepted.
    pub issuer: String,
    /// When set, the `aud` of every token made, and required of every token read; when not,
    /// a token naming any audience is refused.
    pub audience: Option<String>,
    pub access_ttl: Duration,
}

/// A role as access tokens spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenRole {
    #[serde(rename = "user")]
    User,
    #[serde(rename = "admin")]
    Admin,
}

impl From<Role> for TokenRole {
    fn from(role: Role) -> Self {
        match role {
            Role::User => TokenRole::User,
            Role::Admin => TokenRole::Admin,
        }
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// The user's id.
    pub sub: String,
    /// For other services' convenience; this one reads the role from the user record.
    pub role: TokenRole,
    pub iat: i64,
    pub exp: i64,
    /// When the user's password last changed (Unix milliseconds) as the token was issued:
    /// a token whose value differs from the user's now predates a password change.
    /// Seconds (`iat`) are too coarse to order a change and a login in the same second.
    pub pwd: i64,
    /// The session the token belongs to: it is refused once the session has ended.
    pub sid: String,
}

/// Why an access token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no key of ours has kid {0:?}")]
    UnknownKey(Option<String>),
    #[error(transparent)]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

/// Issues and checks access tokens, pinned to the configured algorithm, issuer and audience.
#[derive(Clone)]
pub struct TokenService {
    keys: Arc<Keyring>,
    validation: Arc<Validation>,
    issuer: String,
    audience: Option<String>,
    access_ttl: Duration,
}

impl TokenService {
    pub fn new(settings: &TokenSettings) -> Self {
        // Pinned: a token naming any other algorithm, `none` included, is refused.
        let mut validation = settings.keys.validation();
        // Instances on other machines may keep clocks a little apart (README).
        validation.leeway = 5;
        validation.set_issuer(&[&settings.issuer]);
        let mut required = vec!["exp", "sub", "iss"];
        if let Some(audience) = &settings.audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Self {
            keys: Arc::new(settings.keys.clone()),
            validation: Arc::new(validation),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            access_ttl: settings.access_ttl,
        }
    }

    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// The public keys other services verify our tokens with (empty with HS256).
    pub fn published_keys(&self) -> &[PublicKey] {
        self.keys.published()
    }

    pub fn issue_access(&self, user: &User, session: &SessionId) -> anyhow::Result<String> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user.id.to_hex(),
            role: user.role.into(),
            iat: now,
            exp: now + self.access_ttl.as_secs() as i64,
            pwd: unix_millis(user.password_changed_at),
            sid: session.as_str().to_owned(),
        };
        Ok(jsonwebtoken::encode(
            self.keys.header(),
            &claims,
            self.keys.signing_key(),
        )?)
    }

    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let kid = jsonwebtoken::decode_header(token)?.kid;
        let key = self
            .keys
            .verifying_key(kid.as_deref())
            .ok_or(TokenError::UnknownKey(kid))?;
        Ok(jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation)?.claims)
    }
}

/// A random secret handed to a client once (refresh and reset tokens); only its hash is kept.
pub struct OpaqueToken {
    pub secret: String,
    pub hash: String,
}

impl OpaqueToken {
    /// 256 random bits, URL-safe base64.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let secret = URL_SAFE_NO_PAD.encode(bytes);
        let hash = hash_token(&secret);
        Self { secret, hash }
    }
}

/// SHA-256, hex. Enough for high-entropy random tokens, unlike passwords.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    use super::*;
    use crate::{
        domain::Secret,
        services::keys::{KeyAlgorithm, PrivateKey},
    };

    fn user() -> User {
        User {
            role: Role::Admin,
            password_hash: "x".into(),
            ..User::sample()
        }
    }

    fn settings(keys: Keyring) -> TokenSettings {
        TokenSettings {
            keys,
            issuer: "user-service".to_owned(),
            audience: None,
            access_ttl: Duration::from_secs(900),
        }
    }

    fn service(secret: &str) -> TokenService {
        TokenService::new(&settings(Keyring::hmac(&Secret::new(secret))))
    }

    fn key_file(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn asymmetric(algorithm: KeyAlgorithm, files: &[&str]) -> TokenService {
        let mut keys = files
            .iter()
            .map(|file| PrivateKey::from_pem(algorithm, &key_file(file)).unwrap());
        let first = keys.next().unwrap();
        TokenService::new(&settings(
            Keyring::private_keys(first, keys.collect()).unwrap(),
        ))
    }

    fn token(tokens: &TokenService) -> String {
        tokens
            .issue_access(&user(), &SessionId::generate())
            .unwrap()
    }

    #[test]
    fn issued_tokens_verify_with_their_claims() {
        let tokens = service("0123456789abcdef0123456789abcdef");
        let user = user();
        let claims = tokens
            .verify_access(&tokens.issue_access(&user, &SessionId::generate()).unwrap())
            .unwrap();
        assert_eq!(claims.sub, user.id.to_hex());
        assert_eq!(claims.iss, "user-service");
        assert_eq!(claims.aud, None);
        assert_eq!(claims.role, TokenRole::Admin);
        assert_eq!(claims.exp - claims.iat, 900);
        assert_eq!(claims.pwd, unix_millis(user.password_changed_at));
    }

    #[test]
    fn other_keys_and_algorithms_are_refused() {
        let tokens = service("0123456789abcdef0123456789abcdef");
        let other = service("another secret, just as long as it");
        assert!(tokens.verify_access(&token(&other)).is_err());

        let claims = tokens.verify_access(&token(&tokens)).unwrap();
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert!(tokens.verify_access(&hs512).is_err());
    }

    #[test]
    fn asymmetric_tokens_name_their_key_and_verify_with_any_listed_key() {
        for (algorithm, new, old) in [
            (KeyAlgorithm::Rs256, "rsa-b.pem", "rsa-a.pem"),
            (KeyAlgorithm::EdDsa, "ed25519-b.pem", "ed25519-a.pem"),
        ] {
            let before = asymmetric(algorithm, &[old]);
            let after = asymmetric(algorithm, &[new, old]);
            let old_token = token(&before);
            let new_token = token(&after);
            let kid = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
            assert_eq!(kid(&old_token), before.published_keys()[0].kid);
            assert_ne!(kid(&old_token), kid(&new_token));
            assert!(after.verify_access(&old_token).is_ok(), "{algorithm}");
            assert!(after.verify_access(&new_token).is_ok(), "{algorithm}");
            // Once the old key is dropped, its tokens are refused.
            let only_new = asymmetric(algorithm, &[new]);
            assert!(matches!(
                only_new.verify_access(&old_token),
                Err(TokenError::UnknownKey(Some(_)))
            ));
        }
    }

    #[test]
    fn an_hs256_token_made_with_the_public_key_is_refused() {
        let tokens = asymmetric(KeyAlgorithm::Rs256, &["rsa-a.pem"]);
        let claims = tokens.verify_access(&token(&tokens)).unwrap();
        let kid = Some(tokens.published_keys()[0].kid.clone());
        for secret in [key_file("rsa-a-public.pem"), key_file("rsa-a.pem")] {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = kid.clone();
            let forged =
                jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret)).unwrap();
            assert!(tokens.verify_access(&forged).is_err());
        }
    }

    #[test]
    fn issuer_and_audience_are_enforced() {
        let with = |issuer: &str, audience: Option<&str>| {
            TokenService::new(&TokenSettings {
                issuer: issuer.to_owned(),
                audience: audience.map(str::to_owned),
                ..settings(Keyring::hmac(&Secret::new(
                    "0123456789abcdef0123456789abcdef",
                )))
            })
        };
        let plain = with("user-service", None);
        let for_api = with("user-service", Some("api"));
        let other_issuer = with("someone-else", None);
        assert_eq!(
            for_api
                .verify_access(&token(&for_api))
                .unwrap()
                .aud
                .as_deref(),
            Some("api")
        );
        // A token for an audience is refused where none, or another one, is configured...
        assert!(plain.verify_access(&token(&for_api)).is_err());
        assert!(
            with("user-service", Some("web"))
                .verify_access(&token(&for_api))
                .is_err()
        );
        // ...and one without an audience where one is required.
        assert!(for_api.verify_access(&token(&plain)).is_err());
        assert!(plain.verify_access(&token(&other_issuer)).is_err());
        assert!(other_issuer.verify_access(&token(&plain)).is_err());
    }

    #[test]
    fn opaque_tokens_have_256_bits_and_are_stored_hashed() {
        let token = OpaqueToken::generate();
        assert_eq!(URL_SAFE_NO_PAD.decode(&token.secret).unwrap().len(), 32);
        assert_eq!(token.hash, hash_token(&token.secret));
        assert_ne!(token.hash, token.secret);
        assert_ne!(OpaqueToken::generate().secret, token.secret);
    }
}
