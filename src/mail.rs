//! Outgoing mail: the password-reset link.

use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor, message::Mailbox};

use crate::config::{AppEnv, Settings};

#[derive(Clone)]
pub enum Mailer {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
    /// Development without SMTP: the link goes to the log instead.
    Log,
    /// Production without SMTP: nothing can be sent; each attempt is logged as an error.
    Disabled,
}

impl Mailer {
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        Ok(match (&settings.smtp_url, settings.app_env) {
            (Some(url), _) => Mailer::Smtp {
                transport: AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())?.build(),
                from: settings.mail_from.parse()?,
            },
            (None, AppEnv::Development) => Mailer::Log,
            (None, AppEnv::Production) => Mailer::Disabled,
        })
    }

    /// Sends the reset link. Failures are logged, never shown to the requester, who gets
    /// the same answer whether or not the address is known.
    pub async fn send_reset_link(&self, to: &str, link: &str) {
        match self {
            Mailer::Smtp { transport, from } => {
                let result = async {
                    let message = Message::builder()
                        .from(from.clone())
                        .to(to.parse()?)
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
            Mailer::Log => tracing::info!(link, "no SMTP_URL: password reset link"),
            Mailer::Disabled => {
                tracing::error!("a password reset was requested but SMTP_URL is not set");
            }
        }
    }
}
