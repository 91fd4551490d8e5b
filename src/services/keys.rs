//! The keys that sign and verify access tokens. With HS256, one shared secret; with RS256 or
//! EdDSA, private keys from PKCS#8 PEM files: the first signs, every one verifies, and their
//! public halves are published as a JWK set so that other services can verify our tokens
//! without being able to mint them.

use std::fmt;

use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation,
    jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash},
};
use pkcs8::{EncodePrivateKey, PrivateKeyInfo, SecretDocument};
use rsa::{pkcs1::EncodeRsaPrivateKey, traits::PublicKeyParts};

use crate::domain::Secret;

/// The algorithms `JWT_ALGORITHM` names. Anything else, `none` included, is never accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    Hs256,
    Rs256,
    /// Ed25519.
    EdDsa,
}

impl SigningAlgorithm {
    pub const NAMES: [&'static str; 3] = ["HS256", "RS256", "EdDSA"];

    /// The name as JWT headers spell it (case matters there, so it does here).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "HS256" => Some(Self::Hs256),
            "RS256" => Some(Self::Rs256),
            "EdDSA" => Some(Self::EdDsa),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Rs256 => "RS256",
            Self::EdDsa => "EdDSA",
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            Self::Hs256 => Algorithm::HS256,
            Self::Rs256 => Algorithm::RS256,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a private key cannot be used. The caller names the file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("HS256 signs with JWT_SECRET; key files are for RS256 and EdDSA")]
    Symmetric,
    #[error("is not a PEM file ({0})")]
    NotPem(String),
    #[error(
        "holds a {0:?} PEM block; expected an unencrypted PKCS#8 \"PRIVATE KEY\" \
         (as `openssl genpkey` writes it)"
    )]
    NotPkcs8(String),
    #[error("is not a valid PKCS#8 private key ({0})")]
    Malformed(String),
    #[error("holds {found}, which does not fit {algorithm} (it needs {needed})")]
    WrongKind {
        found: &'static str,
        algorithm: SigningAlgorithm,
        needed: &'static str,
    },
    #[error("holds an RSA key of {0} bits; RS256 needs at least {MIN_RSA_BITS}")]
    TooShort(usize),
}

/// RFC 7518, section 3.3: "a key of size 2048 bits or larger MUST be used".
pub const MIN_RSA_BITS: usize = 2048;

