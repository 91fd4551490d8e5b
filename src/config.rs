//! Settings from the environment (and `.env`). Every bad value is refused at start with a
//! message naming its variable; secrets are never printed.

use std::{collections::HashMap, fmt, path::PathBuf, str::FromStr, time::Duration};

use ipnet::IpNet;
use serde::Deserialize;

use lettre::message::Mailbox;
use url::Url;

use crate::{
    domain::{DisplayName, Email, NewPassword, Secret},
    mail::{MailSettings, MailTransport, SmtpRelay},
    services::{
        AccountSettings, Keyring, KeyringError, Lockout, NewAccount, PrivateKey, ServiceSettings,
        SigningAlgorithm, TokenSettings, VerificationSettings,
    },
    storage::DatabaseSettings,
    telemetry::{LogFilterSpec, LogFormat},
};

/// The raw variables, all optional strings: parsing happens below so that every error can
/// name its variable, which envy's own type errors do not always do.
#[derive(Debug, Default, Deserialize)]
struct RawSettings {
    database_url: Option<String>,
    database_name: Option<String>,
    host: Option<String>,
    port: Option<String>,
    app_env: Option<String>,
    jwt_secret: Option<String>,
    jwt_algorithm: Option<String>,
    jwt_private_keys: Option<String>,
    jwt_issuer: Option<String>,
    jwt_audience: Option<String>,
    access_token_ttl_secs: Option<String>,
    refresh_token_ttl_secs: Option<String>,
    reset_token_ttl_secs: Option<String>,
    lockout_threshold: Option<String>,
    verification_token_ttl_secs: Option<String>,
    email_verification_url: Option<String>,
    require_verified_email: Option<String>,
    mail_throttle_secs: Option<String>,
    lockout_secs: Option<String>,
    mfa_issuer: Option<String>,
    audit_retention_days: Option<String>,
    bcrypt_cost: Option<String>,
    rate_limit_per_second: Option<String>,
    rate_limit_burst: Option<String>,
    trusted_proxies: Option<String>,
    allow_registration: Option<String>,
    admin_email: Option<String>,
    admin_password: Option<String>,
    admin_name: Option<String>,
    cors_origins: Option<String>,
    smtp_url: Option<String>,
    mail_from: Option<String>,
    password_reset_url: Option<String>,
    log_format: Option<String>,
    rust_log: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid {variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl ConfigError {
    fn new(variable: &'static str, message: impl Into<String>) -> Self {
        Self {
            variable,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    pub per_second: u32,
    pub burst: u32,
}

impl RateLimitSettings {
    pub fn enabled(&self) -> bool {
        self.per_second > 0 && self.burst > 0
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub host: String,
    pub port: u16,
    pub app_env: AppEnv,
    /// What to warn about the signing keys at start (a key made for this process, a short
    /// secret, a secret that goes unused).
    pub signing_key_warnings: Vec<&'static str>,
    pub services: ServiceSettings,
    pub rate_limit: RateLimitSettings,
    pub trusted_proxies: Vec<IpNet>,
    /// The admin that `ADMIN_EMAIL` and `ADMIN_PASSWORD` ask for.
    pub admin: Option<NewAccount>,
    pub cors_origins: Vec<String>,
    pub log_format: LogFormat,
    /// `RUST_LOG`.
    pub log_filter: LogFilterSpec,
}

const DEFAULT_DATABASE_URL: &str = "sqlite://data/users.db";
const MIN_JWT_SECRET_BYTES: usize = 32;

impl Settings {
    /// Reads the process environment (after [`load_dotenv`], if `.env` should count).
    pub fn from_env() -> Result<Self, ConfigError> {
        // Lossy, so that a value that is not UTF-8 is refused as a bad value of its
        // variable rather than crashing the process.
        Self::from_vars(std::env::vars_os().map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        }))
    }

    /// Parses settings from `(NAME, value)` pairs; names not ours are ignored.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let vars: HashMap<String, String> = vars
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .collect();
        let raw: RawSettings =
            envy::from_iter(vars).map_err(|e| ConfigError::new("environment", e.to_string()))?;
        raw.parse()
    }
}

/// The port the service listens on as `PORT` names it (unset or empty: 8080), read alone:
/// `healthcheck` must answer whatever else the settings hold.
pub fn port_from_env() -> Result<u16, ConfigError> {
    let raw = std::env::var("PORT").ok().filter(|value| !value.is_empty());
    parse_number("PORT", raw, 8080, 0..=u16::MAX)
}

/// Adds the variables of `./.env`, if there is one, to the environment (never overriding
/// what is set already). A missing file is normal; a malformed one is not.
pub fn load_dotenv() -> Result<(), ConfigError> {
    match dotenvy::dotenv() {
        Ok(_) => Ok(()),
        Err(e) if e.not_found() => Ok(()),
        Err(e) => Err(ConfigError::new(".env", e.to_string())),
    }
}

/// A host name or IP address to listen on.
fn parse_host(raw: Option<String>) -> Result<String, ConfigError> {
    let host = raw
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|| "0.0.0.0".to_owned());
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    let is_name = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if is_ip || is_name {
        Ok(host)
    } else {
        Err(ConfigError::new(
            "HOST",
            format!("{host:?} is not an IP address or host name"),
        ))
    }
}

fn parse_number<T>(
    variable: &'static str,
    raw: Option<String>,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + fmt::Display,
    T::Err: fmt::Display,
{
    let Some(raw) = raw else {
        return Ok(default);
    };
    let value: T = raw
        .trim()
        .parse()
        .map_err(|e| ConfigError::new(variable, format!("{raw:?} is not a number ({e})")))?;
    if !range.contains(&value) {
        return Err(ConfigError::new(
            variable,
            format!(
                "{value} is out of range ({} to {})",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(value)
}

fn parse_secs(
    variable: &'static str,
    raw: Option<String>,
    default: u64,
) -> Result<Duration, ConfigError> {
    // Up to ten years: long enough for anyone, small enough never to overflow a timestamp.
    parse_number(variable, raw, default, 1..=315_360_000).map(Duration::from_secs)
}

fn parse_bool(
    variable: &'static str,
    raw: Option<String>,
    default: bool,
) -> Result<bool, ConfigError> {
    match raw
        .as_deref()
        .map(str::trim)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(other) => Err(ConfigError::new(
            variable,
            format!("{other:?} is not a boolean (true or false)"),
        )),
    }
}

fn parse_list(raw: Option<String>) -> Vec<String> {
    raw.map(|raw| {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

fn parse_database(
    url: Option<String>,
    name: Option<String>,
) -> Result<DatabaseSettings, ConfigError> {
    let url = url.unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        if path.is_empty() {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "the SQLite URL has no file path",
            ));
        }
        // Other tools' SQLite URLs take options after `?` (`mode=ro`): this one takes none,
        // and would have made a file with the `?` in its name.
        if path.contains(['?', '#']) {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "the SQLite URL takes a file path only (no ?options)",
            ));
        }
        return Ok(DatabaseSettings::Sqlite {
            path: PathBuf::from(path),
        });
    }
    if url.starts_with("mongodb://") || url.starts_with("mongodb+srv://") {
        let database = name.unwrap_or_else(|| "user_service".to_owned());
        if database.is_empty() || database.contains(['/', '\\', '.', ' ', '"', '$']) {
            return Err(ConfigError::new(
                "DATABASE_NAME",
                format!("{database:?} is not a valid MongoDB database name"),
            ));
        }
        return Ok(DatabaseSettings::Mongo {
            url: Secret::new(url),
            database,
        });
    }
    let scheme = url.split(':').next().unwrap_or_default();
    Err(ConfigError::new(
        "DATABASE_URL",
        format!("unknown scheme {scheme:?}: use sqlite://PATH, mongodb:// or mongodb+srv://"),
    ))
}

fn parse_admin(
    email: Option<String>,
    password: Option<String>,
    name: Option<String>,
) -> Result<Option<NewAccount>, ConfigError> {
    match (email, password) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::new(
            "ADMIN_PASSWORD",
            "is required when ADMIN_EMAIL is set",
        )),
        (None, Some(_)) => Err(ConfigError::new(
            "ADMIN_EMAIL",
            "is required when ADMIN_PASSWORD is set",
        )),
        (Some(email), Some(password)) => Ok(Some(NewAccount {
            email: Email::parse(&email).map_err(|e| ConfigError::new("ADMIN_EMAIL", e.0))?,
            password: NewPassword::parse(&password)
                .map_err(|e| ConfigError::new("ADMIN_PASSWORD", e.0))?,
            name: DisplayName::parse(name.as_deref().unwrap_or("Administrator"))
                .map_err(|e| ConfigError::new("ADMIN_NAME", e.0))?,
            username: None,
        })),
    }
}

/// Why `raw` is not an origin as browsers send it in `Origin` (or `*`), if it is not: an
/// entry that is not exactly one (a path, a trailing slash, an upper-case host) would never
/// match, and CORS would be off without a word.
fn origin_refusal(raw: &str) -> Option<String> {
    if raw == "*" {
        return None;
    }
    let refusal = format!(
        "{raw:?} is not an origin like https://example.com (a scheme, a host and perhaps a \
         port, nothing after)"
    );
    let Ok(url) = Url::parse(raw) else {
        return Some(refusal);
    };
    let origin = url.origin().ascii_serialization();
    if !matches!(url.scheme(), "http" | "https") {
        Some(refusal)
    } else if origin != raw {
        Some(format!("{refusal}; did you mean {origin:?}?"))
    } else {
        None
    }
}

fn random_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl RawSettings {
    fn parse(self) -> Result<Settings, ConfigError> {
        let app_env = match self.app_env.as_deref().map(str::trim) {
            None | Some("development") => AppEnv::Development,
            Some("production") => AppEnv::Production,
            Some(other) => {
                return Err(ConfigError::new(
                    "APP_ENV",
                    format!("{other:?} is neither \"development\" nor \"production\""),
                ));
            }
        };
        let (keys, signing_key_warnings) = parse_signing_keys(
            app_env,
            self.jwt_algorithm,
            self.jwt_secret,
            self.jwt_private_keys,
        )?;
        let log_format = match self.log_format.as_deref().map(str::trim) {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::new(
                    "LOG_FORMAT",
                    format!("{other:?} is neither \"pretty\" nor \"json\""),
                ));
            }
        };
        let log_filter = LogFilterSpec::parse(self.rust_log.as_deref())
            .map_err(|message| ConfigError::new("RUST_LOG", message))?;
        let trusted_proxies = parse_list(self.trusted_proxies)
            .into_iter()
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        ConfigError::new(
                            "TRUSTED_PROXIES",
                            format!("{entry:?} is not an IP address or CIDR range"),
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        let cors_origins = parse_list(self.cors_origins);
        if let Some(refusal) = cors_origins.iter().find_map(|o| origin_refusal(o)) {
            return Err(ConfigError::new("CORS_ORIGINS", refusal));
        }
        let raw_from = self
            .mail_from
            .unwrap_or_else(|| "no-reply@localhost".to_owned());
        let from = raw_from.parse::<Mailbox>().map_err(|e| {
            ConfigError::new("MAIL_FROM", format!("{raw_from:?} is not a mailbox ({e})"))
        })?;
        let transport = match (self.smtp_url, app_env) {
            (Some(url), _) => MailTransport::Smtp(SmtpRelay::parse(&url).map_err(|e| {
                ConfigError::new(
                    "SMTP_URL",
                    format!("not a valid smtp:// or smtps:// URL ({e})"),
                )
            })?),
            (None, AppEnv::Development) => MailTransport::Log,
            (None, AppEnv::Production) => MailTransport::Disabled,
        };
        let password_reset_url = parse_http_url(
            "PASSWORD_RESET_URL",
            self.password_reset_url,
            "http://localhost:8080/reset-password",
        )?;
        let host = parse_host(self.host)?;
        let services = ServiceSettings {
            bcrypt_cost: parse_number("BCRYPT_COST", self.bcrypt_cost, 12, 4..=31)?,
            tokens: TokenSettings {
                keys,
                issuer: parse_claim("JWT_ISSUER", self.jwt_issuer)?
                    .unwrap_or_else(|| "user-service".to_owned()),
                audience: parse_claim("JWT_AUDIENCE", self.jwt_audience)?,
                access_ttl: parse_secs("ACCESS_TOKEN_TTL_SECS", self.access_token_ttl_secs, 900)?,
            },
            accounts: AccountSettings {
                allow_registration: parse_bool(
                    "ALLOW_REGISTRATION",
                    self.allow_registration,
                    true,
                )?,
                refresh_token_ttl: parse_secs(
                    "REFRESH_TOKEN_TTL_SECS",
                    self.refresh_token_ttl_secs,
                    1_209_600,
                )?,
                reset_token_ttl: parse_secs(
                    "RESET_TOKEN_TTL_SECS",
                    self.reset_token_ttl_secs,
                    1800,
                )?,
                password_reset_url,
                lockout: parse_lockout(self.lockout_threshold, self.lockout_secs)?,
                verification: VerificationSettings {
                    url: parse_http_url(
                        "EMAIL_VERIFICATION_URL",
                        self.email_verification_url,
                        "http://localhost:8080/verify-email",
                    )?,
                    token_ttl: parse_secs(
                        "VERIFICATION_TOKEN_TTL_SECS",
                        self.verification_token_ttl_secs,
                        86_400,
                    )?,
                },
                require_verified_email: parse_bool(
                    "REQUIRE_VERIFIED_EMAIL",
                    self.require_verified_email,
                    false,
                )?,
                // 0 turns the throttle off.
                mail_throttle: Some(Duration::from_secs(parse_number(
                    "MAIL_THROTTLE_SECS",
                    self.mail_throttle_secs,
                    60,
                    0..=86_400,
                )?))
                .filter(|window| !window.is_zero()),
            },
            mail: MailSettings { transport, from },
            mfa_issuer: parse_mfa_issuer(self.mfa_issuer)?,
            audit_retention: Duration::from_secs(
                86_400
                    * parse_number::<u64>(
                        "AUDIT_RETENTION_DAYS",
                        self.audit_retention_days,
                        365,
                        1..=36_500,
                    )?,
            ),
        };
        Ok(Settings {
            database: parse_database(self.database_url, self.database_name)?,
            host,
            port: parse_number("PORT", self.port, 8080, 0..=u16::MAX)?,
            app_env,
            signing_key_warnings,
            services,
            rate_limit: RateLimitSettings {
                per_second: parse_number(
                    "RATE_LIMIT_PER_SECOND",
                    self.rate_limit_per_second,
                    30,
                    0..=1_000_000,
                )?,
                burst: parse_number("RATE_LIMIT_BURST", self.rate_limit_burst, 30, 0..=1_000_000)?,
            },
            trusted_proxies,
            admin: parse_admin(self.admin_email, self.admin_password, self.admin_name)?,
            cors_origins,
            log_format,
            log_filter,
        })
    }
}

