//! `coffer daemon`: the real binary with jobs seconds apart against the real source.

use std::time::{Duration, Instant};

use std::io::{Read, Write};

use crate::util::{Repo, Setup, free_port, signal};

/// `GET path` on 127.0.0.1:port: (status code, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let code = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Starts `coffer daemon`, its log in the setup's folder (`daemon.log`, read when a test fails).
fn spawn_daemon(setup: &Setup) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(setup.dir.path().join("daemon.log"))
        .unwrap();
    setup.coffer(&["daemon"]).stderr(log).spawn().unwrap()
}

/// Waits until the daemon answers on `port`.
fn wait_for(port: u16) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the daemon never listened"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn fulls(setup: &Setup) -> Vec<String> {
    setup.listed(Some("full"))
}

/// `state/JOB.json` of the repository whose files are in `root` (a folder repository, or the
/// bucket folder s3s-fs keeps).
fn state(root: &std::path::Path, job: &str) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(root.join(format!("state/{job}.json"))).ok()?;
    Some(serde_json::from_str(&text).unwrap())
}

fn sigterm(child: &std::process::Child) {
    signal("-TERM", &child.id().to_string());
}

#[test]
fn the_daemon_runs_its_jobs_prunes_stops_on_sigterm_and_catches_up_once() {
    let server = crate::util::s3s();
    let bucket = server.new_bucket("daemon-jobs");
    let setup = Setup::new(
        Repo::S3 {
            server,
            bucket: bucket.clone(),
            prefix: "repo".into(),
        },
        &["app"],
        "",
    );
    let root = server.data_dir.clone().unwrap().join(&bucket).join("repo");
    let root = root.as_path();
    setup.append_config(
        "\n[schedule]\nfull = \"*/3 * * * * *\"\nincremental = \"*/4 * * * * *\"\nprune = \"*/5 * * * * *\"\n\
         \n[retention.full]\nkeep_last = 2\n[retention.binlog]\nkeep_last = 1\n\n[daemon]\nshutdown_grace_seconds = 20\nretry_backoff_seconds = 1\n",
    );
    let port = free_port();
    setup.append_config(&format!("listen = \"127.0.0.1:{port}\"\n"));
    let mut daemon = spawn_daemon(&setup);
    let started = Instant::now();
    // Enough for several fulls, incrementals and prunes.
    while started.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_millis(500));
        let pruned = state(root, "prune").is_some_and(|s| s["outcome"] == "succeeded");
        let full_runs = state(root, "full").is_some();
        let incremental = state(root, "incremental").is_some_and(|s| s["outcome"] == "succeeded");
        if pruned && full_runs && incremental && started.elapsed() > Duration::from_secs(12) {
            break;
        }
    }
    wait_for(port);
    let (code, body) = get(port, "/up");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body, r#"{"status":"ok","database":"connected","queue":"running","storage":"accessible"}"#,
        "the runbook's shape, in its order"
    );
    let up: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        up,
        serde_json::json!({"status": "ok", "database": "connected", "queue": "running", "storage": "accessible"})
    );
    let (code, metrics) = get(port, "/metrics");
    assert_eq!(code, 200);
    for line in [
        "coffer_job_last_success_timestamp_seconds{job=\"full\"}",
        "coffer_job_next_run_timestamp_seconds{job=\"prune\"}",
        "coffer_job_failures_total{job=\"incremental\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }
    // The repository's status, refreshed in the background, not read at the scrape.
    let value = |name: &str| -> Option<f64> {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    assert!(
        value("coffer_backup_stored_bytes{kind=\"full\"}").is_some_and(|b| b > 0.0),
        "{metrics}"
    );
    assert!(
        value("coffer_backups{kind=\"full\"}").is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert!(
        value("coffer_backup_last_success_timestamp_seconds{kind=\"full\"}").is_some(),
        "{metrics}"
    );
    assert!(
        value("coffer_recovery_point_age_seconds").is_some(),
        "{metrics}"
    );
    assert!(
        value("coffer_locks_held{kind=\"exclusive\"}").is_some(),
        "{metrics}"
    );
    sigterm(&daemon);
    let status = daemon.wait().unwrap();
    assert!(status.success(), "daemon exit: {status:?}");

    for job in ["full", "incremental", "prune"] {
        let s = state(root, job).unwrap_or_else(|| panic!("no state for {job}"));
        assert!(
            ["succeeded", "cancelled"].contains(&s["outcome"].as_str().unwrap()),
            "{job}: {s}"
        );
    }
    assert_eq!(state(root, "prune").unwrap()["outcome"], "succeeded");
    // `coffer status` shows every scheduled job's last and next run.
    let status = setup.run(&["status", "--json"]).json();
    let jobs = status["jobs"].as_array().unwrap();
    assert_eq!(
        jobs.iter()
            .map(|j| j["job"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["full", "incremental", "prune"]
    );
    assert!(
        jobs.iter()
            .all(|j| j["next_run"].is_string() && j["last_run"]["outcome"].is_string()),
        "{status}"
    );
    // What each kind stores, the window, no drill yet, and no live lock once the daemon is gone.
    let full = status["by_kind"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "full")
        .unwrap_or_else(|| panic!("no full backups in {status}"));
    assert!(full["stored_bytes"].as_u64().unwrap() > 0, "{status}");
    assert!(full["last_success"].is_string(), "{status}");
    let window = &status["point_in_time_window"];
    if !window.is_null() {
        let (start, end): (jiff::Timestamp, jiff::Timestamp) = (
            window["start"].as_str().unwrap().parse().unwrap(),
            window["end"].as_str().unwrap().parse().unwrap(),
        );
        // The end is in whole seconds.
        assert!(start.as_second() <= end.as_second(), "{window}");
        assert!(
            fulls(&setup).contains(&window["full_backup"].as_str().unwrap().to_string()),
            "{window}"
        );
    }
    assert!(status["last_drill"].is_null(), "{status}");
    assert!(
        status["locks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["stale"] == true),
        "{status}"
    );
    // Pruned to the newest two, give or take a full that finished after the last prune (and
    // the base of the newest binlog's window, when that is an older full).
    let kept = fulls(&setup);
    assert!((2..=4).contains(&kept.len()), "{kept:?}");
    for id in &kept {
        setup.run(&["backup", "verify", id]).expect_code(0);
    }

    // Down for longer than the full's interval: on start it runs once, not once per missed time.
    let before = fulls(&setup);
    // The full now runs once a day, at a time 3 s from now: it passes while the daemon is down.
    let missed = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(3))
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::get("Asia/Riyadh").unwrap());
    setup.edit_config(
        "full = \"*/3 * * * * *\"",
        &format!(
            "full = \"{} {} {} * * *\"",
            missed.second(),
            missed.minute(),
            missed.hour()
        ),
    );
    std::thread::sleep(Duration::from_secs(6));
    let new = |setup: &Setup| -> Vec<String> {
        fulls(setup)
            .into_iter()
            .filter(|id| !before.contains(id))
            .collect()
    };
    let mut daemon = spawn_daemon(&setup);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) && new(&setup).is_empty() {
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(4));
    sigterm(&daemon);
    assert!(daemon.wait().unwrap().success());
    assert_eq!(
        new(&setup).len(),
        1,
        "one catch-up full, then the next is tomorrow"
    );
}

#[test]
fn up_is_503_naming_the_database_when_the_source_does_not_answer() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    let port = free_port();
    let dead = free_port();
    let (hook, received) = receiver();
    // Only job events: a machine whose disk is 90 % full also gets a `disk_full` alert, which
    // this test does not count.
    setup.append_config(&format!(
        "\n[schedule]\nfull = \"*/2 * * * * *\"\n\n[daemon]\nlisten = \"127.0.0.1:{port}\"\nretries = 0\n\n\
         [[notify]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{hook}/alerts\"\n\
         events = [\"failure\", \"recovery\"]\n"
    ));
    // Point the source at a port nobody listens on.
    let config = std::fs::read_to_string(&setup.config).unwrap();
    let start = config.find("port = ").unwrap();
    let end = start + config[start..].find('\n').unwrap();
    std::fs::write(
        &setup.config,
        format!("{}port = {dead}{}", &config[..start], &config[end..]),
    )
    .unwrap();
    let mut daemon = spawn_daemon(&setup);
    wait_for(port);
    let (code, body) = get(port, "/up");
    assert_eq!(code, 503, "{body}");
    let up: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(up["database"], "unreachable");
    assert_eq!(up["storage"], "accessible");
    // The full fails every two seconds: one alert for the change, not one per failure.
    let started = Instant::now();
    while received.lock().unwrap().is_empty() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(5));
    sigterm(&daemon);
    assert!(daemon.wait().unwrap().success());
    let alerts = received.lock().unwrap().clone();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert: serde_json::Value = serde_json::from_str(&alerts[0]).unwrap();
    assert_eq!(alert["event"], "failure", "{alert}");
    assert_eq!(alert["job"], "full", "{alert}");
    let state = state(&setup.repo_dir(), "full").unwrap();
    assert!(state["failures_total"].as_u64().unwrap() >= 2, "{state}");
    assert!(!alerts[0].contains("secret"), "{alerts:?}");
}

