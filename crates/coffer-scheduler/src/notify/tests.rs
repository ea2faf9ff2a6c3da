//! Alerts delivered to real local receivers: an HTTP server (axum) that records every request,
//! and a minimal SMTP server that records every command and mail. Jobs run through the real
//! daemon on a manual clock.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use coffer_core::clock::Clock;
use coffer_core::config::Config;
use coffer_core::job::JobContext;
use coffer_core::repository::Repository;
use coffer_core::storage::LocalStorage;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::*;
use crate::daemon::{Daemon, Runner};

/// One request the HTTP receiver got.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: String,
    body: String,
}

impl Request {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// An HTTP server on a free loopback port recording every request; paths under `/broken/`
/// answer 500.
struct Receiver {
    base: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let requests = Arc::new(Mutex::new(Vec::new()));
        async fn record(
            State(requests): State<Arc<Mutex<Vec<Request>>>>,
            method: Method,
            uri: Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            let path = uri.path().to_string();
            requests.lock().unwrap().push(Request {
                method: method.to_string(),
                path: path.clone(),
                headers: format!("{headers:?}"),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            if path.starts_with("/broken/") {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(record)
            .with_state(requests.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { base, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn at(&self, prefix: &str) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    fn all(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// An SMTP server that offers no STARTTLS, accepts any login and mail, and records the
/// commands and the mails (the DATA between `354` and the lone dot).
struct SmtpSink {
    port: u16,
    commands: Arc<Mutex<Vec<String>>>,
    mails: Arc<Mutex<Vec<String>>>,
}

impl SmtpSink {
    async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let commands = Arc::new(Mutex::new(Vec::new()));
        let mails = Arc::new(Mutex::new(Vec::new()));
        let (c, m) = (commands.clone(), mails.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (c, m) = (c.clone(), m.clone());
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    write.write_all(b"220 sink ESMTP\r\n").await?;
                    while let Some(line) = lines.next_line().await? {
                        c.lock().unwrap().push(line.clone());
                        let verb = line
                            .split(' ')
                            .next()
                            .unwrap_or_default()
                            .to_ascii_uppercase();
                        let answer: &[u8] = match verb.as_str() {
                            "EHLO" => b"250-sink\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n",
                            "AUTH" => b"235 ok\r\n",
                            "DATA" => {
                                write.write_all(b"354 go on\r\n").await?;
                                let mut mail = String::new();
                                while let Some(line) = lines.next_line().await? {
                                    if line == "." {
                                        break;
                                    }
                                    mail.push_str(&line);
                                    mail.push('\n');
                                }
                                m.lock().unwrap().push(mail);
                                b"250 queued\r\n"
                            }
                            "QUIT" => {
                                write.write_all(b"221 bye\r\n").await?;
                                break;
                            }
                            _ => b"250 ok\r\n",
                        };
                        write.write_all(answer).await?;
                    }
                    std::io::Result::Ok(())
                });
            }
        });
        SmtpSink {
            port,
            commands,
            mails,
        }
    }

    fn mails(&self) -> Vec<String> {
        self.mails.lock().unwrap().clone()
    }

    fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }
}

/// A configuration read from `text` (after a folder repository) in a folder of its own, so
/// `*_file` secrets can sit beside it.
fn config(dir: &tempfile::TempDir, text: &str) -> Config {
    let path = dir.path().join("coffer.toml");
    // Top-level keys come before the first table.
    let (top, text) = match text.strip_prefix("state_dir") {
        Some(rest) => rest.split_once('\n').unwrap_or((rest, "")),
        None => ("", text),
    };
    let top = if top.is_empty() {
        String::new()
    } else {
        format!("state_dir{top}\n")
    };
    let text = format!("{top}[repository]\nurl = \"repo\"\n{text}");
    Config::parse(&text, &path, &|_: &str| None).unwrap()
}

fn webhook(url: &str) -> String {
    format!("[[notify]]\nkind = \"webhook\"\nurl = \"{url}\"\n")
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn state(job: JobName, outcome: Outcome, message: &str) -> JobState {
    JobState {
        job: job.as_str().to_string(),
        last_started: at("2026-12-01T01:00:00Z"),
        last_finished: at("2026-12-01T01:05:00Z"),
        outcome,
        attempts: 3,
        message: message.to_string(),
        last_success: None,
        failures_total: 0,
        skipped_total: 0,
    }
}

fn notifier(config: &Config) -> Notifier {
    Notifier::new(&config.notify, "db1.example")
        .unwrap()
        .with_clock(Clock::manual(at("2026-12-01T01:05:00Z")))
}

fn events(requests: &[Request]) -> Vec<String> {
    requests
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn a_failure_reaches_the_webhook_as_json_with_its_fields() {
    let http = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let n = notifier(&config(&dir, &webhook(&http.url("/hook"))));
    n.job_finished(
        JobName::Full,
        &state(JobName::Full, Outcome::Failed, "the repository is away"),
        None,
    );
    n.flush().await;
    let got = http.at("/hook");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "POST");
    assert!(
        got[0].headers.contains("application/json"),
        "{}",
        got[0].headers
    );
    let body = got[0].json();
    assert_eq!(body["event"], "failure");
    assert_eq!(body["job"], "full");
    assert_eq!(body["host"], "db1.example");
    assert_eq!(body["message"], "the repository is away");
    assert_eq!(body["attempts"], 3);
    assert_eq!(body["time"], "2026-12-01T01:05:00Z");
    assert_eq!(
        body["text"],
        "full failed on db1.example: after 3 attempts: the repository is away"
    );
    assert_eq!((n.delivered(), n.failed_deliveries()), (1, 0));
}

#[tokio::test]
async fn slack_gets_one_text_field() {
    let http = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let n = notifier(&config(
        &dir,
        &format!(
            "[[notify]]\nkind = \"slack\"\nurl = \"{}\"\n",
            http.url("/services/T0/B0/x")
        ),
    ));
    n.send(&Event::DiskFull {
        path: "/var/lib/coffer".into(),
        percent_used: 93.44,
    });
    n.flush().await;
    let got = http.at("/services/");
    assert_eq!(got.len(), 1);
    let body = got[0].json();
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    assert_eq!(
        body["text"],
        "[coffer] disk 93% used on db1.example: /var/lib/coffer: 93.4% used"
    );
}

#[tokio::test]
async fn an_email_arrives_with_its_subject_and_a_plain_text_body() {
    let sink = SmtpSink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let n = notifier(&config(
        &dir,
        &format!(
            "[[notify]]\nkind = \"email\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\nfrom = \"coffer@example.com\"\nto = [\"oncall@example.com\", \"dba@example.com\"]\n",
            sink.port
        ),
    ));
    n.job_finished(
        JobName::Full,
        &state(JobName::Full, Outcome::Failed, "mariadb-dump exited 2"),
        None,
    );
    n.flush().await;
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{:?}", sink.commands());
    let mail = &mails[0];
    assert!(
        mail.contains("Subject: [coffer] full failed on db1.example"),
        "{mail}"
    );
    assert!(mail.contains("Content-Type: text/plain"), "{mail}");
    assert!(mail.contains("mariadb-dump exited 2"), "{mail}");
    assert!(mail.contains("job: full"), "{mail}");
    let commands = sink.commands();
    assert!(
        commands
            .iter()
            .any(|c| c == "MAIL FROM:<coffer@example.com>")
    );
    assert_eq!(
        commands
            .iter()
            .filter(|c| c.starts_with("RCPT TO:"))
            .count(),
        2
    );
}

#[tokio::test]
async fn healthchecks_are_pinged_at_start_success_and_fail_for_their_jobs_only() {
    let http = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let n = notifier(&config(
        &dir,
        &format!(
            "[[notify]]\nkind = \"healthchecks\"\nurl = \"{}\"\njobs = [\"full\"]\n",
            http.url("/ping/0b1c-uuid")
        ),
    ));
    for outcome in [Outcome::Succeeded, Outcome::Failed, Outcome::Failed] {
        n.job_started(JobName::Full);
        n.job_finished(JobName::Full, &state(JobName::Full, outcome, "said"), None);
    }
    n.job_started(JobName::Prune);
    n.job_finished(
        JobName::Prune,
        &state(JobName::Prune, Outcome::Failed, "x"),
        None,
    );
    n.job_started(JobName::Full);
    n.job_finished(
        JobName::Full,
        &state(JobName::Full, Outcome::Cancelled, "stopped"),
        None,
    );
    n.flush().await;
    let paths: Vec<String> = http.all().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/ping/0b1c-uuid/start",
            "/ping/0b1c-uuid",
            "/ping/0b1c-uuid/start",
            "/ping/0b1c-uuid/fail",
            "/ping/0b1c-uuid/start",
            "/ping/0b1c-uuid/fail",
            "/ping/0b1c-uuid/start",
        ],
        "every run pinged, in order; a cancelled run ends with no ping"
    );
    assert_eq!(http.all()[3].body, "said");
    assert!(http.all().iter().all(|r| r.method == "POST"));
}

#[tokio::test]
async fn a_failure_message_past_ten_kib_is_cut() {
    let http = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let n = notifier(&config(
        &dir,
        &format!(
            "[[notify]]\nkind = \"healthchecks\"\nurl = \"{}\"\n",
            http.url("/ping/u")
        ),
    ));
    let long = "é".repeat(8000);
    n.job_finished(
        JobName::Full,
        &state(JobName::Full, Outcome::Failed, &long),
        None,
    );
    n.flush().await;
    let body = &http.at("/ping/u/fail")[0].body;
    assert!(body.len() <= MAX_MESSAGE_BYTES && body.len() > MAX_MESSAGE_BYTES - 2);
    assert!(body.chars().all(|c| c == 'é'));
}

#[tokio::test]
async fn each_change_is_told_once_and_a_restart_does_not_repeat_a_failure() {
    let http = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir, &webhook(&http.url("/hook")));
    let n = notifier(&config);
    let failed = state(JobName::Full, Outcome::Failed, "away");
    let ok = state(JobName::Full, Outcome::Succeeded, "full 20261201 done");
    n.job_finished(JobName::Full, &ok, None);
    for _ in 0..3 {
        n.job_finished(JobName::Full, &failed, None);
    }
    n.job_finished(JobName::Full, &ok, Some(&failed));
    n.job_finished(JobName::Full, &ok, Some(&ok));
    n.flush().await;
    assert_eq!(events(&http.at("/hook")), ["failure", "recovery"]);

