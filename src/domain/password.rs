use std::{collections::HashSet, fmt, sync::LazyLock};

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

/// A password being set (registration, a new or reset password, an admin's): a [`Password`]
/// that is not among the 10,000 most common, compared without regard to case. Refused at the
/// edge, so that a request hears of it with its other bad fields; whether it repeats the
/// account's own words is judged with the account, in the services.
///
/// The list is the first 10,000 of the frequency-ranked `passwords.json` of
/// `@zxcvbn-ts/language-common` 4.1.3 (MIT, see `common-passwords.LICENSE`), lower-cased.
#[derive(Clone, Debug)]
pub struct NewPassword(Password);

static COMMON: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("common-passwords.txt").lines().collect());

impl NewPassword {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let password = Password::parse(raw)?;
        if COMMON.contains(raw.to_lowercase().as_str()) {
            return Err(ParseError::new(
                "is one of the most common passwords; choose another",
            ));
        }
        Ok(Self(password))
    }

    pub fn password(&self) -> &Password {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_holds_ten_thousand_lower_case_passwords() {
        assert_eq!(COMMON.len(), 10_000);
        assert!(COMMON.iter().all(|p| *p == p.to_lowercase()));
    }

    #[test]
    fn common_passwords_are_refused_in_any_case_as_new_ones_only() {
        for common in ["password", "PassWord", "12345678", "qwertyuiop", "iloveyou"] {
            assert!(NewPassword::parse(common).is_err(), "{common}");
            assert!(Password::parse(common).is_ok(), "{common}");
        }
        assert!(NewPassword::parse("correct horse battery").is_ok());
        // The length rule comes first.
        assert_eq!(
            NewPassword::parse("1234567").unwrap_err().0,
            Password::parse("1234567").unwrap_err().0
        );
    }

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
