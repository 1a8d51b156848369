//! `Notify`: a callback that e-mails when a run ends or fails (cargo feature `notify`).
//!
//! ```json
//! {"class_name": "Notify", "name": "notify",
//!  "smtp_host": "smtp.example.com", "from": "nc7@example.com", "to": ["me@example.com"]}
//! ```
//!
//! The mail goes out over SMTP with STARTTLS (port 587) unless `tls` says otherwise; the login
//! comes from the environment (`NC7_SMTP_USER`, `NC7_SMTP_PASSWORD`), never from a config file,
//! which gets committed. A mail that cannot be sent is a warning: the run's result stands.

use std::path::PathBuf;
use std::time::Duration;

use burn::prelude::Backend;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use serde::{Deserialize, Serialize};

use crate::NoKeys;
use crate::nucleotide::{CallbackContext, CoordinatorCallback, RunEnd, RunOutcome};
use crate::{BoxError, Build, nucleotide};

/// The variables the SMTP login is read from.
pub const SMTP_USER: &str = "NC7_SMTP_USER";
/// See [`SMTP_USER`].
pub const SMTP_PASSWORD: &str = "NC7_SMTP_PASSWORD";

/// How the connection to the SMTP server is encrypted.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain, then upgraded with STARTTLS; a server that cannot is refused (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No encryption: only for a relay on this machine; no login is sent.
    None,
}

/// `Notify`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// The SMTP server.
    pub smtp_host: String,
    /// Its port: 587 for `starttls`, 465 for `implicit`, 25 for `none` when absent.
    #[serde(default)]
    pub smtp_port: Option<u16>,
    /// `starttls` (the default), `implicit` or `none`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// A PEM file of certificate authorities trusted besides the usual ones (a company's own);
    /// relative to the project.
    #[serde(default)]
    #[schemars(extend("x-nc7-path" = true))]
    pub ca_file: Option<PathBuf>,
    /// The sender.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// The ends that send a mail: `finished`, `stopped`, `interrupted`, `failed` (all when
    /// absent).
    #[serde(default = "all_ends")]
    pub on: Vec<RunEnd>,
    /// Seconds the SMTP server may take to answer.
    #[serde(default = "thirty")]
    pub timeout_seconds: u64,
    /// Refused, with where the login goes instead: `NC7_SMTP_USER` and `NC7_SMTP_PASSWORD`
    /// in the environment (configs get committed).
    #[serde(default, skip_serializing)]
    pub user: Option<serde_json::Value>,
    /// Refused, as `user`.
    #[serde(default, skip_serializing)]
    pub password: Option<serde_json::Value>,
}

fn all_ends() -> Vec<RunEnd> {
    vec![
        RunEnd::Finished,
        RunEnd::Stopped,
        RunEnd::Interrupted,
        RunEnd::Failed,
    ]
}

fn thirty() -> u64 {
    30
}

/// E-mails when the run ends, however it ends (see the module's documentation).
#[nucleotide(kind = CoordinatorCallback)]
pub struct Notify {
    config: NotifyConfig,
}

impl<B: Backend> Build<B> for Notify {
    type Config = NotifyConfig;
    type Input = NoKeys;
    type Output = NoKeys;
    fn build(config: &NotifyConfig, _: &B::Device) -> Result<Self, BoxError> {
        if config.user.is_some() || config.password.is_some() {
            return Err(format!(
                "an SMTP login in a config file: configs get committed, so the login comes from the environment ({SMTP_USER}, {SMTP_PASSWORD}); remove `user` and `password`"
            )
            .into());
        }
        if config.to.is_empty() {
            return Err("`to` names no recipient".into());
        }
        for address in config.to.iter().chain([&config.from]) {
            address
                .parse::<lettre::message::Mailbox>()
                .map_err(|e| format!("`{address}` is no e-mail address: {e}"))?;
        }
        if config.on.is_empty() {
            return Err(
                "`on` is empty, so no mail would ever be sent; list the ends that send one (`finished`, `stopped`, `interrupted`, `failed`) or remove the callback"
                    .into(),
            );
        }
        if let Some(file) = &config.ca_file {
            certificate(file)?;
        }
        Ok(Notify {
            config: config.clone(),
        })
    }
}

impl<B: Backend> CoordinatorCallback<B> for Notify {
    fn on_iteration_end(
        &mut self,
        _: NoKeys,
        _: &CallbackContext,
    ) -> Result<Option<NoKeys>, BoxError> {
        Ok(Some(NoKeys))
    }

    fn on_run_end(&mut self, outcome: &RunOutcome, ctx: &CallbackContext) -> Result<(), BoxError> {
        if !self.config.on.contains(&outcome.status) {
            return Ok(());
        }
        let login = login(|name| std::env::var(name).ok())?;
        let (subject, body) = message(outcome, ctx);
        send(&self.config, login, &subject, &body)?;
        log::info!(
            "notified {} that the run {}",
            self.config.to.join(", "),
            outcome.status.name()
        );
        Ok(())
    }
}

