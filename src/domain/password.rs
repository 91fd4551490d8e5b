use std::fmt;

use super::ParseError;

/// A plain-text password on its way to the hasher: 8 to 72 bytes (bcrypt reads no further,
/// so longer ones are refused rather than silently cut). Debug output never shows it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub const MIN_BYTES: usize = 8;
    pub const MAX_BYTES: usize = 72;

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let len = raw.len();
        if len < Self::MIN_BYTES {
            return Err(ParseError::new(format!(
                "must be at least {} bytes",
                Self::MIN_BYTES
            )));
        }
        if len > Self::MAX_BYTES {
            return Err(ParseError::new(format!(
                "must be at most {} bytes",
                Self::MAX_BYTES
            )));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_is_counted_in_bytes() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse("12345678").is_ok());
        assert!(Password::parse(&"a".repeat(72)).is_ok());
        assert!(Password::parse(&"a".repeat(73)).is_err());
        // 36 two-byte characters are 72 bytes; one more is too many.
        assert!(Password::parse(&"é".repeat(36)).is_ok());
        assert!(Password::parse(&"é".repeat(37)).is_err());
    }

    #[test]
    fn debug_hides_the_secret() {
        let password = Password::parse("correct horse").unwrap();
        assert!(!format!("{password:?}").contains("horse"));
    }
}