/// The keys that sign access tokens. HS256 takes `JWT_SECRET`; RS256 and EdDSA take
/// `JWT_PRIVATE_KEYS`, files whose first key signs. In development a missing secret or key
/// is made for this process (with a warning); in production it is fatal. A key file that
/// cannot be read or does not fit the algorithm is fatal everywhere.
fn parse_signing_keys(
    app_env: AppEnv,
    algorithm: Option<String>,
    secret: Option<String>,
    files: Option<String>,
) -> Result<(Keyring, Vec<&'static str>), ConfigError> {
    let algorithm = match algorithm.as_deref().map(str::trim) {
        None => SigningAlgorithm::Hs256,
        Some(name) => SigningAlgorithm::parse(name).ok_or_else(|| {
            ConfigError::new(
                "JWT_ALGORITHM",
                format!(
                    "{name:?} is not one of {}",
                    SigningAlgorithm::NAMES.join(", ")
                ),
            )
        })?,
    };
    let files = parse_list(files);
    let SigningAlgorithm::Key(algorithm) = algorithm else {
        if !files.is_empty() {
            return Err(ConfigError::new(
                "JWT_PRIVATE_KEYS",
                "is for JWT_ALGORITHM=RS256 or EdDSA; HS256 signs with JWT_SECRET",
            ));
        }
        return match (secret, app_env) {
            (Some(secret), AppEnv::Production) if secret.len() < MIN_JWT_SECRET_BYTES => {
                Err(ConfigError::new(
                    "JWT_SECRET",
                    format!("must be at least {MIN_JWT_SECRET_BYTES} bytes in production"),
                ))
            }
            (Some(secret), _) => {
                let short = secret.len() < MIN_JWT_SECRET_BYTES;
                Ok((
                    Keyring::hmac(&Secret::new(secret)),
                    short
                        .then_some("JWT_SECRET is shorter than 32 bytes; production refuses that")
                        .into_iter()
                        .collect(),
                ))
            }
            (None, AppEnv::Production) => {
                Err(ConfigError::new("JWT_SECRET", "is required in production"))
            }
            (None, AppEnv::Development) => Ok((
                Keyring::hmac(&Secret::new(random_secret())),
                vec![
                    "JWT_SECRET is not set: using a random secret, so tokens die with this process",
                ],
            )),
        };
    };
    let mut warnings = Vec::new();
    if secret.is_some() {
        warnings.push("JWT_SECRET is set but unused: JWT_ALGORITHM signs with JWT_PRIVATE_KEYS");
    }
    let mut keys = Vec::with_capacity(files.len());
    for file in &files {
        let pem = std::fs::read(file).map_err(|e| {
            ConfigError::new("JWT_PRIVATE_KEYS", format!("cannot read {file}: {e}"))
        })?;
        let key = PrivateKey::from_pem(algorithm, &pem)
            .map_err(|e| ConfigError::new("JWT_PRIVATE_KEYS", format!("{file} {e}")))?;
        keys.push(key);
    }
    let mut keys = keys.into_iter();
    let Some(first) = keys.next() else {
        if app_env == AppEnv::Production {
            return Err(ConfigError::new(
                "JWT_PRIVATE_KEYS",
                format!("is required in production with JWT_ALGORITHM={algorithm}"),
            ));
        }
        let key = PrivateKey::generate(algorithm)
            .map_err(|e| ConfigError::new("JWT_ALGORITHM", e.to_string()))?;
        warnings.push(
            "JWT_PRIVATE_KEYS is not set: using a key made for this process, so tokens die \
             with it and the published key changes on every restart",
        );
        let keys = Keyring::private_keys(key, Vec::new()).expect("one key goes with itself");
        return Ok((keys, warnings));
    };
    let keys = Keyring::private_keys(first, keys.collect()).map_err(|error| {
        let message = match error {
            KeyringError::Duplicate { first, second } => {
                format!("{} holds the same key as {}", files[second], files[first])
            }
            // Every file was read for one algorithm, so this would be a bug.
            KeyringError::Mixed { index } => format!("{} is not an {algorithm} key", files[index]),
        };
        ConfigError::new("JWT_PRIVATE_KEYS", message)
    })?;
    Ok((keys, warnings))
}