/// One private key, ready to sign, with its public JWK (`kid` = its RFC 7638 thumbprint).
#[derive(Clone)]
pub struct PrivateKey {
    algorithm: SigningAlgorithm,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid())
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Reads one PKCS#8 PEM private key that must fit `algorithm`.
    pub fn from_pem(algorithm: SigningAlgorithm, pem: &[u8]) -> Result<Self, KeyError> {
        if algorithm == SigningAlgorithm::Hs256 {
            return Err(KeyError::Symmetric);
        }
        let text = std::str::from_utf8(pem).map_err(|_| {
            KeyError::NotPem("not text; convert a DER file with `openssl pkey`".into())
        })?;
        let (label, document) =
            SecretDocument::from_pem(text.trim()).map_err(|e| KeyError::NotPem(e.to_string()))?;
        if label != "PRIVATE KEY" {
            return Err(KeyError::NotPkcs8(label.to_owned()));
        }
        let info: PrivateKeyInfo<'_> = document
            .decode_msg()
            .map_err(|e| KeyError::Malformed(e.to_string()))?;
        let found = key_kind(&info);
        let needed = key_kind_of(algorithm);
        if found != needed {
            return Err(KeyError::WrongKind {
                found,
                algorithm,
                needed,
            });
        }
        let malformed = |e: &dyn fmt::Display| KeyError::Malformed(e.to_string());
        let encoding = match algorithm {
            SigningAlgorithm::Rs256 => {
                let key = rsa::RsaPrivateKey::try_from(info).map_err(|e| malformed(&e))?;
                key.validate().map_err(|e| malformed(&e))?;
                let bits = key.size() * 8;
                if bits < MIN_RSA_BITS {
                    return Err(KeyError::TooShort(bits));
                }
                rsa_encoding_key(&key)
            }
            SigningAlgorithm::EdDsa => {
                let key = ed25519_dalek::SigningKey::try_from(info).map_err(|e| malformed(&e))?;
                ed25519_encoding_key(&key)
            }
            SigningAlgorithm::Hs256 => unreachable!("refused above"),
        };
        Self::new(algorithm, encoding).map_err(|e| malformed(&e))
    }

    /// A new random key, for development when no key file is configured.
    pub fn generate(algorithm: SigningAlgorithm) -> Result<Self, KeyError> {
        let encoding = match algorithm {
            SigningAlgorithm::Hs256 => return Err(KeyError::Symmetric),
            SigningAlgorithm::Rs256 => {
                let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, MIN_RSA_BITS)
                    .map_err(|e| KeyError::Malformed(e.to_string()))?;
                rsa_encoding_key(&key)
            }
            SigningAlgorithm::EdDsa => {
                let seed: [u8; 32] = rand::random();
                ed25519_encoding_key(&ed25519_dalek::SigningKey::from_bytes(&seed))
            }
        };
        Self::new(algorithm, encoding).map_err(|e| KeyError::Malformed(e.to_string()))
    }

    fn new(
        algorithm: SigningAlgorithm,
        encoding: EncodingKey,
    ) -> jsonwebtoken::errors::Result<Self> {
        let mut jwk = Jwk::from_encoding_key(&encoding, algorithm.jwt())?;
        jwk.common.key_id = Some(jwk.thumbprint(ThumbprintHash::SHA256)?);
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let key = Self {
            algorithm,
            encoding,
            jwk,
        };
        // A key that loads is a key that signs, and its published half verifies it.
        let probe = key.sign(&serde_json::json!({"probe": true}))?;
        let mut validation = Validation::new(algorithm.jwt());
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        jsonwebtoken::decode::<serde_json::Value>(&probe, &key.decoding()?, &validation)?;
        Ok(key)
    }

    /// The RFC 7638 thumbprint of the public key: the `kid` of its tokens and its JWK.
    pub fn kid(&self) -> &str {
        self.jwk.common.key_id.as_deref().unwrap_or_default()
    }

    fn sign(&self, claims: &impl serde::Serialize) -> jsonwebtoken::errors::Result<String> {
        let mut header = Header::new(self.algorithm.jwt());
        header.kid = Some(self.kid().to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }

    fn decoding(&self) -> jsonwebtoken::errors::Result<DecodingKey> {
        DecodingKey::from_jwk(&self.jwk)
    }
}

const RSA: &str = "an RSA key";
/// id-ecPublicKey (RFC 5480), to name the kind of a key that fits neither algorithm.
const EC_PUBLIC_KEY: pkcs8::ObjectIdentifier =
    pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ED25519: &str = "an Ed25519 key";

fn key_kind_of(algorithm: SigningAlgorithm) -> &'static str {
    match algorithm {
        SigningAlgorithm::Rs256 => RSA,
        SigningAlgorithm::EdDsa => ED25519,
        SigningAlgorithm::Hs256 => "a shared secret",
    }
}