/// A webhook receiver on a free port: every request body it gets, answered 200.
fn receiver() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) == 0 {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                store
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, received)
}

/// Polls `/up` until its status code is `code` (or 30 s pass): the last body.
fn up_until(port: u16, code: u16) -> String {
    let started = Instant::now();
    loop {
        let (got, body) = get(port, "/up");
        if got == code {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "/up stayed {got}: {body}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_frozen_source_turns_up_503_a_sighup_reloads_and_sigterm_mid_backup_lists_nothing() {
    let source = crate::util::private_source(coffer_verifier::SandboxOptions {
        server_id: 1701,
        ..Default::default()
    });
    crate::util::load_bulk(&source, 60000);
    let server = crate::util::s3s();
    let setup = Setup::with_source(
        &source,
        Repo::S3 {
            server,
            bucket: server.new_bucket("daemon-frozen"),
            prefix: "repo".into(),
        },
        &["bulk"],
        crate::util::SLOW_COMPRESSION,
    );
    let port = free_port();
    setup.append_config(&format!(
        "\n[schedule]\nverify = \"0 4 * * *\"\n\n[daemon]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_seconds = 0\n"
    ));
    let mut daemon = spawn_daemon(&setup);
    wait_for(port);
    up_until(port, 200);

    // SIGSTOP: the server keeps its connections and answers nothing, as a hung host does.
    let pid = std::fs::read_to_string(source.dir().join("data/mariadbd.pid"))
        .or_else(|_| std::fs::read_to_string(source.dir().join("mariadbd.pid")))
        .unwrap();
    let pid = pid.trim().to_string();
    signal("-STOP", &pid);
    let frozen = std::panic::catch_unwind(|| up_until(port, 503));
    signal("-CONT", &pid);
    let body = frozen.unwrap();
    let up: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(up["database"], "unreachable", "{body}");
    assert_eq!(up["storage"], "accessible", "{body}");
    up_until(port, 200);

    // An invalid file on SIGHUP is logged and the running configuration kept.
    let good = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        format!("{good}\n[schedule]\nfull = \"nope\"\n"),
    )
    .unwrap();
    signal("-HUP", &daemon.id().to_string());
    std::thread::sleep(Duration::from_secs(1));
    assert!(daemon.try_wait().unwrap().is_none(), "still running");
    let log = std::fs::read_to_string(setup.dir.path().join("daemon.log")).unwrap();
    assert!(
        log.contains("the new configuration is invalid; keeping the running one"),
        "{log}"
    );
    up_until(port, 200);

    // A valid one schedules a full every two seconds; SIGTERM arrives while it dumps.
    std::fs::write(
        &setup.config,
        good.replace("verify = \"0 4 * * *\"", "full = \"*/2 * * * * *\""),
    )
    .unwrap();
    signal("-HUP", &daemon.id().to_string());
    let started = Instant::now();
    let dumps = loop {
        let out = std::process::Command::new("pgrep")
            .args([
                "-P",
                &daemon.id().to_string(),
                "-f",
                "mariadb-dump|mysqldump",
            ])
            .output()
            .unwrap();
        let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        if !pids.is_empty() {
            break pids;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the reloaded schedule never started a full: {}",
            std::fs::read_to_string(setup.dir.path().join("daemon.log")).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(700));
    sigterm(&daemon);
    let status = daemon.wait().unwrap();
    assert!(status.success(), "daemon exit: {status:?}");
    assert!(
        fulls(&setup).is_empty(),
        "nothing half-written is listed: {:?}",
        fulls(&setup)
    );
    let full = setup.run(&["status", "--json"]).json();
    let last = full["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "full")
        .map(|j| j["last_run"].clone())
        .unwrap();
    assert_eq!(last["outcome"], "cancelled", "{last}");
    // No dump outlived the daemon.
    for pid in dumps {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            state.is_empty() || state.contains(") Z "),
            "dump {pid} still running: {state}"
        );
    }
}

#[test]
fn the_daemon_runs_in_process_and_a_reload_schedules_a_new_job() {
    use coffer_core::config::{Config, ProcessEnv};
    let setup = Setup::new(Repo::Folder, &["app"], "");
    setup.append_config("\n[schedule]\nverify = \"0 4 * * *\"\n");
    let config = Config::load(&setup.config, &ProcessEnv).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (reload, configs) = tokio::sync::watch::channel(config);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let daemon = coffer_scheduler::daemon::run(configs, listener, async {
            let _ = stopped.await;
        });
        let test = async {
            let blocking = |f: Box<dyn FnOnce() -> String + Send>| tokio::task::spawn_blocking(f);
            let (code, body) = tokio::task::spawn_blocking(move || get(port, "/up"))
                .await
                .unwrap();
            assert_eq!(code, 200, "{body}");
            // The file changes; the new value goes in as a reload (what SIGHUP does).
            setup.edit_config("verify = \"0 4 * * *\"", "full = \"*/2 * * * * *\"");
            reload
                .send(Config::load(&setup.config, &ProcessEnv).unwrap())
                .unwrap();
            let started = Instant::now();
            loop {
                let config = setup.config.clone();
                let listed = blocking(Box::new(move || {
                    String::from_utf8(
                        crate::util::coffer_command()
                            .arg("--config")
                            .arg(&config)
                            .args(["backup", "list", "--json"])
                            .output()
                            .unwrap()
                            .stdout,
                    )
                    .unwrap()
                }))
                .await
                .unwrap();
                if listed.contains("\"kind\": \"full\"") || listed.contains("\"kind\":\"full\"") {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "the reloaded schedule ran no full: {listed}"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let (_, metrics) = tokio::task::spawn_blocking(move || get(port, "/metrics"))
                .await
                .unwrap();
            assert!(
                metrics.contains("coffer_job_next_run_timestamp_seconds{job=\"full\"}"),
                "{metrics}"
            );
            let _ = stop.send(());
        };
        let (result, ()) = tokio::join!(daemon, test);
        result.unwrap();
    });
    let full = state(&setup.repo_dir(), "full").unwrap();
    assert!(
        ["succeeded", "cancelled"].contains(&full["outcome"].as_str().unwrap()),
        "{full}"
    );
}