/// `iss` or `aud`: any string without control characters, at most 256 characters.
fn parse_claim(variable: &'static str, raw: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(value) = raw.map(|raw| raw.trim().to_owned()) else {
        return Ok(None);
    };
    if value.is_empty() || value.chars().count() > 256 || value.chars().any(char::is_control) {
        return Err(ConfigError::new(
            variable,
            "must be 1 to 256 characters with no control character",
        ));
    }
    Ok(Some(value))
}

/// The issuer authenticator apps show: 1 to 64 characters, no colon (it separates issuer and
/// account in the app's label) and no control characters.
fn parse_mfa_issuer(raw: Option<String>) -> Result<String, ConfigError> {
    let issuer = raw.as_deref().map(str::trim).unwrap_or("user-service");
    if issuer.is_empty()
        || issuer.chars().count() > 64
        || issuer.contains(':')
        || issuer.chars().any(char::is_control)
    {
        return Err(ConfigError::new(
            "MFA_ISSUER",
            "must be 1 to 64 characters with no colon or control character",
        ));
    }
    Ok(issuer.to_owned())
}

/// `LOCKOUT_THRESHOLD` failed logins lock an account for `LOCKOUT_SECS`; a threshold of 0
/// turns the lock off.
fn parse_lockout(
    threshold: Option<String>,
    secs: Option<String>,
) -> Result<Option<Lockout>, ConfigError> {
    let threshold = parse_number("LOCKOUT_THRESHOLD", threshold, 10, 0..=1000)?;
    let duration = parse_secs("LOCKOUT_SECS", secs, 900)?;
    Ok((threshold > 0).then_some(Lockout {
        threshold,
        duration,
    }))
}

