//! Outgoing mail: links (password reset, email verification) and security notices.

use std::fmt;

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor, message::Mailbox,
    transport::smtp::AsyncSmtpTransportBuilder,
};

use crate::{domain::Email, metrics};

/// An SMTP relay parsed from `SMTP_URL`. Its debug output hides the URL's credentials.
#[derive(Clone)]
pub struct SmtpRelay(Box<AsyncSmtpTransportBuilder>);

impl SmtpRelay {
    /// `smtp://` or `smtps://`, as lettre reads them.
    pub fn parse(url: &str) -> Result<Self, lettre::transport::smtp::Error> {
        AsyncSmtpTransport::<Tokio1Executor>::from_url(url).map(|builder| Self(Box::new(builder)))
    }
}

impl fmt::Debug for SmtpRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SmtpRelay(***)")
    }
}

/// Where mail goes.
#[derive(Debug, Clone)]
pub enum MailTransport {
    Smtp(SmtpRelay),
    /// Development without SMTP: the link goes to the log instead.
    Log,
    /// Production without SMTP: nothing can be sent; each attempt is logged as an error.
    Disabled,
}

#[derive(Debug, Clone)]
pub struct MailSettings {
    pub transport: MailTransport,
    pub from: Mailbox,
}

#[derive(Clone)]
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
}

#[derive(Clone)]
enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Log,
    Disabled,
}

impl Mailer {
    /// Needs the async runtime: the SMTP connection pool starts here.
    pub fn new(settings: MailSettings) -> Self {
        let transport = match settings.transport {
            MailTransport::Smtp(SmtpRelay(builder)) => Transport::Smtp((*builder).build()),
            MailTransport::Log => Transport::Log,
            MailTransport::Disabled => Transport::Disabled,
        };
        Self {
            transport,
            from: settings.from,
        }
    }

    /// Sends `mail` to `to`. A failure is logged and counted, never shown to whoever caused
    /// the mail: their answer was given before it went out.
    pub async fn send(&self, to: &Email, mail: Mail<'_>) {
        let kind = mail.kind();
        match &self.transport {
            Transport::Smtp(transport) => {
                let result = async {
                    let message = Message::builder()
                        .from(self.from.clone())
                        .to(to.as_str().parse()?)
                        .subject(mail.subject())
                        .body(mail.body())?;
                    transport.send(message).await?;
                    anyhow::Ok(())
                }
                .await;
                match result {
                    Ok(()) => tracing::info!(kind, "mail sent"),
                    Err(e) => {
                        metrics::record_mail_failure(kind);
                        tracing::error!(kind, error = format!("{e:#}"), "mail failed");
                    }
                }
            }
            // Development only: a link is a secret, which is why production never logs it.
            Transport::Log => match mail.link() {
                Some(link) => tracing::info!(kind, link, "no SMTP_URL: the mail's link"),
                None => tracing::info!(kind, "no SMTP_URL: a mail was not sent"),
            },
            Transport::Disabled => {
                metrics::record_mail_failure(kind);
                tracing::error!(kind, "a mail was to go out but SMTP_URL is not set");
            }
        }
    }
}

/// What the service mails. Security notices carry no token, no password and no link that
/// signs anyone in.
#[derive(Debug, Clone, Copy)]
pub enum Mail<'a> {
    ResetLink(&'a str),
    VerificationLink(&'a str),
    PasswordChanged,
    /// To the old address.
    EmailChanged,
    /// Two-factor sign-in switched on, or off (by the user or an admin).
    MfaEnabled,
    MfaDisabled,
}

impl Mail<'_> {
    /// The kind, as logs and metrics name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Mail::ResetLink(_) => "password_reset",
            Mail::VerificationLink(_) => "email_verification",
            Mail::PasswordChanged => "password_changed",
            Mail::EmailChanged => "email_changed",
            Mail::MfaEnabled => "mfa_enabled",
            Mail::MfaDisabled => "mfa_disabled",
        }
    }

    fn link(&self) -> Option<&str> {
        match self {
            Mail::ResetLink(link) | Mail::VerificationLink(link) => Some(link),
            Mail::PasswordChanged | Mail::EmailChanged | Mail::MfaEnabled | Mail::MfaDisabled => {
                None
            }
        }
    }

    fn subject(&self) -> &'static str {
        match self {
            Mail::ResetLink(_) => "Reset your password",
            Mail::VerificationLink(_) => "Confirm your email address",
            Mail::PasswordChanged => "Your password was changed",
            Mail::EmailChanged => "The email address of your account was changed",
            Mail::MfaEnabled => "Two-factor sign-in was switched on",
            Mail::MfaDisabled => "Two-factor sign-in was switched off",
        }
    }

    fn body(&self) -> String {
        let unless_you = "If it was not you, reset your password at once and tell us.";
        match self {
            Mail::ResetLink(link) => format!(
                "Someone asked to reset the password of this account.\n\n\
                 To choose a new password, open:\n{link}\n\n\
                 If it was not you, ignore this message.\n"
            ),
            Mail::VerificationLink(link) => format!(
                "To confirm that this address is yours, open:\n{link}\n\n\
                 If you did not sign up or change your address, ignore this message.\n"
            ),
            Mail::PasswordChanged => {
                format!("The password of your account was just changed.\n\n{unless_you}\n")
            }
            Mail::EmailChanged => format!(
                "The email address of your account was just changed; mail for it now goes \
                 to the new address, not to this one.\n\n{unless_you}\n"
            ),
            Mail::MfaEnabled => format!(
                "Two-factor sign-in was just switched on for your account: signing in now \
                 also asks for a code.\n\n{unless_you}\n"
            ),
            Mail::MfaDisabled => format!(
                "Two-factor sign-in was just switched off for your account: signing in now \
                 needs the password only.\n\n{unless_you}\n"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_carry_no_link_and_links_appear_only_in_their_mails() {
        let notices = [
            Mail::PasswordChanged,
            Mail::EmailChanged,
            Mail::MfaEnabled,
            Mail::MfaDisabled,
        ];
        for notice in notices {
            let body = notice.body();
            assert!(notice.link().is_none(), "{notice:?}");
            assert!(!body.contains("http") && !body.contains("token"), "{body}");
        }
        let link = "https://example.com/verify-email?token=secret";
        for mail in [Mail::ResetLink(link), Mail::VerificationLink(link)] {
            assert!(mail.body().contains(link), "{mail:?}");
        }
        let kinds: std::collections::HashSet<_> = notices.iter().map(Mail::kind).collect();
        assert_eq!(kinds.len(), notices.len());
    }
}
