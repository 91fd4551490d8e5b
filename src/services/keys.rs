//! The keys that sign and verify access tokens. With HS256, one shared secret; with RS256 or
//! EdDSA, private keys from PKCS#8 PEM files: the first signs, every one verifies, and their
//! public halves are published as a JWK set so that other services can verify our tokens
//! without being able to mint them.

use std::fmt;

use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation,
    jwk::{AlgorithmParameters, Jwk, ThumbprintHash},
};
use pkcs8::{EncodePrivateKey, PrivateKeyInfo, SecretDocument};
use rsa::{pkcs1::EncodeRsaPrivateKey, traits::PublicKeyParts};

use crate::domain::Secret;

/// The algorithms `JWT_ALGORITHM` names. Anything else, `none` included, is never accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    Hs256,
    /// Signing with a private key whose public half is published.
    Key(KeyAlgorithm),
}

/// The algorithms that sign with a private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
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
            "RS256" => Some(Self::Key(KeyAlgorithm::Rs256)),
            "EdDSA" => Some(Self::Key(KeyAlgorithm::EdDsa)),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Key(KeyAlgorithm::Rs256) => "RS256",
            Self::Key(KeyAlgorithm::EdDsa) => "EdDSA",
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            Self::Hs256 => Algorithm::HS256,
            Self::Key(KeyAlgorithm::Rs256) => Algorithm::RS256,
            Self::Key(KeyAlgorithm::EdDsa) => Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SigningAlgorithm::Key(*self).fmt(f)
    }
}

/// Why a private key cannot be used. The caller names the file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error(
        "is not one PEM block ({0}); expected a single unencrypted PKCS#8 \"PRIVATE KEY\" \
         (as `openssl genpkey` writes it)"
    )]
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
        algorithm: KeyAlgorithm,
        needed: &'static str,
    },
    #[error("holds an RSA key of {0} bits; RS256 needs at least {MIN_RSA_BITS}")]
    TooShort(usize),
}

/// RFC 7518, section 3.3: "a key of size 2048 bits or larger MUST be used".
pub const MIN_RSA_BITS: usize = 2048;

/// A published public key: what a JWK of the set holds besides `use`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The RFC 7638 SHA-256 thumbprint, base64url: the `kid` of the key's tokens.
    pub kid: String,
    pub algorithm: KeyAlgorithm,
    pub material: KeyMaterial,
}

/// The public key's members, base64url (RFC 7518 section 6.3, RFC 8037).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    Rsa { n: String, e: String },
    Ed25519 { x: String },
}

/// One private key, ready to sign, with its public half.
#[derive(Clone)]
pub struct PrivateKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    public: PublicKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.public.algorithm)
            .field("kid", &self.public.kid)
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Reads one PKCS#8 PEM private key that must fit `algorithm`.
    pub fn from_pem(algorithm: KeyAlgorithm, pem: &[u8]) -> Result<Self, KeyError> {
        let text = std::str::from_utf8(pem)
            .map_err(|_| KeyError::NotPem("not text: convert DER with `openssl pkey`".into()))?;
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
            KeyAlgorithm::Rs256 => {
                let key = rsa::RsaPrivateKey::try_from(info).map_err(|e| malformed(&e))?;
                key.validate().map_err(|e| malformed(&e))?;
                let bits = key.n().bits();
                if bits < MIN_RSA_BITS {
                    return Err(KeyError::TooShort(bits));
                }
                rsa_encoding_key(&key)
            }
            KeyAlgorithm::EdDsa => {
                let key = ed25519_dalek::SigningKey::try_from(info).map_err(|e| malformed(&e))?;
                ed25519_encoding_key(&key)
            }
        };
        Self::new(algorithm, encoding).map_err(|e| malformed(&e))
    }

    /// A new random key, for development when no key file is configured.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, KeyError> {
        let encoding = match algorithm {
            KeyAlgorithm::Rs256 => {
                let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, MIN_RSA_BITS)
                    .map_err(|e| KeyError::Malformed(e.to_string()))?;
                rsa_encoding_key(&key)
            }
            KeyAlgorithm::EdDsa => {
                let seed: [u8; 32] = rand::random();
                ed25519_encoding_key(&ed25519_dalek::SigningKey::from_bytes(&seed))
            }
        };
        Self::new(algorithm, encoding).map_err(|e| KeyError::Malformed(e.to_string()))
    }

    fn new(algorithm: KeyAlgorithm, encoding: EncodingKey) -> jsonwebtoken::errors::Result<Self> {
        let jwt = SigningAlgorithm::Key(algorithm).jwt();
        let jwk = Jwk::from_encoding_key(&encoding, jwt)?;
        let material = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => KeyMaterial::Rsa {
                n: rsa.n.clone(),
                e: rsa.e.clone(),
            },
            AlgorithmParameters::OctetKeyPair(okp) => KeyMaterial::Ed25519 { x: okp.x.clone() },
            _ => return Err(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat.into()),
        };
        let key = Self {
            decoding: DecodingKey::from_jwk(&jwk)?,
            public: PublicKey {
                kid: jwk.thumbprint(ThumbprintHash::SHA256)?,
                algorithm,
                material,
            },
            encoding,
        };
        // A key that loads is a key that signs, and its published half verifies it.
        let probe = jsonwebtoken::encode(&key.header(), &serde_json::json!({}), &key.encoding)?;
        let mut validation = Validation::new(jwt);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        jsonwebtoken::decode::<serde_json::Value>(&probe, &key.decoding, &validation)?;
        Ok(key)
    }

    /// The RFC 7638 thumbprint of the public key: the `kid` of its tokens and its JWK.
    pub fn kid(&self) -> &str {
        &self.public.kid
    }

    fn header(&self) -> Header {
        let mut header = Header::new(SigningAlgorithm::Key(self.public.algorithm).jwt());
        header.kid = Some(self.public.kid.clone());
        header
    }
}

