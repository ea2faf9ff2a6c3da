//! One task per target delivering its queue in order: HTTP for webhooks, Slack and pings, SMTP
//! for email. Nothing here logs or returns a URL: a target is named by its entry and kind.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use coffer_core::config::{EmailConfig, NotifyConfig, NotifyTarget, SmtpTls};
use coffer_core::{Error, Result};
use jiff::Timestamp;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::{DELIVERY_TIMEOUT, Event, entry_error, truncate};

/// Deliveries a target may have waiting; past that new ones are dropped (and counted), so a
/// dead target never holds memory or the daemon.
const QUEUE: usize = 64;

/// What every target's task shares: the HTTP client, the timeout, the counters.
pub(super) struct Shared {
    http: reqwest::Client,
    timeout: Mutex<Duration>,
    pub(super) failed: AtomicU64,
    pub(super) delivered: AtomicU64,
}

impl Shared {
    pub(super) fn new() -> Result<Shared> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("coffer/", env!("CARGO_PKG_VERSION")))
            // A redirect would carry the payload somewhere nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                Error::config(format!(
                    "cannot set up the HTTP client for notifications: {}",
                    e.without_url()
                ))
            })?;
        Ok(Shared {
            http,
            timeout: Mutex::new(DELIVERY_TIMEOUT),
            failed: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        })
    }

    pub(super) fn set_timeout(&self, timeout: Duration) {
        *self.timeout.lock().unwrap_or_else(|e| e.into_inner()) = timeout;
    }

    fn timeout(&self) -> Duration {
        *self.timeout.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A healthchecks ping of one run.
#[derive(Debug, Clone)]
pub(super) enum Ping {
    /// `URL/start`.
    Start,
    /// `URL`, with the run's summary as the body.
    Success(String),
    /// `URL/fail`, with the error as the body.
    Fail(String),
}

/// One item of a target's queue.
pub(super) enum Message {
    /// A JSON body to POST (webhook, Slack).
    Json(&'static str, serde_json::Value),
    /// A mail (subject, body).
    Mail(String, String),
    /// A healthchecks ping.
    Ping(Ping),
    /// Answered once everything before it is done.
    Flush(oneshot::Sender<()>),
}

impl Message {
    /// `event` rendered for `target` at `time`.
    pub(super) fn event(target: &Target, event: &Event, host: &str, time: Timestamp) -> Message {
        let headline = event.headline(host);
        match &target.config.target {
            NotifyTarget::Slack { .. } => Message::Json(
                event.name(),
                serde_json::json!({
                    "text": format!("[coffer] {headline}: {}", event.details()),
                }),
            ),
            NotifyTarget::Email(_) => Message::Mail(
                format!("[coffer] {headline}"),
                format!(
                    "{headline}\n\n{}\n\nevent: {}\n{}host: {host}\ntime: {time}\n",
                    event.details(),
                    event.name(),
                    event
                        .job()
                        .map(|j| format!("job: {j}\n"))
                        .unwrap_or_default(),
                ),
            ),
            NotifyTarget::Webhook { .. } | NotifyTarget::Healthchecks { .. } => {
                Message::Json(event.name(), json(event, &headline, host, time))
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Message::Json(name, _) => name,
            Message::Mail(..) => "mail",
            Message::Ping(Ping::Start) => "start",
            Message::Ping(Ping::Success(_)) => "success",
            Message::Ping(Ping::Fail(_)) => "fail",
            Message::Flush(_) => "flush",
        }
    }
}

/// The generic webhook's JSON: `event`, `host`, `time`, `text`, and the event's own fields.
fn json(event: &Event, headline: &str, host: &str, time: Timestamp) -> serde_json::Value {
    let mut body = serde_json::json!({
        "event": event.name(),
        "host": host,
        "time": time.to_string(),
        "text": format!("{headline}: {}", event.details()),
    });
    let fields = match event {
        Event::JobFailed {
            job,
            message,
            attempts,
        } => serde_json::json!({"job": job, "message": truncate(message), "attempts": attempts}),
        Event::JobRecovered { job } | Event::Fresh { job } => serde_json::json!({"job": job}),
        Event::Stale { job, last_success } => serde_json::json!({
            "job": job,
            "last_success": last_success.map(|t| t.to_string()),
        }),
        Event::DrillResult { passed, summary } => serde_json::json!({
            "job": "drill",
            "passed": passed,
            "message": truncate(summary),
        }),
        Event::DiskFull { path, percent_used } | Event::DiskRecovered { path, percent_used } => {
            serde_json::json!({
                "path": path.display().to_string(),
                "percent_used": (percent_used * 10.0).round() / 10.0,
            })
        }
    };
    if let (Some(body), serde_json::Value::Object(fields)) = (body.as_object_mut(), fields) {
        body.extend(fields);
    }
    body
}

/// A configured target with its queue.
pub(super) struct Target {
    pub(super) config: NotifyConfig,
    pub(super) queue: mpsc::Sender<Message>,
    index: usize,
    shared: std::sync::Arc<Shared>,
}

impl Target {
    /// Whether this is a healthchecks target (pinged per run, not sent events).
    pub(super) fn is_healthchecks(&self) -> bool {
        matches!(self.config.target, NotifyTarget::Healthchecks { .. })
    }

    /// Queues `message` without waiting; a full queue drops it, logged and counted.
    pub(super) fn enqueue(&self, message: Message) {
        let name = message.name();
        if self.queue.try_send(message).is_err() {
            self.shared.failed.fetch_add(1, Ordering::Relaxed);
            warn!(
                target_entry = self.index,
                kind = self.config.target.kind(),
                event = name,
                "notification dropped: the target's queue is full (it is down or slow)"
            );
        }
    }
}

/// How a target's task reaches it.
enum Transport {
    Http(reqwest::Url),
    Healthchecks(reqwest::Url),
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
        to: Vec<Mailbox>,
    },
}

/// Every target checked and started; an error names the entry.
pub(super) fn build(
    configs: &[NotifyConfig],
    shared: &std::sync::Arc<Shared>,
) -> Result<Vec<Target>> {
    let transports = configs
        .iter()
        .enumerate()
        .map(|(i, config)| transport(i, config))
        .collect::<Result<Vec<_>>>()?;
    Ok(configs
        .iter()
        .zip(transports)
        .enumerate()
        .map(|(index, (config, transport))| {
            let (queue, receiving) = mpsc::channel(QUEUE);
            tokio::spawn(run(
                index,
                config.target.kind(),
                transport,
                receiving,
                shared.clone(),
            ));
            Target {
                config: config.clone(),
                queue,
                index,
                shared: shared.clone(),
            }
        })
        .collect())
}

fn parse_url(index: usize, url: &coffer_core::secret::Secret) -> Result<reqwest::Url> {
    // The parser's message never holds the URL itself.
    reqwest::Url::parse(url.expose()).map_err(|e| entry_error(index, format!("url: {e}")))
}

fn transport(index: usize, config: &NotifyConfig) -> Result<Transport> {
    Ok(match &config.target {
        NotifyTarget::Webhook { url } | NotifyTarget::Slack { url } => {
            Transport::Http(parse_url(index, url)?)
        }
        NotifyTarget::Healthchecks { url } => Transport::Healthchecks(parse_url(index, url)?),
        NotifyTarget::Email(email) => smtp(index, email)?,
    })
}

fn smtp(index: usize, email: &EmailConfig) -> Result<Transport> {
    let fail = |what: &str, e: &dyn std::fmt::Display| entry_error(index, format!("{what}: {e}"));
    let host = email.smtp_host.as_str();
    let tls = || TlsParameters::new(host.to_string()).map_err(|e| fail("cannot set up TLS", &e));
    let builder =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).tls(match email.tls {
            // Required: a server that does not offer STARTTLS gets nothing, not a clear-text mail.
            SmtpTls::Starttls => Tls::Required(tls()?),
            SmtpTls::Tls => Tls::Wrapper(tls()?),
            SmtpTls::None => Tls::None,
        });
    let mut builder = builder
        .port(email.smtp_port)
        .timeout(Some(DELIVERY_TIMEOUT))
        .hello_name(ClientId::Domain(super::this_host()));
    if let (Some(user), Some(password)) = (&email.username, &email.password) {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.expose().to_string(),
        ));
    }
    let mailbox = |address: &str| {
        address
            .parse::<Mailbox>()
            .map_err(|e| fail(&format!("{address:?} is not a mail address"), &e))
    };
    Ok(Transport::Smtp {
        transport: builder.build(),
        from: mailbox(&email.from)?,
        to: email
            .to
            .iter()
            .map(|a| mailbox(a))
            .collect::<Result<Vec<_>>>()?,
    })
}