/// The SMTP login from the variables `var` reads: both or neither.
pub fn login(var: impl Fn(&str) -> Option<String>) -> Result<Option<(String, String)>, BoxError> {
    match (var(SMTP_USER), var(SMTP_PASSWORD)) {
        (Some(user), Some(password)) => Ok(Some((user, password))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(format!("{SMTP_USER} is set but {SMTP_PASSWORD} is not").into()),
        (None, Some(_)) => Err(format!("{SMTP_PASSWORD} is set but {SMTP_USER} is not").into()),
    }
}

fn certificate(file: &std::path::Path) -> Result<Certificate, BoxError> {
    let pem = std::fs::read(file).map_err(|e| format!("`ca_file` {}: {e}", file.display()))?;
    Ok(Certificate::from_pem(&pem)
        .map_err(|e| format!("`ca_file` {} holds no PEM certificate: {e}", file.display()))?)
}

/// The mail about a run: its subject and text.
pub fn message(outcome: &RunOutcome, ctx: &CallbackContext) -> (String, String) {
    let project = ctx
        .log_dir
        .ancestors()
        .find(|p| p.join("project.toml").is_file() || p.join("training").is_dir())
        .and_then(|p| p.file_name())
        .map_or_else(|| "nc7".to_owned(), |n| n.to_string_lossy().into_owned());
    let subject = format!(
        "[nc7] {project}: run {} {}",
        ctx.run.name,
        outcome.status.name()
    );
    let mut body = format!(
        "The run {} of {project} {} at step {} after {:.1} s, on {}.\n",
        ctx.run.name,
        outcome.status.name(),
        outcome.step,
        outcome.elapsed.as_secs_f64(),
        crate::project::host_name(),
    );
    if let Some(reason) = &outcome.reason {
        body.push_str(&format!("\n{reason}\n"));
    }
    if !outcome.metrics.is_empty() {
        body.push_str("\nLast values:\n");
        for (k, v) in &outcome.metrics {
            body.push_str(&format!("  {k} = {v}\n"));
        }
    }
    if !ctx.run.hyperparameters.is_empty() {
        body.push_str("\nSet over the project's configs:\n");
        for (k, v) in &ctx.run.hyperparameters {
            body.push_str(&format!("  {k} = {v}\n"));
        }
    }
    if let Some(id) = &ctx.run.mlflow_run_id {
        body.push_str(&format!("\nMLflow run: {id}\n"));
    }
    (subject, body)
}

/// Sends one mail as `config` says, logging in with `login` when given.
pub fn send(
    config: &NotifyConfig,
    login: Option<(String, String)>,
    subject: &str,
    body: &str,
) -> Result<(), BoxError> {
    let mut mail = Message::builder()
        .from(config.from.parse()?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    for to in &config.to {
        mail = mail.to(to.parse()?);
    }
    let mail = mail.body(body.to_owned())?;
    let host = config.smtp_host.as_str();
    let tls = || -> Result<TlsParameters, BoxError> {
        let mut params = TlsParameters::builder(host.to_owned());
        if let Some(file) = &config.ca_file {
            params = params.add_root_certificate(certificate(file)?);
        }
        Ok(params.build_rustls()?)
    };
    let (tls, port) = match config.tls {
        SmtpTls::Starttls => (Tls::Required(tls()?), 587),
        SmtpTls::Implicit => (Tls::Wrapper(tls()?), 465),
        SmtpTls::None => (Tls::None, 25),
    };
    let mut transport = SmtpTransport::builder_dangerous(host)
        .port(config.smtp_port.unwrap_or(port))
        .tls(tls)
        .timeout(Some(Duration::from_secs(config.timeout_seconds.max(1))));
    match (login, config.tls) {
        (Some(_), SmtpTls::None) => log::warn!(
            "notify: the SMTP login is not sent over an unencrypted connection (`tls: none`)"
        ),
        (Some((user, password)), _) => {
            transport = transport.credentials(Credentials::new(user, password));
        }
        (None, _) => {}
    }
    let port = config.smtp_port.unwrap_or(port);
    transport.build().send(&mail).map_err(|e| {
        let why = if e.is_permanent() {
            "refused"
        } else if e.is_transient() {
            "put off"
        } else {
            "failed"
        };
        format!(
            "the mail to {} via {host}:{port} {why}: {e}",
            config.to.join(", ")
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_is_both_variables_or_none() {
        let vars = |user: Option<&'static str>, password: Option<&'static str>| {
            move |name: &str| match name {
                SMTP_USER => user.map(str::to_owned),
                SMTP_PASSWORD => password.map(str::to_owned),
                _ => None,
            }
        };
        assert_eq!(
            login(vars(Some("u"), Some("p"))).unwrap(),
            Some(("u".into(), "p".into()))
        );
        assert_eq!(login(vars(None, None)).unwrap(), None);
        let err = login(vars(Some("u"), None)).unwrap_err().to_string();
        assert_eq!(err, "NC7_SMTP_USER is set but NC7_SMTP_PASSWORD is not");
    }
}