fn key_kind(info: &PrivateKeyInfo<'_>) -> &'static str {
    match info.algorithm.oid {
        rsa::pkcs1::ALGORITHM_OID => RSA,
        ed25519_dalek::pkcs8::ALGORITHM_OID => ED25519,
        EC_PUBLIC_KEY => "an elliptic-curve (ECDSA) key",
        _ => "a key of another kind",
    }
}

/// jsonwebtoken's RustCrypto backend signs RS256 with a PKCS#1 key.
fn rsa_encoding_key(key: &rsa::RsaPrivateKey) -> EncodingKey {
    let der = key
        .to_pkcs1_der()
        .expect("a valid RSA key has a PKCS#1 encoding");
    EncodingKey::from_rsa_der(der.as_bytes())
}

/// jsonwebtoken takes Ed25519 keys as PKCS#8 v1 (the seed alone), which is what `openssl
/// genpkey` writes; re-encoding also accepts v2 files that carry the public key too.
fn ed25519_encoding_key(key: &ed25519_dalek::SigningKey) -> EncodingKey {
    let v1 = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    let der = v1
        .to_pkcs8_der()
        .expect("an Ed25519 seed has a PKCS#8 encoding");
    EncodingKey::from_ed_der(der.as_bytes())
}

/// The keys of one process: the algorithm they are pinned to, the one that signs, and all
/// that verify (with asymmetric keys, by `kid`).
#[derive(Clone)]
pub struct Keyring {
    algorithm: SigningAlgorithm,
    signing: EncodingKey,
    signing_kid: Option<String>,
    verifying: Vec<(Option<String>, DecodingKey)>,
    published: JwkSet,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<_> = self.verifying.iter().map(|(kid, _)| kid).collect();
        f.debug_struct("Keyring")
            .field("algorithm", &self.algorithm)
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

/// Two entries of `JWT_PRIVATE_KEYS` hold the same key (by index).
#[derive(Debug, PartialEq, Eq)]
pub struct DuplicateKey {
    pub first: usize,
    pub second: usize,
}

impl Keyring {
    /// HS256 with one shared secret: nothing is published.
    pub fn hmac(secret: &Secret) -> Self {
        let bytes = secret.expose().as_bytes();
        Self {
            algorithm: SigningAlgorithm::Hs256,
            signing: EncodingKey::from_secret(bytes),
            signing_kid: None,
            verifying: vec![(None, DecodingKey::from_secret(bytes))],
            published: JwkSet::default(),
        }
    }

    /// The first key signs; every key verifies and is published. All fit one algorithm, as
    /// [`PrivateKey::from_pem`] made them for it.
    pub fn asymmetric(first: PrivateKey, others: Vec<PrivateKey>) -> Result<Self, DuplicateKey> {
        let keys: Vec<PrivateKey> = std::iter::once(first).chain(others).collect();
        for (second, key) in keys.iter().enumerate() {
            if let Some(first) = keys[..second].iter().position(|k| k.kid() == key.kid()) {
                return Err(DuplicateKey { first, second });
            }
        }
        let verifying = keys
            .iter()
            .map(|key| {
                let decoding = key.decoding().expect("checked when the key was made");
                (Some(key.kid().to_owned()), decoding)
            })
            .collect();
        Ok(Self {
            algorithm: keys[0].algorithm,
            signing: keys[0].encoding.clone(),
            signing_kid: Some(keys[0].kid().to_owned()),
            verifying,
            published: JwkSet {
                keys: keys.into_iter().map(|key| key.jwk).collect(),
            },
        })
    }

    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// The public keys, as `/.well-known/jwks.json` serves them (empty with HS256).
    pub fn published(&self) -> &JwkSet {
        &self.published
    }

    /// A header naming the pinned algorithm and, with asymmetric keys, the signing key.
    pub(super) fn header(&self) -> Header {
        let mut header = Header::new(self.algorithm.jwt());
        header.kid = self.signing_kid.clone();
        header
    }

    pub(super) fn signing_key(&self) -> &EncodingKey {
        &self.signing
    }

    /// A validation that accepts the pinned algorithm only.
    pub(super) fn validation(&self) -> Validation {
        Validation::new(self.algorithm.jwt())
    }

    /// The key a token's `kid` names. With HS256 there is one key and no `kid`; with
    /// asymmetric keys, a token without a `kid` or with an unknown one has no key.
    pub(super) fn verifying_key(&self, kid: Option<&str>) -> Option<&DecodingKey> {
        self.verifying
            .iter()
            .find(|(known, _)| known.as_deref() == kid)
            .map(|(_, key)| key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn algorithm_names_are_exact() {
        for name in SigningAlgorithm::NAMES {
            assert_eq!(SigningAlgorithm::parse(name).unwrap().name(), name);
        }
        for name in ["hs256", "none", "RS512", "ES256", "eddsa", ""] {
            assert_eq!(SigningAlgorithm::parse(name), None, "{name}");
        }
    }

    #[test]
    fn pkcs8_keys_load_for_their_algorithm() {
        let rsa = PrivateKey::from_pem(SigningAlgorithm::Rs256, &fixture("rsa-a.pem")).unwrap();
        let ed = PrivateKey::from_pem(SigningAlgorithm::EdDsa, &fixture("ed25519-a.pem")).unwrap();
        // base64url of a SHA-256 digest: 43 characters.
        assert_eq!(rsa.kid().len(), 43);
        assert_eq!(ed.kid().len(), 43);
        assert_ne!(rsa.kid(), ed.kid());
        // The thumbprint depends on the key alone.
        let again = PrivateKey::from_pem(SigningAlgorithm::Rs256, &fixture("rsa-a.pem")).unwrap();
        assert_eq!(rsa.kid(), again.kid());
    }

    #[test]
    fn keys_that_do_not_fit_are_refused_with_the_reason() {
        use SigningAlgorithm::*;
        type Expected = fn(&KeyError) -> bool;
        let cases: [(SigningAlgorithm, &str, Expected); 7] = [
            (Rs256, "ed25519-a.pem", |e| {
                matches!(e, KeyError::WrongKind { found: ED25519, .. })
            }),
            (EdDsa, "rsa-a.pem", |e| {
                matches!(e, KeyError::WrongKind { found: RSA, .. })
            }),
            (Rs256, "ec-p256.pem", |e| {
                e.to_string().contains("elliptic-curve")
            }),
            (Rs256, "rsa-1024.pem", |e| *e == KeyError::TooShort(1024)),
            (Rs256, "rsa-a-pkcs1.pem", |e| {
                *e == KeyError::NotPkcs8("RSA PRIVATE KEY".into())
            }),
            (Rs256, "rsa-a-public.pem", |e| {
                *e == KeyError::NotPkcs8("PUBLIC KEY".into())
            }),
            (Hs256, "rsa-a.pem", |e| *e == KeyError::Symmetric),
        ];
        for (algorithm, file, expected) in cases {
            let error = PrivateKey::from_pem(algorithm, &fixture(file)).unwrap_err();
            assert!(expected(&error), "{algorithm} {file}: {error}");
        }
        for garbage in [&b"not a key"[..], b"", &[0xff, 0xfe, 0x00]] {
            let error = PrivateKey::from_pem(Rs256, garbage).unwrap_err();
            assert!(matches!(error, KeyError::NotPem(_)), "{error}");
        }
    }

    #[test]
    fn generated_keys_sign_and_verify() {
        for algorithm in [SigningAlgorithm::Rs256, SigningAlgorithm::EdDsa] {
            let key = PrivateKey::generate(algorithm).unwrap();
            let other = PrivateKey::generate(algorithm).unwrap();
            assert_ne!(key.kid(), other.kid());
            let ring = Keyring::asymmetric(key, vec![]).unwrap();
            assert_eq!(ring.published().keys.len(), 1);
        }
        assert_eq!(
            PrivateKey::generate(SigningAlgorithm::Hs256).unwrap_err(),
            KeyError::Symmetric
        );
    }

    #[test]
    fn the_first_key_signs_and_all_verify() {
        let load = |file| PrivateKey::from_pem(SigningAlgorithm::EdDsa, &fixture(file)).unwrap();
        let (new, old) = (load("ed25519-b.pem"), load("ed25519-a.pem"));
        let (new_kid, old_kid) = (new.kid().to_owned(), old.kid().to_owned());
        let ring = Keyring::asymmetric(new, vec![old]).unwrap();
        assert_eq!(ring.header().kid.as_deref(), Some(new_kid.as_str()));
        assert!(ring.verifying_key(Some(&new_kid)).is_some());
        assert!(ring.verifying_key(Some(&old_kid)).is_some());
        assert!(ring.verifying_key(Some("unknown")).is_none());
        assert!(ring.verifying_key(None).is_none());
        let kids: Vec<_> = ring
            .published()
            .keys
            .iter()
            .map(|jwk| jwk.common.key_id.clone().unwrap())
            .collect();
        assert_eq!(kids, [new_kid, old_kid]);
    }

    #[test]
    fn the_same_key_twice_is_refused() {
        let load = |file| PrivateKey::from_pem(SigningAlgorithm::Rs256, &fixture(file)).unwrap();
        let error = Keyring::asymmetric(
            load("rsa-a.pem"),
            vec![load("rsa-b.pem"), load("rsa-a.pem")],
        )
        .unwrap_err();
        assert_eq!(
            error,
            DuplicateKey {
                first: 0,
                second: 2
            }
        );
    }
}