/// A target's task: its queue delivered in order until every sender is gone.
async fn run(
    index: usize,
    kind: &'static str,
    transport: Transport,
    mut queue: mpsc::Receiver<Message>,
    shared: std::sync::Arc<Shared>,
) {
    while let Some(message) = queue.recv().await {
        let event = message.name();
        let message = match message {
            Message::Flush(done) => {
                let _ = done.send(());
                continue;
            }
            other => other,
        };
        let timeout = shared.timeout();
        let outcome = match tokio::time::timeout(
            timeout,
            deliver(&transport, message, &shared.http, timeout),
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {} s", timeout.as_secs_f64())),
        };
        match outcome {
            Ok(()) => {
                shared.delivered.fetch_add(1, Ordering::Relaxed);
                debug!(target_entry = index, kind, event, "notification delivered");
            }
            Err(error) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                warn!(
                    target_entry = index,
                    kind,
                    event,
                    error = %error,
                    "notification not delivered"
                );
            }
        }
    }
}

/// `error` and its causes on one line (a reqwest error alone says only "error sending request").
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

async fn deliver(
    transport: &Transport,
    message: Message,
    http: &reqwest::Client,
    timeout: Duration,
) -> std::result::Result<(), String> {
    let request = match (transport, message) {
        (Transport::Http(url), Message::Json(_, body)) => http.post(url.clone()).json(&body),
        (Transport::Healthchecks(url), Message::Ping(ping)) => {
            let (suffix, body) = match ping {
                Ping::Start => ("/start", String::new()),
                Ping::Success(summary) => ("", truncate(&summary).to_string()),
                Ping::Fail(error) => ("/fail", truncate(&error).to_string()),
            };
            let mut url = url.clone();
            let path = format!("{}{suffix}", url.path().trim_end_matches('/'));
            url.set_path(&path);
            http.post(url)
                .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(body)
        }
        (
            Transport::Smtp {
                transport,
                from,
                to,
            },
            Message::Mail(subject, body),
        ) => {
            let mut mail = lettre::Message::builder()
                .from(from.clone())
                .subject(subject)
                .header(ContentType::TEXT_PLAIN);
            for to in to {
                mail = mail.to(to.clone());
            }
            let mail = mail
                .body(body)
                .map_err(|e| format!("cannot build the mail: {e}"))?;
            return transport
                .send(mail)
                .await
                .map(drop)
                .map_err(|e| format!("smtp: {e}"));
        }
        // Messages are rendered for their target's kind, so nothing else arrives.
        _ => return Ok(()),
    };
    let response = request
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| with_causes(&e.without_url()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the target answered {status}"))
    }
}
