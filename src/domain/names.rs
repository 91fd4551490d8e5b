use std::fmt;

use super::{ParseError, text::trimmed_text_pattern};

/// A person's display name: trimmed, 1 to 30 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX_LEN: usize = 30;

    /// The rule of [`DisplayName::parse`] as a regular expression (see [`super::text`]).
    pub fn pattern() -> String {
        trimmed_text_pattern(1, Self::MAX_LEN)
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let value = raw.trim();
        let len = value.chars().count();
        if len == 0 {
            return Err(ParseError::new("must not be empty"));
        }
        if len > Self::MAX_LEN {
            return Err(ParseError::new(format!(
                "must be at most {} characters",
                Self::MAX_LEN
            )));
        }
        if value.chars().any(char::is_control) {
            return Err(ParseError::new("must not contain control characters"));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A login handle: 3 to 30 of `A-Z a-z 0-9 _ . -`. Case is kept for display;
/// uniqueness ignores it (see [`Username::key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub const MIN_LEN: usize = 3;
    pub const MAX_LEN: usize = 30;
    /// The rule of [`Username::parse`] as a regular expression (see [`super::text`]).
    pub const PATTERN: &str = "^[A-Za-z0-9_.-]{3,30}$";

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let len = raw.len();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&len) {
            return Err(ParseError::new(format!(
                "must be {} to {} characters",
                Self::MIN_LEN,
                Self::MAX_LEN
            )));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(ParseError::new(
                "may contain only letters, digits, '_', '.' and '-'",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form that uniqueness and look-ups use.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use regex::Regex;

    use super::{super::text::tests::sample_chars, *};

    #[test]
    fn the_patterns_state_the_rules() {
        let name = Regex::new(&DisplayName::pattern()).unwrap();
        let username = Regex::new(Username::PATTERN).unwrap();
        let mut texts = vec![String::new()];
        for n in 0..=33 {
            for fill in ["x", " ", "\t", "é", "_", "-", "\u{2003}", "\u{1F600}"] {
                texts.push(fill.repeat(n));
                texts.push(format!(" {} ", fill.repeat(n)));
                texts.push(format!("ab{}", fill.repeat(n)));
            }
        }
        for c in sample_chars() {
            texts.push(format!("ab{c}"));
            texts.push(format!("{c}Mario{c}"));
        }
        for t in &texts {
            assert_eq!(
                name.is_match(t),
                DisplayName::parse(t).is_ok(),
                "name {t:?}"
            );
            assert_eq!(
                username.is_match(t),
                Username::parse(t).is_ok(),
                "username {t:?}"
            );
        }
    }

    #[test]
    fn name_is_trimmed_and_bounded() {
        assert_eq!(
            DisplayName::parse("  Mario Rossi ").unwrap().as_str(),
            "Mario Rossi"
        );
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse(&"é".repeat(30)).is_ok());
        assert!(DisplayName::parse(&"é".repeat(31)).is_err());
        assert!(DisplayName::parse("bad\u{0}name").is_err());
    }

    #[test]
    fn username_accepts_only_its_alphabet() {
        assert!(Username::parse("mario.rossi_2-x").is_ok());
        for bad in ["ab", "mario rossi", "mário", "a@b", &"a".repeat(31)] {
            assert!(Username::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn username_key_ignores_case() {
        let a = Username::parse("Mario").unwrap();
        let b = Username::parse("mARIO").unwrap();
        assert_eq!(a.key(), b.key());
        assert_eq!(a.as_str(), "Mario");
    }
}
