//! The public keys that verify our access tokens, for other services (RFC 7517).

use actix_web::{HttpResponse, get, http::header, web};
use serde::Serialize;

use super::AppState;
use crate::services::{KeyMaterial, PublicKey, SigningAlgorithm};

/// How long other services may cache the set. Short, so that a key added at a restart is
/// picked up within minutes even by a verifier that does not refetch on an unknown `kid`.
const MAX_AGE_SECS: u32 = 300;

/// A JSON Web Key Set.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JwkSetResponse {
    /// Empty with `JWT_ALGORITHM=HS256`, whose secret is never published.
    keys: Vec<PublicJwk>,
}

/// One public key, as RFC 7517 and RFC 8037 spell it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublicJwk {
    /// `RSA` for RS256, `OKP` for EdDSA.
    #[schema(example = "OKP")]
    kty: &'static str,
    /// The RFC 7638 SHA-256 thumbprint of the key, as named by the `kid` of its tokens.
    kid: String,
    #[schema(example = "EdDSA")]
    alg: &'static str,
    #[serde(rename = "use")]
    #[schema(example = "sig")]
    key_use: &'static str,
    /// The curve of an `OKP` key: `Ed25519`.
    #[serde(skip_serializing_if = "Option::is_none")]
    crv: Option<&'static str>,
    /// The public key of an `OKP` key, base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    /// The modulus of an `RSA` key, base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    /// The exponent of an `RSA` key, base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    e: Option<String>,
}

impl From<&PublicKey> for PublicJwk {
    fn from(key: &PublicKey) -> Self {
        let mut jwk = Self {
            kty: "",
            kid: key.kid.clone(),
            alg: SigningAlgorithm::Key(key.algorithm).name(),
            // Every published key verifies access tokens, and nothing else.
            key_use: "sig",
            crv: None,
            x: None,
            n: None,
            e: None,
        };
        match &key.material {
            KeyMaterial::Rsa { n, e } => {
                jwk.kty = "RSA";
                jwk.n = Some(n.clone());
                jwk.e = Some(e.clone());
            }
            KeyMaterial::Ed25519 { x } => {
                jwk.kty = "OKP";
                jwk.crv = Some("Ed25519");
                jwk.x = Some(x.clone());
            }
        }
        jwk
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(jwks);
}

/// The public keys that verify access tokens: every key of `JWT_PRIVATE_KEYS`, the signing
/// one first. Under the rate limit like every path but the probes: with `max-age=300`,
/// a verifier asks seldom.
#[utoipa::path(
    tag = "keys", operation_id = "jwks", summary = "Public keys for verifying access tokens",
    responses((status = 200, description = "The JWK set; tokens name their key by `kid`", body = JwkSetResponse,
        headers(("Cache-Control" = String, description = "`public, max-age=300`"))))
)]
#[get("/.well-known/jwks.json")]
pub(crate) async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    let keys = state
        .tokens
        .published_keys()
        .iter()
        .map(PublicJwk::from)
        .collect();
    HttpResponse::Ok()
        .insert_header((
            header::CACHE_CONTROL,
            format!("public, max-age={MAX_AGE_SECS}"),
        ))
        .json(JwkSetResponse { keys })
}
