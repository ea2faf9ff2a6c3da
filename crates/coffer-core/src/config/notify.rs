//! `[[notify]]`: where the daemon sends its alerts — generic JSON webhooks, Slack incoming
//! webhooks, email over SMTP, and healthchecks.io-style ping URLs.
//!
//! Every entry is checked when the file is loaded; an error names the entry and the key
//! (`notify[1].url`). URLs and passwords are [`Secret`]s: a Slack or ping URL is as good as a
//! password to whoever reads it, so none of them reaches `Debug` output or a log.

use super::*;

/// One alert target.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Where and how alerts are delivered.
    pub target: NotifyTarget,
    /// The kinds of event this target receives (`events`; default: all of them). Healthchecks
    /// targets ignore it: they are pinged at every run of their jobs.
    pub events: Vec<NotifyEvent>,
    /// The jobs whose runs ping a healthchecks target (`jobs`; empty: every job).
    pub jobs: Vec<JobName>,
}

impl NotifyConfig {
    /// Whether this target wants events of `kind`.
    pub fn wants(&self, kind: NotifyEvent) -> bool {
        self.events.contains(&kind)
    }

    /// Whether the runs of `job` ping this target (healthchecks targets).
    pub fn pings_for(&self, job: JobName) -> bool {
        self.jobs.is_empty() || self.jobs.contains(&job)
    }
}

/// Where one target delivers.
#[derive(Debug, Clone)]
pub enum NotifyTarget {
    /// A JSON object POSTed to a URL (`kind = "webhook"`).
    Webhook {
        /// The URL (`url` or `url_file`).
        url: Secret,
    },
    /// A Slack incoming webhook, `{"text": "…"}` (`kind = "slack"`).
    Slack {
        /// The webhook URL (`url` or `url_file`).
        url: Secret,
    },
    /// Mail through an SMTP server (`kind = "email"`).
    Email(EmailConfig),
    /// A healthchecks.io-style check (`kind = "healthchecks"`): `URL/start` when a run starts,
    /// `URL` when it succeeds, `URL/fail` when it fails.
    Healthchecks {
        /// The check's ping URL (`url` or `url_file`).
        url: Secret,
    },
}

impl NotifyTarget {
    /// The `kind` as written in the file, for logs (never the URL).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Webhook { .. } => "webhook",
            Self::Slack { .. } => "slack",
            Self::Email(_) => "email",
            Self::Healthchecks { .. } => "healthchecks",
        }
    }
}

/// An SMTP server and the mail sent through it.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// The server's host name (`smtp_host`); also the name its certificate must carry.
    pub smtp_host: String,
    /// Its port (`smtp_port`; default 587 for `starttls`, 465 for `tls`, 25 for `none`).
    pub smtp_port: u16,
    /// How the connection is protected (`tls`).
    pub tls: SmtpTls,
    /// The account to log in with (`username`), if the server wants one.
    pub username: Option<String>,
    /// Its password (`password_file`).
    pub password: Option<Secret>,
    /// The sender address (`from`).
    pub from: String,
    /// The recipients (`to`, at least one).
    pub to: Vec<String>,
}

/// The protection of an SMTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which the server must offer; refused otherwise
    /// (the default, port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on this host or a test sink.
    None,
}

/// A kind of event a target can subscribe to (`events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyEvent {
    /// A job failed after every retry (once, until it succeeds again).
    Failure,
    /// A job that had failed succeeded.
    Recovery,
    /// A job's last success is older than 1.5 × its interval, and when it is fresh again.
    Stale,
    /// The result of every recovery drill, passed or failed.
    Drill,
    /// A watched file system reached 90 % used, and when it is below again.
    Disk,
}

impl NotifyEvent {
    /// Every kind, the default subscription.
    pub const ALL: [NotifyEvent; 5] = [
        NotifyEvent::Failure,
        NotifyEvent::Recovery,
        NotifyEvent::Stale,
        NotifyEvent::Drill,
        NotifyEvent::Disk,
    ];
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    kind: Option<String>,
    url: Option<String>,
    url_file: Option<PathBuf>,
    events: Option<Vec<NotifyEvent>>,
    jobs: Option<Vec<String>>,
    smtp_host: Option<String>,
    smtp_port: Option<u16>,
    tls: Option<SmtpTls>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    from: Option<String>,
    to: Option<Vec<String>>,
}

/// Resolves every `[[notify]]` entry.
pub(super) fn resolve(ld: &Loader<'_>, raw: Option<Vec<RawNotify>>) -> Result<Vec<NotifyConfig>> {
    raw.unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, entry)| resolve_one(ld, i, entry))
        .collect()
}

