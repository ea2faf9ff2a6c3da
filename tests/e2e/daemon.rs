//! `coffer daemon`: the real binary with jobs seconds apart against the real source.

use std::time::{Duration, Instant};

use crate::util::{Repo, Setup};

fn fulls(setup: &Setup) -> Vec<String> {
    setup
        .run(&["backup", "list", "--json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["kind"] == "full")
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

fn state(setup: &Setup, job: &str) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(setup.repo_dir().join(format!("state/{job}.json"))).ok()?;
    Some(serde_json::from_str(&text).unwrap())
}

fn sigterm(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn the_daemon_runs_its_jobs_prunes_stops_on_sigterm_and_catches_up_once() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    setup.append_config(
        "\n[schedule]\nfull = \"*/3 * * * * *\"\nincremental = \"*/4 * * * * *\"\nprune = \"*/5 * * * * *\"\n\
         \n[retention.full]\nkeep_last = 2\n[retention.binlog]\nkeep_last = 1\n\n[daemon]\nshutdown_grace_seconds = 20\nretry_backoff_seconds = 1\n",
    );
    let mut daemon = setup.coffer(&["daemon"]).spawn().unwrap();
    let started = Instant::now();
    // Enough for several fulls, incrementals and prunes.
    while started.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_millis(500));
        let pruned = state(&setup, "prune").is_some_and(|s| s["outcome"] == "succeeded");
        let full_runs = state(&setup, "full").is_some();
        let incremental = state(&setup, "incremental").is_some_and(|s| s["outcome"] == "succeeded");
        if pruned && full_runs && incremental && started.elapsed() > Duration::from_secs(12) {
            break;
        }
    }
    sigterm(&daemon);
    let status = daemon.wait().unwrap();
    assert!(status.success(), "daemon exit: {status:?}");

    for job in ["full", "incremental", "prune"] {
        let s = state(&setup, job).unwrap_or_else(|| panic!("no state for {job}"));
        assert!(
            ["succeeded", "cancelled"].contains(&s["outcome"].as_str().unwrap()),
            "{job}: {s}"
        );
    }
    assert_eq!(state(&setup, "prune").unwrap()["outcome"], "succeeded");
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
    let mut daemon = setup.coffer(&["daemon"]).spawn().unwrap();
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
