use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::domain::{Role, Secret, SessionId, User, unix_millis};

/// What the token service is configured with.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// The HS256 key.
    pub secret: Secret,
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

/// Issues and checks HS256 access tokens.
#[derive(Clone)]
pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    access_ttl: Duration,
}

impl TokenService {
    pub fn new(settings: &TokenSettings) -> Self {
        let secret = settings.secret.expose().as_bytes();
        let access_ttl = settings.access_ttl;
        // Pinned to HS256: a token naming any other algorithm, `none` included, is refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl,
        }
    }

    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    pub fn issue_access(&self, user: &User, session: &SessionId) -> anyhow::Result<String> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let claims = AccessClaims {
            sub: user.id.to_hex(),
            role: user.role.into(),
            iat: now,
            exp: now + self.access_ttl.as_secs() as i64,
            pwd: unix_millis(user.password_changed_at),
            sid: session.as_str().to_owned(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, jsonwebtoken::errors::Error> {
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
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
    use super::*;
    use crate::domain::{DisplayName, Email, UserId};

    fn user() -> User {
        let at = crate::domain::now();
        User {
            id: UserId::generate(),
            name: DisplayName::parse("Mario").unwrap(),
            username: None,
            email: Email::parse("mario@example.com").unwrap(),
            role: Role::Admin,
            active: true,
            password_hash: "x".into(),
            created_at: at,
            updated_at: at,
            last_login_at: None,
            password_changed_at: at,
            locked_until: None,
            email_verified: false,
            mfa_enabled: false,
        }
    }

    fn service(secret: &str) -> TokenService {
        TokenService::new(&TokenSettings {
            secret: Secret::new(secret),
            access_ttl: Duration::from_secs(900),
        })
    }

    #[test]
    fn issued_tokens_verify_with_their_claims() {
        let tokens = service("0123456789abcdef0123456789abcdef");
        let user = user();
        let claims = tokens
            .verify_access(&tokens.issue_access(&user, &SessionId::generate()).unwrap())
            .unwrap();
        assert_eq!(claims.sub, user.id.to_hex());
        assert_eq!(claims.role, TokenRole::Admin);
        assert_eq!(claims.exp - claims.iat, 900);
        assert_eq!(claims.pwd, unix_millis(user.password_changed_at));
    }

    #[test]
    fn other_keys_and_algorithms_are_refused() {
        let tokens = service("0123456789abcdef0123456789abcdef");
        let other = service("another secret, just as long as it");
        let token = other.issue_access(&user(), &SessionId::generate()).unwrap();
        assert!(tokens.verify_access(&token).is_err());

        let claims = tokens
            .verify_access(
                &tokens
                    .issue_access(&user(), &SessionId::generate())
                    .unwrap(),
            )
            .unwrap();
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert!(tokens.verify_access(&hs512).is_err());
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