fn resolve_one(ld: &Loader<'_>, i: usize, raw: RawNotify) -> Result<NotifyConfig> {
    let key = |name: &str| format!("notify[{i}].{name}");
    let fail = |name: &str, what: &dyn std::fmt::Display| ld.fail(&key(name), what);
    let kind = raw.kind.as_deref().ok_or_else(|| {
        fail(
            "kind",
            &"missing: one of \"webhook\", \"slack\", \"email\", \"healthchecks\"",
        )
    })?;
    let set = |name: &str, present: bool| (name.to_string(), present);
    let url_keys = [
        set("url", raw.url.is_some()),
        set("url_file", raw.url_file.is_some()),
    ];
    let email_keys = [
        set("smtp_host", raw.smtp_host.is_some()),
        set("smtp_port", raw.smtp_port.is_some()),
        set("tls", raw.tls.is_some()),
        set("username", raw.username.is_some()),
        set("password_file", raw.password_file.is_some()),
        set("from", raw.from.is_some()),
        set("to", raw.to.is_some()),
    ];
    let jobs_key = [set("jobs", raw.jobs.is_some())];
    let events_key = [set("events", raw.events.is_some())];
    // A key of another kind is a mistake worth naming, not something to ignore.
    let refuse = |keys: &[(String, bool)]| -> Result<()> {
        match keys.iter().find(|(_, present)| *present) {
            Some((name, _)) => Err(fail(name, &format!("not a key of a {kind:?} target"))),
            None => Ok(()),
        }
    };
    let target = match kind {
        "webhook" | "slack" | "healthchecks" => {
            refuse(&email_keys)?;
            let url = read_url(ld, i, &raw)?;
            match kind {
                "webhook" => NotifyTarget::Webhook { url },
                "slack" => NotifyTarget::Slack { url },
                _ => NotifyTarget::Healthchecks { url },
            }
        }
        "email" => {
            refuse(&url_keys)?;
            NotifyTarget::Email(read_email(ld, i, &raw)?)
        }
        other => {
            return Err(fail(
                "kind",
                &format!(
                    "{other:?} is not one of \"webhook\", \"slack\", \"email\", \"healthchecks\""
                ),
            ));
        }
    };
    let healthchecks = matches!(target, NotifyTarget::Healthchecks { .. });
    if healthchecks {
        refuse(&events_key)?;
    } else {
        refuse(&jobs_key)?;
    }
    let events = match raw.events {
        None => NotifyEvent::ALL.to_vec(),
        Some(events) if events.is_empty() => {
            return Err(fail(
                "events",
                &"empty: leave it out to receive every event",
            ));
        }
        Some(mut events) => {
            events.sort();
            events.dedup();
            events
        }
    };
    let mut jobs = Vec::new();
    for name in raw.jobs.iter().flatten() {
        let job = JobName::ALL
            .into_iter()
            .find(|j| j.as_str() == name)
            .ok_or_else(|| {
                fail(
                    "jobs",
                    &format!("{name:?} is not a job (full, incremental, drill, prune, verify, files, config)"),
                )
            })?;
        if !jobs.contains(&job) {
            jobs.push(job);
        }
    }
    Ok(NotifyConfig {
        target,
        events,
        jobs,
    })
}

/// `url` or `url_file` (exactly one), checked to be an absolute `http(s)` URL. The message never
/// repeats the URL: it may carry a token.
fn read_url(ld: &Loader<'_>, i: usize, raw: &RawNotify) -> Result<Secret> {
    let (name, url) = match (&raw.url, &raw.url_file) {
        (Some(_), Some(_)) => {
            return Err(ld.fail(
                &format!("notify[{i}].url_file"),
                &"set `url` or `url_file`, not both",
            ));
        }
        (Some(url), None) => ("url", Secret::new(url.trim())),
        (None, Some(file)) => (
            "url_file",
            ld.read_secret(&format!("notify[{i}].url_file"), file)?,
        ),
        (None, None) => {
            return Err(ld.fail(
                &format!("notify[{i}].url"),
                &"missing: set `url` or `url_file`",
            ));
        }
    };
    check_url(url.expose()).map_err(|why| ld.fail(&format!("notify[{i}].{name}"), &why))?;
    Ok(url)
}

/// Whether `url` is an absolute `http://` or `https://` URL with a host; a description of the
/// problem otherwise (without the URL).
pub fn check_url(url: &str) -> std::result::Result<(), &'static str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("not an http:// or https:// URL")?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the URL contains spaces or control characters");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err("the URL has no host");
    }
    Ok(())
}

fn read_email(ld: &Loader<'_>, i: usize, raw: &RawNotify) -> Result<EmailConfig> {
    let fail =
        |name: &str, what: &dyn std::fmt::Display| ld.fail(&format!("notify[{i}].{name}"), what);
    let smtp_host = raw
        .smtp_host
        .as_deref()
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| fail("smtp_host", &"missing: the SMTP server's host name"))?
        .to_string();
    if smtp_host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(fail(
            "smtp_host",
            &format!("{smtp_host:?} is not a host name"),
        ));
    }
    let tls = raw.tls.unwrap_or(SmtpTls::Starttls);
    let smtp_port = match raw.smtp_port {
        Some(0) => return Err(fail("smtp_port", &"must be a port number from 1")),
        Some(port) => port,
        None => match tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        },
    };
    let password = match &raw.password_file {
        Some(file) => Some(ld.read_secret(&format!("notify[{i}].password_file"), file)?),
        None => None,
    };
    if password.is_some() && raw.username.is_none() {
        return Err(fail("username", &"missing: a password needs its account"));
    }
    if password.is_some() && tls == SmtpTls::None && !is_loopback(&smtp_host) {
        return Err(fail(
            "tls",
            &"\"none\" would send the password in clear to another host: use \"starttls\" or \"tls\"",
        ));
    }
    let from = raw
        .from
        .as_deref()
        .ok_or_else(|| fail("from", &"missing: the sender address"))?;
    check_address(from).map_err(|why| fail("from", &why))?;
    let to = raw.to.clone().unwrap_or_default();
    if to.is_empty() {
        return Err(fail("to", &"missing: at least one recipient address"));
    }
    for address in &to {
        check_address(address).map_err(|why| fail("to", &why))?;
    }
    Ok(EmailConfig {
        smtp_host,
        smtp_port,
        tls,
        username: raw.username.clone(),
        password,
        from: from.to_string(),
        to,
    })
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A plain `local@domain` address (a display name is not accepted: mail is from coffer).
fn check_address(address: &str) -> std::result::Result<(), String> {
    let bad = || format!("{address:?} is not an address like \"oncall@example.com\"");
    let (local, domain) = address.rsplit_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || domain.is_empty()
        || address
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'))
    {
        return Err(bad());
    }
    Ok(())
}
