//! Outgoing mail: the password-reset link.

use std::fmt;

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor, message::Mailbox,
    transport::smtp::AsyncSmtpTransportBuilder,
};

use crate::domain::Email;

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

    /// Sends the reset link. Failures are logged, never shown to the requester, who gets
    /// the same answer whether or not the address is known.
    pub async fn send_reset_link(&self, to: &Email, link: &str) {
        match &self.transport {
            Transport::Smtp(transport) => {
                let result = async {
                    let message = Message::builder()
                        .from(self.from.clone())
                        .to(to.as_str().parse()?)
                        .subject("Reset your password")
                        .body(format!(
                            "Someone asked to reset the password of this account.\n\n\
                             To choose a new password, open:\n{link}\n\n\
                             If it was not you, ignore this message.\n"
                        ))?;
                    transport.send(message).await?;
                    anyhow::Ok(())
                }
                .await;
                match result {
                    Ok(()) => tracing::info!("password reset mail sent"),
                    Err(e) => {
                        tracing::error!(error = format!("{e:#}"), "password reset mail failed")
                    }
                }
            }
            // Development only: the link is a secret, which is why production never logs it.
            Transport::Log => tracing::info!(link, "no SMTP_URL: password reset link"),
            Transport::Disabled => {
                tracing::error!("a password reset was requested but SMTP_URL is not set");
            }
        }
    }
}