    // A new process whose recorded state says the job was failing: no second failure, and its
    // next success is a recovery.
    let restarted = notifier(&config);
    restarted.job_finished(JobName::Full, &failed, Some(&failed));
    restarted.job_finished(JobName::Full, &ok, Some(&failed));
    restarted.flush().await;
    assert_eq!(
        events(&http.at("/hook")),
        ["failure", "recovery", "recovery"]
    );
}

#[tokio::test]
async fn staleness_and_disk_are_told_when_they_begin_and_when_they_end() {
    let http = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let n = notifier(&config(&dir, &webhook(&http.url("/hook"))));
    let last = Some(at("2026-11-28T01:00:00Z"));
    n.staleness(JobName::Full, false, last);
    n.staleness(JobName::Full, true, last);
    n.staleness(JobName::Full, true, last);
    n.staleness(JobName::Full, false, last);
    n.staleness(JobName::Full, false, last);
    let path = std::path::Path::new("/var/lib/coffer");
    for percent in [50.0, 90.0, 97.0, 89.9, 12.0] {
        n.disk(path, percent);
    }
    n.flush().await;
    let got = http.at("/hook");
    assert_eq!(
        events(&got),
        ["stale", "fresh", "disk_full", "disk_recovered"]
    );
    assert_eq!(got[0].json()["last_success"], "2026-11-28T01:00:00Z");
    assert_eq!(got[2].json()["path"], "/var/lib/coffer");
    assert_eq!(got[2].json()["percent_used"], 90.0);
}

#[tokio::test]
async fn every_drill_run_sends_its_result_and_no_failure_event() {
    let http = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let n = notifier(&config(&dir, &webhook(&http.url("/hook"))));
    let passed = state(
        JobName::Drill,
        Outcome::Succeeded,
        "drill 20261206-drill passed",
    );
    let failed = state(
        JobName::Drill,
        Outcome::Failed,
        "drill 20261207-drill failed: data check",
    );
    n.job_finished(JobName::Drill, &passed, None);
    n.job_finished(JobName::Drill, &passed, Some(&passed));
    n.job_finished(JobName::Drill, &failed, Some(&passed));
    n.flush().await;
    let got = http.at("/hook");
    assert_eq!(events(&got), ["drill", "drill", "drill"]);
    let passes: Vec<bool> = got
        .iter()
        .map(|r| r.json()["passed"].as_bool().unwrap())
        .collect();
    assert_eq!(passes, [true, true, false]);
    assert_eq!(
        got[2].json()["message"],
        "drill 20261207-drill failed: data check"
    );
}

#[tokio::test]
async fn a_target_gets_only_the_events_it_subscribed_to() {
    let http = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let n = notifier(&config(
        &dir,
        &format!(
            "{}events = [\"disk\"]\n{}",
            webhook(&http.url("/disk-only")),
            webhook(&http.url("/all"))
        ),
    ));
    n.job_finished(
        JobName::Full,
        &state(JobName::Full, Outcome::Failed, "away"),
        None,
    );
    n.disk(std::path::Path::new("/srv"), 95.0);
    n.flush().await;
    assert_eq!(events(&http.at("/disk-only")), ["disk_full"]);
    assert_eq!(events(&http.at("/all")), ["failure", "disk_full"]);
}

#[tokio::test]
async fn reconfiguring_keeps_the_memory_of_what_was_sent() {
    let http = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let n = notifier(&config(&dir, &webhook(&http.url("/old"))));
    let failed = state(JobName::Full, Outcome::Failed, "away");
    n.job_finished(JobName::Full, &failed, None);
    n.flush().await;
    n.reconfigure(&config(&dir, &webhook(&http.url("/new"))).notify)
        .unwrap();
    n.job_finished(JobName::Full, &failed, None);
    n.job_finished(
        JobName::Full,
        &state(JobName::Full, Outcome::Succeeded, "done"),
        None,
    );
    n.flush().await;
    assert_eq!(events(&http.at("/old")), ["failure"]);
    assert_eq!(events(&http.at("/new")), ["recovery"]);
}

#[tokio::test]
async fn no_secret_reaches_any_payload() {
    let http = Receiver::start().await;
    let sink = SmtpSink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let slack_path = "/services/T0/B0/slack-token-5ecret";
    std::fs::write(dir.path().join("slack-url"), http.url(slack_path) + "\n").unwrap();
    std::fs::write(dir.path().join("smtp-password"), "hunter2-smtp\n").unwrap();
    let config = config(
        &dir,
        &format!(
            "{}[[notify]]\nkind = \"slack\"\nurl_file = \"slack-url\"\n\
             [[notify]]\nkind = \"email\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\nusername = \"coffer\"\npassword_file = \"smtp-password\"\nfrom = \"coffer@example.com\"\nto = [\"oncall@example.com\"]\n\
             [[notify]]\nkind = \"healthchecks\"\nurl = \"{}\"\n",
            webhook(&http.url("/hook/hook-token-5ecret")),
            sink.port,
            http.url("/ping/ping-uuid-5ecret"),
        ),
    );
    let n = notifier(&config);
    n.job_started(JobName::Full);
    n.job_finished(
        JobName::Full,
        &state(JobName::Full, Outcome::Failed, "the repository is away"),
        None,
    );
    n.job_finished(
        JobName::Full,
        &state(JobName::Full, Outcome::Succeeded, "done"),
        None,
    );
    n.staleness(JobName::Drill, true, None);
    n.disk(std::path::Path::new("/srv"), 99.0);
    n.flush().await;
    assert_eq!(n.failed_deliveries(), 0);
    assert!(sink.mails().len() >= 4, "{:?}", sink.commands());
    assert!(
        sink.commands().iter().any(|c| c.starts_with("AUTH")),
        "it logged in"
    );
    let secrets = [
        "slack-token-5ecret",
        "hook-token-5ecret",
        "ping-uuid-5ecret",
        "hunter2-smtp",
    ];
    for request in http.all() {
        for secret in secrets {
            let own_path = request.path.contains(secret);
            assert!(
                !request.body.contains(secret) && !request.headers.contains(secret),
                "{secret} in {request:?}"
            );
            // The only place a URL's token appears is that same target's own request line.
            if own_path {
                assert!(secret != "hunter2-smtp");
            }
        }
    }
    for mail in sink.mails() {
        for secret in secrets {
            assert!(!mail.contains(secret), "{secret} in {mail}");
        }
    }
    // The payloads that reach a receiver say what happened, and only that.
    for request in http.at("/hook/") {
        let body = request.json();
        for key in body.as_object().unwrap().keys() {
            assert!(
                [
                    "event",
                    "host",
                    "time",
                    "text",
                    "job",
                    "message",
                    "attempts",
                    "last_success",
                    "passed",
                    "path",
                    "percent_used"
                ]
                .contains(&key.as_str()),
                "{key}"
            );
        }
    }
    assert!(!format!("{n:?}").contains("5ecret"));
}

#[tokio::test]
async fn a_target_that_is_down_is_logged_and_holds_up_nothing() {
    let http = Receiver::start().await;
    // A port nobody listens on, and a server that accepts and never answers.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}/hook", silent.local_addr().unwrap());
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let n = notifier(&config(
        &dir,
        &format!(
            "{}{}{}{}",
            webhook(&format!("http://{closed}/hook")),
            webhook(&silent_url),
            webhook(&http.url("/broken/hook")),
            webhook(&http.url("/hook")),
        ),
    ))
    .with_timeout(Duration::from_millis(500));
    let started = std::time::Instant::now();
    n.job_finished(
        JobName::Full,
        &state(JobName::Full, Outcome::Failed, "away"),
        None,
    );
    tokio::time::timeout(Duration::from_secs(5), n.flush())
        .await
        .expect("bounded by the timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(events(&http.at("/hook")), ["failure"], "the working target");
    assert_eq!(http.at("/broken/").len(), 1);
    assert_eq!((n.delivered(), n.failed_deliveries()), (1, 3));
}

#[tokio::test]
async fn starttls_required_is_not_sent_in_clear_to_a_server_without_it() {
    let sink = SmtpSink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let n = notifier(&config(
        &dir,
        &format!(
            "[[notify]]\nkind = \"email\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\nfrom = \"coffer@example.com\"\nto = [\"oncall@example.com\"]\n",
            sink.port
        ),
    ));
    n.job_finished(
        JobName::Full,
        &state(JobName::Full, Outcome::Failed, "away"),
        None,
    );
    n.flush().await;
    assert_eq!((n.delivered(), n.failed_deliveries()), (0, 1));
    assert!(sink.mails().is_empty());
    assert!(
        !sink
            .commands()
            .iter()
            .any(|c| c.starts_with("MAIL") || c.starts_with("AUTH")),
        "{:?}",
        sink.commands()
    );
}

/// Fails each job's first `fail` runs, then succeeds.
struct Flaky {
    fail: Mutex<u32>,
}

#[async_trait::async_trait]
impl Runner for Flaky {
    async fn run(&self, job: JobName, _ctx: &JobContext) -> coffer_core::Result<String> {
        let mut left = self.fail.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            return Err(coffer_core::Error::storage("the repository is away"));
        }
        Ok(format!("{job} done"))
    }
}

/// Waits (real time) until `done` holds, at most 5 s.
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_daemon_tells_three_failed_runs_once_and_pings_each_run() {
    let http = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        &dir,
        &format!(
            "[schedule]\nfull = \"0 * * * *\"\n[daemon]\nretries = 0\n{}[[notify]]\nkind = \"healthchecks\"\nurl = \"{}\"\n",
            webhook(&http.url("/hook")),
            http.url("/ping/u")
        ),
    );
    let clock = Clock::manual(at("2026-12-01T00:30:00Z"));
    let n = notifier(&config).with_clock(clock.clone());
    let repository = Arc::new(Repository::from_storage(Box::new(LocalStorage::new(
        dir.path().join("repo"),
    ))));
    let daemon = Daemon::new(
        config.schedule.clone(),
        config.daemon.clone(),
        repository,
        Arc::new(Flaky {
            fail: Mutex::new(3),
        }),
    )
    .with_notifier(n.clone());
    let root = JobContext {
        cancel: Default::default(),
        clock: clock.clone(),
    };
    let stop = Arc::new(tokio::sync::Notify::new());
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { daemon.run(&root, stop.notified()).await }
    });
    for (hour, pings) in [(1, 2), (2, 4), (3, 6), (4, 8)] {
        tokio::time::sleep(Duration::from_millis(100)).await;
        clock.set(at(&format!("2026-12-01T0{hour}:00:00Z")));
        until(|| http.at("/ping/").len() >= pings).await;
    }
    n.flush().await;
    assert_eq!(events(&http.at("/hook")), ["failure", "recovery"]);
    let pings: Vec<String> = http.at("/ping/").iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        pings,
        [
            "/ping/u/start",
            "/ping/u/fail",
            "/ping/u/start",
            "/ping/u/fail",
            "/ping/u/start",
            "/ping/u/fail",
            "/ping/u/start",
            "/ping/u"
        ]
    );
    stop.notify_one();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_watcher_tells_a_job_overdue_once_and_on_time_again_once() {
    let http = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        &dir,
        &format!(
            "state_dir = \"state\"\n[schedule]\nfull = \"0 2 * * *\"\n[daemon]\nretries = 0\n{}events = [\"stale\", \"recovery\", \"failure\"]\n",
            webhook(&http.url("/hook"))
        ),
    );
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    // 02:00 UTC daily; it runs at the first, then fails for two days.
    let clock = Clock::manual(at("2026-12-01T01:30:00Z"));
    let n = notifier(&config).with_clock(clock.clone());
    let repository = Arc::new(Repository::from_storage(Box::new(LocalStorage::new(
        dir.path().join("repo"),
    ))));
    let runner = Arc::new(Flaky {
        fail: Mutex::new(0),
    });
    let daemon = Daemon::new(
        config.schedule.clone(),
        config.daemon.clone(),
        repository,
        runner.clone(),
    )
    .with_notifier(n.clone());
    let observed = daemon.observed();
    let root = JobContext {
        cancel: Default::default(),
        clock: clock.clone(),
    };
    let stop = Arc::new(tokio::sync::Notify::new());
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { daemon.run(&root, stop.notified()).await }
    });
    let watcher = tokio::spawn(watch(
        n.clone(),
        config.clone(),
        observed.clone(),
        clock.clone(),
        {
            let stop = stop.clone();
            async move { stop.notified().await }
        },
    ));
    let step = |to: &'static str| {
        let clock = clock.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            clock.set(at(to));
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    step("2026-12-01T02:00:00Z").await;
    until(|| observed.snapshot().states.contains_key(&JobName::Full)).await;
    *runner.fail.lock().unwrap() = 2;
    step("2026-12-02T02:00:00Z").await;
    // 36 h after the last success is 1.5 × the interval: not yet late.
    step("2026-12-02T14:00:00Z").await;
    n.flush().await;
    assert_eq!(events(&http.at("/hook")), ["failure"]);
    // Past it: overdue, told once however often the watcher looks.
    step("2026-12-02T14:01:00Z").await;
    step("2026-12-02T14:02:00Z").await;
    step("2026-12-02T14:03:00Z").await;
    step("2026-12-03T02:00:00Z").await;
    step("2026-12-03T02:01:00Z").await;
    n.flush().await;
    assert_eq!(events(&http.at("/hook")), ["failure", "stale"]);
    // It succeeds again: a recovery and, at the watcher's next look, on time again.
    step("2026-12-04T02:00:00Z").await;
    step("2026-12-04T02:01:00Z").await;
    step("2026-12-04T02:02:00Z").await;
    n.flush().await;
    assert_eq!(
        events(&http.at("/hook")),
        ["failure", "stale", "recovery", "fresh"]
    );
    stop.notify_waiters();
    task.await.unwrap().unwrap();
    watcher.await.unwrap();
}
