//! Which new passwords are refused for an account: one equal to what the account itself
//! shows (its email, the part before `@`, its username or its name), compared without
//! regard to case. (The most common passwords are refused as they are read:
//! [`NewPassword`].)

use super::ServiceError;
use crate::domain::{DisplayName, Email, NewPassword, User, Username};

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
    password: &NewPassword,
    account: &AccountWords<'_>,
    field: &'static str,
) -> Result<(), ServiceError> {
    match refusal(password, account) {
        Some(message) => Err(ServiceError::Invalid { field, message }),
        None => Ok(()),
    }
}

/// Why `password` is refused for the account, if it is.
fn refusal(password: &NewPassword, account: &AccountWords<'_>) -> Option<&'static str> {
    let password = password.password().expose().to_lowercase();
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
        refusal(&NewPassword::parse(password).unwrap(), &account)
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