/// An absolute http(s) URL, such as the page a mailed link opens.
fn parse_http_url(
    variable: &'static str,
    raw: Option<String>,
    default: &str,
) -> Result<Url, ConfigError> {
    let raw = raw.unwrap_or_else(|| default.to_owned());
    let url = Url::parse(raw.trim())
        .map_err(|e| ConfigError::new(variable, format!("{raw:?} is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ConfigError::new(
            variable,
            "must be an http:// or https:// URL",
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn error_variable(vars: &[(&str, &str)]) -> &'static str {
        settings(vars).expect_err("should be refused").variable
    }

    #[test]
    fn defaults_follow_the_contract() {
        let s = settings(&[]).unwrap();
        assert_eq!(
            s.database,
            DatabaseSettings::Sqlite {
                path: "data/users.db".into()
            }
        );
        assert_eq!((s.host.as_str(), s.port), ("0.0.0.0", 8080));
        assert_eq!(s.app_env, AppEnv::Development);
        assert!(!s.signing_key_warnings.is_empty());
        let services = &s.services;
        assert_eq!(services.tokens.access_ttl, Duration::from_secs(900));
        assert_eq!(
            services.accounts.refresh_token_ttl,
            Duration::from_secs(1_209_600)
        );
        assert_eq!(services.accounts.reset_token_ttl, Duration::from_secs(1800));
        assert_eq!(services.bcrypt_cost, 12);
        assert_eq!(
            s.rate_limit,
            RateLimitSettings {
                per_second: 30,
                burst: 30
            }
        );
        assert!(services.accounts.allow_registration);
        assert_eq!(
            services.accounts.lockout,
            Some(Lockout {
                threshold: 10,
                duration: Duration::from_secs(900)
            })
        );
        assert_eq!(
            settings(&[("LOCKOUT_THRESHOLD", "0")])
                .unwrap()
                .services
                .accounts
                .lockout,
            None
        );
        assert!(s.admin.is_none() && s.cors_origins.is_empty());
        assert!(matches!(services.mail.transport, MailTransport::Log));
        assert_eq!(services.mail.from.to_string(), "no-reply@localhost");
        assert_eq!(
            services.accounts.password_reset_url.as_str(),
            "http://localhost:8080/reset-password"
        );
        assert_eq!(s.log_format, LogFormat::Pretty);
    }

    #[test]
    fn mongodb_urls_select_mongodb() {
        let s = settings(&[
            ("DATABASE_URL", "mongodb://db:27017"),
            ("DATABASE_NAME", "users"),
        ])
        .unwrap();
        let DatabaseSettings::Mongo { url, database } = s.database else {
            panic!()
        };
        assert_eq!(
            (url.expose(), database.as_str()),
            ("mongodb://db:27017", "users")
        );
        assert!(matches!(
            settings(&[("DATABASE_URL", "mongodb+srv://cluster.example.com")])
                .unwrap()
                .database,
            DatabaseSettings::Mongo { .. }
        ));
    }

    #[test]
    fn bad_values_name_their_variable() {
        assert_eq!(error_variable(&[("PORT", "abc")]), "PORT");
        assert_eq!(error_variable(&[("BCRYPT_COST", "99")]), "BCRYPT_COST");
        assert_eq!(error_variable(&[("BCRYPT_COST", "3")]), "BCRYPT_COST");
        assert_eq!(
            error_variable(&[("DATABASE_URL", "postgres://x")]),
            "DATABASE_URL"
        );
        assert_eq!(error_variable(&[("APP_ENV", "staging")]), "APP_ENV");
        assert_eq!(
            error_variable(&[("ALLOW_REGISTRATION", "maybe")]),
            "ALLOW_REGISTRATION"
        );
        assert_eq!(
            error_variable(&[("ACCESS_TOKEN_TTL_SECS", "0")]),
            "ACCESS_TOKEN_TTL_SECS"
        );
        assert_eq!(
            error_variable(&[("TRUSTED_PROXIES", "10.0.0.0/8, nope")]),
            "TRUSTED_PROXIES"
        );
        assert_eq!(error_variable(&[("LOG_FORMAT", "xml")]), "LOG_FORMAT");
        assert_eq!(
            error_variable(&[("DATABASE_URL", "sqlite:///tmp/q.db?mode=ro")]),
            "DATABASE_URL"
        );
        assert_eq!(error_variable(&[("RUST_LOG", "foo=bar=baz[")]), "RUST_LOG");
        assert_eq!(error_variable(&[("HOST", "not a host!")]), "HOST");
        assert_eq!(error_variable(&[("HOST", "[::1]")]), "HOST");
        for origins in [
            "example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://App.example.com",
            "ftp://example.com",
            "https://ok.example.com, http://localhost:3000/",
        ] {
            assert_eq!(error_variable(&[("CORS_ORIGINS", origins)]), "CORS_ORIGINS");
        }
        let s = settings(&[(
            "CORS_ORIGINS",
            "https://app.example.com, http://localhost:3000,http://[::1]:8081",
        )])
        .unwrap();
        assert_eq!(
            s.cors_origins,
            [
                "https://app.example.com",
                "http://localhost:3000",
                "http://[::1]:8081"
            ]
        );
        assert_eq!(
            settings(&[("CORS_ORIGINS", "*")]).unwrap().cors_origins,
            ["*"]
        );
        assert_eq!(error_variable(&[("SMTP_URL", "http://mail")]), "SMTP_URL");
        assert_eq!(
            error_variable(&[("ADMIN_EMAIL", "root@example.com")]),
            "ADMIN_PASSWORD"
        );
        assert_eq!(
            error_variable(&[
                ("ADMIN_EMAIL", "nope"),
                ("ADMIN_PASSWORD", "long enough pw")
            ]),
            "ADMIN_EMAIL"
        );
        assert_eq!(
            error_variable(&[
                ("ADMIN_EMAIL", "root@example.com"),
                ("ADMIN_PASSWORD", "Password123")
            ]),
            "ADMIN_PASSWORD"
        );
    }

    #[test]
    fn production_requires_a_long_jwt_secret() {
        assert_eq!(error_variable(&[("APP_ENV", "production")]), "JWT_SECRET");
        assert_eq!(
            error_variable(&[("APP_ENV", "production"), ("JWT_SECRET", "short")]),
            "JWT_SECRET"
        );
        let secret = "x".repeat(32);
        let s = settings(&[("APP_ENV", "production"), ("JWT_SECRET", &secret)]).unwrap();
        assert!(s.signing_key_warnings.is_empty());
    }

    fn key_file(name: &str) -> String {
        format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    /// The message of a refused key setting, which must name the variable.
    fn key_error(vars: &[(&str, &str)]) -> String {
        let error = settings(vars).expect_err("should be refused");
        assert_eq!(error.variable, "JWT_PRIVATE_KEYS", "{error}");
        error.to_string()
    }

    #[test]
    fn signing_keys_load_from_pkcs8_files_the_first_signing() {
        for (algorithm, files) in [
            ("RS256", [key_file("rsa-b.pem"), key_file("rsa-a.pem")]),
            (
                "EdDSA",
                [key_file("ed25519-b.pem"), key_file("ed25519-a.pem")],
            ),
        ] {
            let list = format!("{}, {}", files[0], files[1]);
            let s = settings(&[
                ("APP_ENV", "production"),
                ("JWT_ALGORITHM", algorithm),
                ("JWT_PRIVATE_KEYS", &list),
            ])
            .unwrap();
            let keys = &s.services.tokens.keys;
            assert_eq!(keys.algorithm().name(), algorithm);
            assert_eq!(keys.published().len(), 2);
            assert!(s.signing_key_warnings.is_empty());
        }
    }

    #[test]
    fn every_unusable_key_file_stops_the_service_naming_the_variable_and_the_file() {
        let missing = key_file("no-such-key.pem");
        let directory = key_file("");
        let cases = [
            ("RS256", missing.clone(), "cannot read"),
            ("RS256", directory.clone(), "cannot read"),
            ("RS256", key_file("README.md"), "is not one PEM block"),
            (
                "RS256",
                key_file("ed25519-a.pem"),
                "holds an Ed25519 key, which does not fit RS256",
            ),
            (
                "EdDSA",
                key_file("rsa-a.pem"),
                "holds an RSA key, which does not fit EdDSA",
            ),
            ("EdDSA", key_file("ec-p256.pem"), "elliptic-curve"),
            ("RS256", key_file("rsa-1024.pem"), "1024 bits"),
            ("RS256", key_file("rsa-a-pkcs1.pem"), "\"RSA PRIVATE KEY\""),
            ("RS256", key_file("rsa-a-public.pem"), "\"PUBLIC KEY\""),
            (
                "EdDSA",
                key_file("ed25519-a-encrypted.pem"),
                "\"ENCRYPTED PRIVATE KEY\"",
            ),
        ];
        for (algorithm, file, reason) in cases {
            let good = key_file(if algorithm == "RS256" {
                "rsa-a.pem"
            } else {
                "ed25519-a.pem"
            });
            // A bad file is fatal in development too, as the signing key or a later one.
            for (app_env, list) in [
                ("development", format!("{file},{good}")),
                ("production", format!("{good},{file}")),
                ("development", format!("{good}, {file}")),
            ] {
                let message = key_error(&[
                    ("APP_ENV", app_env),
                    ("JWT_ALGORITHM", algorithm),
                    ("JWT_PRIVATE_KEYS", &list),
                ]);
                assert!(message.contains(&file), "{message}");
                assert!(message.contains(reason), "{reason:?} not in {message}");
            }
        }
    }

    #[test]
    fn the_same_key_listed_twice_is_refused_naming_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (key_file("rsa-a.pem"), key_file("rsa-b.pem"));
        let copy = dir.path().join("copy-of-a.pem").display().to_string();
        std::fs::copy(&a, &copy).unwrap();
        let list = format!("{a},{b},{copy}");
        let message = key_error(&[("JWT_ALGORITHM", "RS256"), ("JWT_PRIVATE_KEYS", &list)]);
        assert!(
            message.contains(&format!("{copy} holds the same key as {a}")),
            "{message}"
        );
    }

    #[test]
    fn a_secret_beside_key_files_is_unused_and_said_to_be() {
        let s = settings(&[
            ("JWT_ALGORITHM", "EdDSA"),
            ("JWT_PRIVATE_KEYS", &key_file("ed25519-a.pem")),
            ("JWT_SECRET", &"x".repeat(32)),
        ])
        .unwrap();
        assert_eq!(
            s.signing_key_warnings,
            ["JWT_SECRET is set but unused: JWT_ALGORITHM signs with JWT_PRIVATE_KEYS"]
        );
    }

    #[test]
    fn asymmetric_algorithms_need_key_files_in_production_and_make_one_in_development() {
        for algorithm in ["RS256", "EdDSA"] {
            let message = key_error(&[("APP_ENV", "production"), ("JWT_ALGORITHM", algorithm)]);
            assert!(message.contains("is required in production"), "{message}");
            let s = settings(&[("JWT_ALGORITHM", algorithm)]).unwrap();
            assert_eq!(s.services.tokens.keys.published().len(), 1);
            assert!(
                s.signing_key_warnings[0].contains("JWT_PRIVATE_KEYS is not set"),
                "{algorithm}"
            );
        }
        // Key files are not for HS256, whose secret is never published.
        let message = key_error(&[("JWT_PRIVATE_KEYS", &key_file("rsa-a.pem"))]);
        assert!(message.contains("HS256 signs with JWT_SECRET"), "{message}");
    }

    #[test]
    fn algorithm_issuer_and_audience_are_checked() {
        for bad in ["none", "hs256", "RS512", "ES256"] {
            assert_eq!(error_variable(&[("JWT_ALGORITHM", bad)]), "JWT_ALGORITHM");
        }
        let s = settings(&[]).unwrap();
        assert_eq!(s.services.tokens.issuer, "user-service");
        assert_eq!(s.services.tokens.audience, None);
        assert!(s.services.tokens.keys.published().is_empty());
        let s = settings(&[
            ("JWT_ISSUER", "https://id.example.com"),
            ("JWT_AUDIENCE", "orders"),
        ])
        .unwrap();
        assert_eq!(s.services.tokens.issuer, "https://id.example.com");
        assert_eq!(s.services.tokens.audience.as_deref(), Some("orders"));
        for variable in ["JWT_ISSUER", "JWT_AUDIENCE"] {
            let long = "x".repeat(257);
            assert_eq!(error_variable(&[(variable, &long)]), variable);
            assert_eq!(error_variable(&[(variable, "a\u{7}b")]), variable);
        }
    }

    #[test]
    fn trusted_proxies_take_addresses_and_ranges() {
        for host in ["127.0.0.1", "::", "localhost", "app-1.internal"] {
            assert_eq!(settings(&[("HOST", host)]).unwrap().host, host);
        }
        let s = settings(&[("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7,::1")]).unwrap();
        assert_eq!(s.trusted_proxies.len(), 3);
        assert!(s.trusted_proxies[1].contains(&"192.168.1.7".parse::<std::net::IpAddr>().unwrap()));
    }

    #[test]
    fn zero_turns_rate_limiting_off() {
        assert!(
            !settings(&[("RATE_LIMIT_PER_SECOND", "0")])
                .unwrap()
                .rate_limit
                .enabled()
        );
        assert!(
            !settings(&[("RATE_LIMIT_BURST", "0")])
                .unwrap()
                .rate_limit
                .enabled()
        );
    }

    /// `.env.example` and the README's configuration table list exactly the variables the
    /// service reads.
    #[test]
    fn env_example_and_readme_list_every_variable() {
        let mut known: Vec<String> = crate::serde_fields::struct_fields::<RawSettings>()
            .iter()
            .map(|f| f.to_uppercase())
            .collect();
        known.sort();
        let mut in_example: Vec<String> = include_str!("../.env.example")
            .lines()
            .filter_map(|line| line.trim_start_matches("# ").split_once('='))
            .map(|(name, _)| name.to_owned())
            .filter(|name| {
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
            })
            .collect();
        in_example.sort();
        assert_eq!(in_example, known, ".env.example");
        let readme = include_str!("../README.md");
        let table = readme
            .split("## Configuration")
            .nth(1)
            .expect("a Configuration section")
            .split("\n## ")
            .next()
            .unwrap();
        let mut in_readme: Vec<String> = table
            .lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .filter_map(|rest| rest.split('`').next())
            .map(str::to_owned)
            .collect();
        in_readme.sort();
        assert_eq!(in_readme, known, "README configuration table");
    }

    #[test]
    fn secrets_are_not_printed() {
        let s = settings(&[
            ("JWT_SECRET", "hunter2hunter2"),
            ("SMTP_URL", "smtp://u:pw123@mail"),
        ])
        .unwrap();
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("pw123"),
            "{debug}"
        );
    }
}
