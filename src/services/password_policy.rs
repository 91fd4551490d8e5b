//! Which new passwords are refused, wherever a password is set: the 10,000 most common
//! ones, and one equal to what the account itself shows (its email, the part before `@`,
//! its username or its name), all compared without regard to case.
//!
//! The list is the first 10,000 of the frequency-ranked `passwords.json` of
//! `@zxcvbn-ts/language-common` 4.1.3 (MIT, see `common-passwords.LICENSE`), lower-cased.

use std::{collections::HashSet, sync::LazyLock};

use super::ServiceError;
use crate::domain::{DisplayName, Email, Password, User, Username};

static COMMON: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("common-passwords.txt").lines().collect());

/// What the account shows, which its password must not be.
pub(super) struct AccountWords<'a> {
    pub email: &'a Email,
    pub username: Option<&'a Username>,
    pub name: &'a DisplayName,
}

impl<'a> AccountWords<'a> {
    pub fn of(user: &'a User) -> Self {
        Self {
            email: &user.email,
            username: user.username.as_ref(),
            name: &user.name,
        }
    }
}

/// Refuses `password` for the account, naming the request's `field`, when a rule forbids it.
pub(super) fn check(
    password: &Password,
    account: &AccountWords<'_>,
    field: &'static str,
) -> Result<(), ServiceError> {
    match refusal(password, account) {
        Some(message) => Err(ServiceError::Invalid { field, message }),
        None => Ok(()),
    }
}

/// Why `password` is refused for the account, if it is.
fn refusal(password: &Password, account: &AccountWords<'_>) -> Option<&'static str> {
    let password = password.expose().to_lowercase();
    if COMMON.contains(password.as_str()) {
        return Some("is one of the most common passwords; choose another");
    }
    let email = account.email.as_str();
    let local_part = email.split('@').next().unwrap_or(email);
    let words = [
        Some(email),
        Some(local_part),
        account.username.map(Username::as_str),
        Some(account.name.as_str()),
    ];
    words
        .into_iter()
        .flatten()
        .any(|word| word.to_lowercase() == password)
        .then_some("must not be your email, the part of it before @, your username or your name")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(password: &str) -> Option<&'static str> {
        let email = Email::parse("Mario.Rossi@example.com").unwrap();
        let username = Username::parse("SuperMario").unwrap();
        let name = DisplayName::parse("Mario Rossi Jr").unwrap();
        let account = AccountWords {
            email: &email,
            username: Some(&username),
            name: &name,
        };
        refusal(&Password::parse(password).unwrap(), &account)
    }

    #[test]
    fn the_list_holds_ten_thousand_lower_case_passwords() {
        assert_eq!(COMMON.len(), 10_000);
        assert!(COMMON.iter().all(|p| *p == p.to_lowercase()));
    }

    #[test]
    fn common_passwords_are_refused_in_any_case() {
        for common in ["password", "PassWord", "12345678", "qwertyuiop", "iloveyou"] {
            assert!(check(common).is_some(), "{common}");
        }
    }

    #[test]
    fn the_accounts_own_words_are_refused_in_any_case() {
        for own in [
            "mario.rossi@example.com",
            "MARIO.ROSSI@EXAMPLE.COM",
            "Mario.Rossi",
            "supermario",
            "mario rossi jr",
        ] {
            assert!(check(own).is_some(), "{own}");
        }
    }

    #[test]
    fn other_passwords_pass() {
        for fine in [
            "correct horse battery",
            "mario.rossi@example.org",
            "Mario Rossi",
        ] {
            assert_eq!(check(fine), None, "{fine}");
        }
    }
}