const RSA: &str = "an RSA key";
const ED25519: &str = "an Ed25519 key";
/// id-ecPublicKey (RFC 5480), to name the kind of a key that fits neither algorithm.
const EC_PUBLIC_KEY: pkcs8::ObjectIdentifier =
    pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

fn key_kind_of(algorithm: KeyAlgorithm) -> &'static str {
    match algorithm {
        KeyAlgorithm::Rs256 => RSA,
        KeyAlgorithm::EdDsa => ED25519,
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
/// that verify (with private keys, by `kid`).
#[derive(Clone)]
pub struct Keyring {
    algorithm: SigningAlgorithm,
    signing: EncodingKey,
    header: Header,
    verifying: Vec<(Option<String>, DecodingKey)>,
    published: Vec<PublicKey>,
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

/// Why private keys cannot go together (indices into the list given).
#[derive(Debug, PartialEq, Eq)]
pub enum KeyringError {
    /// Two entries hold the same key.
    Duplicate { first: usize, second: usize },
    /// An entry's algorithm is not the first one's.
    Mixed { index: usize },
}

impl Keyring {
    /// HS256 with one shared secret: nothing is published.
    pub fn hmac(secret: &Secret) -> Self {
        let bytes = secret.expose().as_bytes();
        Self {
            algorithm: SigningAlgorithm::Hs256,
            signing: EncodingKey::from_secret(bytes),
            header: Header::new(Algorithm::HS256),
            verifying: vec![(None, DecodingKey::from_secret(bytes))],
            published: Vec::new(),
        }
    }

    /// The first key signs; every key verifies and is published.
    pub fn private_keys(first: PrivateKey, others: Vec<PrivateKey>) -> Result<Self, KeyringError> {
        let keys: Vec<PrivateKey> = std::iter::once(first).chain(others).collect();
        let algorithm = keys[0].public.algorithm;
        for (second, key) in keys.iter().enumerate() {
            if key.public.algorithm != algorithm {
                return Err(KeyringError::Mixed { index: second });
            }
            if let Some(first) = keys[..second].iter().position(|k| k.kid() == key.kid()) {
                return Err(KeyringError::Duplicate { first, second });
            }
        }
        Ok(Self {
            algorithm: SigningAlgorithm::Key(algorithm),
            signing: keys[0].encoding.clone(),
            header: keys[0].header(),
            verifying: keys
                .iter()
                .map(|key| (Some(key.public.kid.clone()), key.decoding.clone()))
                .collect(),
            published: keys.into_iter().map(|key| key.public).collect(),
        })
    }

    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// The public keys, the signing one first, as `/.well-known/jwks.json` serves them
    /// (none with HS256).
    pub fn published(&self) -> &[PublicKey] {
        &self.published
    }

    /// A header naming the pinned algorithm and, with private keys, the signing key.
    pub(super) fn header(&self) -> &Header {
        &self.header
    }

    pub(super) fn signing_key(&self) -> &EncodingKey {
        &self.signing
    }

    /// A validation that accepts the pinned algorithm only.
    pub(super) fn validation(&self) -> Validation {
        Validation::new(self.algorithm.jwt())
    }

    /// The key a token's `kid` names. With HS256 there is one key and no `kid`; with
    /// private keys, a token without a `kid` or with an unknown one has no key.
    pub(super) fn verifying_key(&self, kid: Option<&str>) -> Option<&DecodingKey> {
        self.verifying
            .iter()
            .find(|(known, _)| known.as_deref() == kid)
            .map(|(_, key)| key)
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::pkcs8::{EncodePrivateKey as _, KeypairBytes, PublicKeyBytes};

    use super::*;

    const RS256: KeyAlgorithm = KeyAlgorithm::Rs256;
    const EDDSA: KeyAlgorithm = KeyAlgorithm::EdDsa;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn load(algorithm: KeyAlgorithm, name: &str) -> PrivateKey {
        PrivateKey::from_pem(algorithm, &fixture(name)).unwrap()
    }

    /// Signs with the ring and verifies with the key the token's `kid` names.
    fn round_trip(ring: &Keyring) -> Result<(), jsonwebtoken::errors::Error> {
        let token = jsonwebtoken::encode(
            ring.header(),
            &serde_json::json!({"sub": "x", "exp": 4_000_000_000u64}),
            ring.signing_key(),
        )?;
        let kid = jsonwebtoken::decode_header(&token)?.kid;
        let key = ring
            .verifying_key(kid.as_deref())
            .expect("a key for the kid");
        jsonwebtoken::decode::<serde_json::Value>(&token, key, &ring.validation()).map(|_| ())
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
        let rsa = load(RS256, "rsa-a.pem");
        let ed = load(EDDSA, "ed25519-a.pem");
        // base64url of a SHA-256 digest: 43 characters.
        assert_eq!(rsa.kid().len(), 43);
        assert_eq!(ed.kid().len(), 43);
        assert_ne!(rsa.kid(), ed.kid());
        assert!(matches!(&rsa.public.material, KeyMaterial::Rsa { e, .. } if e == "AQAB"));
        assert!(matches!(&ed.public.material, KeyMaterial::Ed25519 { x } if x.len() == 43));
        // The thumbprint depends on the key alone.
        assert_eq!(rsa.kid(), load(RS256, "rsa-a.pem").kid());
    }

    #[test]
    fn keys_that_do_not_fit_are_refused_with_the_reason() {
        type Expected = fn(&KeyError) -> bool;
        let cases: [(KeyAlgorithm, &str, Expected); 6] = [
            (RS256, "ed25519-a.pem", |e| {
                matches!(e, KeyError::WrongKind { found: ED25519, .. })
            }),
            (EDDSA, "rsa-a.pem", |e| {
                matches!(e, KeyError::WrongKind { found: RSA, .. })
            }),
            (RS256, "ec-p256.pem", |e| {
                e.to_string().contains("elliptic-curve")
            }),
            (RS256, "rsa-1024.pem", |e| *e == KeyError::TooShort(1024)),
            (RS256, "rsa-a-pkcs1.pem", |e| {
                *e == KeyError::NotPkcs8("RSA PRIVATE KEY".into())
            }),
            (RS256, "rsa-a-public.pem", |e| {
                *e == KeyError::NotPkcs8("PUBLIC KEY".into())
            }),
        ];
        for (algorithm, file, expected) in cases {
            let error = PrivateKey::from_pem(algorithm, &fixture(file)).unwrap_err();
            assert!(expected(&error), "{algorithm} {file}: {error}");
        }
        let encrypted = PrivateKey::from_pem(EDDSA, &fixture("ed25519-a-encrypted.pem"));
        assert_eq!(
            encrypted.unwrap_err(),
            KeyError::NotPkcs8("ENCRYPTED PRIVATE KEY".into())
        );
        for garbage in [&b"not a key"[..], b"", &[0xff, 0xfe, 0x00]] {
            let error = PrivateKey::from_pem(RS256, garbage).unwrap_err();
            assert!(matches!(error, KeyError::NotPem(_)), "{error}");
        }
        // Two blocks in one file (a key and another copy) are not one key.
        let twice = [fixture("rsa-a.pem"), fixture("rsa-b.pem")].concat();
        assert!(matches!(
            PrivateKey::from_pem(RS256, &twice).unwrap_err(),
            KeyError::NotPem(_)
        ));
        // A PRIVATE KEY block whose contents are not a PKCS#8 structure.
        let hollow = b"-----BEGIN PRIVATE KEY-----\nMAMCAQA=\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            PrivateKey::from_pem(RS256, hollow).unwrap_err(),
            KeyError::Malformed(_)
        ));
    }

    #[test]
    fn ed25519_pkcs8_v2_loads_when_its_public_key_matches() {
        let seed = [7u8; 32];
        let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        let pem = |public_key: Option<PublicKeyBytes>| {
            KeypairBytes {
                secret_key: seed,
                public_key,
            }
            .to_pkcs8_pem(Default::default())
            .unwrap()
        };
        let v1 = PrivateKey::from_pem(EDDSA, pem(None).as_bytes()).unwrap();
        let v2 = PrivateKey::from_pem(
            EDDSA,
            pem(Some(PublicKeyBytes(public.to_bytes()))).as_bytes(),
        )
        .unwrap();
        assert_eq!(v1.public, v2.public);
        let mismatched = pem(Some(PublicKeyBytes([9u8; 32])));
        assert!(matches!(
            PrivateKey::from_pem(EDDSA, mismatched.as_bytes()).unwrap_err(),
            KeyError::Malformed(_)
        ));
    }

    #[test]
    fn generated_keys_sign_and_verify() {
        for algorithm in [RS256, EDDSA] {
            let key = PrivateKey::generate(algorithm).unwrap();
            let other = PrivateKey::generate(algorithm).unwrap();
            assert_ne!(key.kid(), other.kid());
            let ring = Keyring::private_keys(key, vec![]).unwrap();
            assert_eq!(ring.published().len(), 1);
            round_trip(&ring).unwrap();
        }
    }

    #[test]
    fn the_first_key_signs_and_all_verify() {
        let (new, old) = (load(EDDSA, "ed25519-b.pem"), load(EDDSA, "ed25519-a.pem"));
        let (new_kid, old_kid) = (new.kid().to_owned(), old.kid().to_owned());
        let ring = Keyring::private_keys(new, vec![old]).unwrap();
        round_trip(&ring).unwrap();
        assert_eq!(ring.header().kid.as_deref(), Some(new_kid.as_str()));
        assert!(ring.verifying_key(Some(&new_kid)).is_some());
        assert!(ring.verifying_key(Some(&old_kid)).is_some());
        assert!(ring.verifying_key(Some("unknown")).is_none());
        assert!(ring.verifying_key(None).is_none());
        let kids: Vec<_> = ring.published().iter().map(|key| key.kid.clone()).collect();
        assert_eq!(kids, [new_kid, old_kid]);
    }

    #[test]
    fn hmac_has_one_key_without_kid_and_publishes_nothing() {
        let ring = Keyring::hmac(&Secret::new("0123456789abcdef0123456789abcdef"));
        round_trip(&ring).unwrap();
        assert!(ring.published().is_empty());
        assert!(ring.verifying_key(Some("any")).is_none());
    }

    #[test]
    fn keys_that_cannot_go_together_are_refused() {
        let error = Keyring::private_keys(
            load(RS256, "rsa-a.pem"),
            vec![load(RS256, "rsa-b.pem"), load(RS256, "rsa-a.pem")],
        )
        .unwrap_err();
        assert_eq!(
            error,
            KeyringError::Duplicate {
                first: 0,
                second: 2
            }
        );
        let error =
            Keyring::private_keys(load(RS256, "rsa-a.pem"), vec![load(EDDSA, "ed25519-a.pem")])
                .unwrap_err();
        assert_eq!(error, KeyringError::Mixed { index: 1 });
    }
}
