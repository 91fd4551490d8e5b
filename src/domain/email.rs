use std::fmt;

use validator::ValidateEmail;

use super::ParseError;

/// An e-mail address: trimmed, lower-cased, at most 254 characters, syntactically valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let value = raw.trim().to_lowercase();
        if value.is_empty() {
            return Err(ParseError::new("must not be empty"));
        }
        if value.chars().count() > Self::MAX_LEN {
            return Err(ParseError::new(format!(
                "must be at most {} characters",
                Self::MAX_LEN
            )));
        }
        if !value.validate_email() {
            return Err(ParseError::new("must be a valid email address"));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_lower_cases() {
        let email = Email::parse("  Mario.Rossi@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "mario.rossi@example.com");
    }

    #[test]
    fn rejects_malformed_addresses() {
        for raw in [
            "",
            "   ",
            "mario",
            "mario@",
            "@example.com",
            "ma rio@example.com",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?} was accepted");
        }
    }

    #[test]
    fn rejects_addresses_longer_than_254_characters() {
        // Labels of at most 63 characters, so that only the total length is at fault.
        let address = |last_label: &str| {
            let label = "b".repeat(60);
            format!("{}@{label}.{label}.{label}.{last_label}", "a".repeat(64))
        };
        let fits = address("abcdef");
        assert_eq!(fits.len(), 254);
        assert!(Email::parse(&fits).is_ok());
        let too_long = address("abcdefg");
        assert!(Email::parse(&too_long).is_err());
    }
}
