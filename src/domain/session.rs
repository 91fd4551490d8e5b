//! Sessions (what one login starts) and where a request came from.

use std::{fmt, net::IpAddr};

use time::OffsetDateTime;

use super::{ParseError, UserId};

/// A session's id: 32 lower-case hex characters (128 random bits), carried by access
/// tokens as `sid`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    pub const PATTERN: &str = "^[0-9a-f]{32}$";

    pub fn generate() -> Self {
        Self(hex::encode(rand::random::<[u8; 16]>()))
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.len() == 32 && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ParseError::new("must be 32 lower-case hex characters"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest user agent kept, in characters: enough to tell browsers and devices apart.
const USER_AGENT_MAX_CHARS: usize = 256;

/// Where a request came from: the client's address and what it calls itself. Kept with
/// sessions and audit events; the user agent is the client's own word, trimmed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl Origin {
    /// The user agent loses control characters and is cut to a sane length; a blank one is
    /// none.
    pub fn new(ip: Option<IpAddr>, user_agent: Option<&str>) -> Self {
        let user_agent = user_agent
            .map(|ua| {
                ua.chars()
                    .filter(|c| !c.is_control())
                    .take(USER_AGENT_MAX_CHARS)
                    .collect::<String>()
                    .trim()
                    .to_owned()
            })
            .filter(|ua| !ua.is_empty());
        Self { ip, user_agent }
    }
}

/// A session as stored. It lives while it has not ended and `expires_at` (that of its
/// newest refresh token) has not passed.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    pub created_at: OffsetDateTime,
    /// The login, or the last refresh.
    pub last_used_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub origin: Origin,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_128_random_bits_in_lower_hex() {
        let id = SessionId::generate();
        assert_eq!(SessionId::parse(id.as_str()).unwrap(), id);
        assert_ne!(SessionId::generate(), id);
        for bad in [
            "",
            "ABCDEF0123456789abcdef0123456789",
            "abc",
            &"0".repeat(33),
        ] {
            assert!(SessionId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn user_agents_are_cleaned_and_trimmed() {
        let origin = Origin::new(None, Some(" curl/8.5\u{0}\n "));
        assert_eq!(origin.user_agent.as_deref(), Some("curl/8.5"));
        assert_eq!(Origin::new(None, Some(" \t")).user_agent, None);
        let long = "é".repeat(1000);
        let kept = Origin::new(None, Some(&long)).user_agent.unwrap();
        assert_eq!(kept.chars().count(), USER_AGENT_MAX_CHARS);
    }
}
