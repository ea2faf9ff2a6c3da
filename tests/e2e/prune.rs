//! `coffer prune` and `backup pin`: retention carried out against a real repository.

use crate::util::{Repo, Setup, files_under};

fn full(setup: &Setup) -> String {
    let manifest = setup.run(&["backup", "run", "full", "--json"]).json();
    manifest["id"].as_str().unwrap().to_string()
}

#[test]
fn keep_last_two_deletes_the_oldest_full_unless_it_is_pinned() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    setup.append_config("\n[retention.full]\nkeep_last = 2\n");
    let ids: Vec<String> = (0..3).map(|_| full(&setup)).collect();

    // The plan names every backup with its reasons, and a dry run deletes nothing.
    let plan = setup.run(&["prune", "--dry-run", "--json"]).json();
    assert_eq!(plan["dry_run"], true);
    let items = plan["plan"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    let oldest = items.iter().find(|i| i["id"] == ids[0].as_str()).unwrap();
    assert_eq!(oldest["keep"], false, "{plan}");
    assert_eq!(
        oldest["reasons"][0],
        "not kept by [retention.full] (last 2)"
    );
    let newest = items.iter().find(|i| i["id"] == ids[2].as_str()).unwrap();
    assert_eq!(newest["reasons"][0], "[retention.full] last 2");
    assert!(
        newest["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "the newest full backup")
    );
    assert_eq!(setup.listed(None).len(), 3);

    // A pin keeps it, and says why.
    setup
        .run(&["backup", "pin", &ids[0], "--reason", "incident 42"])
        .expect_code(0);
    let plan = setup.run(&["prune", "--dry-run", "--json"]).json();
    let oldest = &plan["plan"]["items"][0];
    assert_eq!(oldest["keep"], true);
    assert_eq!(oldest["reasons"][0], "pinned: incident 42");
    setup
        .run(&["backup", "pin", &ids[1], "--reason", " "])
        .expect_code(2);

    // Unpinned, the prune deletes it: manifest and data, and nothing else.
    setup.run(&["backup", "unpin", &ids[0]]).expect_code(0);
    setup.run(&["backup", "unpin", &ids[0]]).expect_code(8);
    let done = setup.run(&["prune", "--json"]).json();
    assert_eq!(done["deleted"], serde_json::json!([ids[0]]));
    assert_eq!(setup.listed(None), ids[1..]);
    let left = files_under(&setup.repo_dir());
    assert!(!left.iter().any(|f| f.contains(&ids[0])), "{left:?}");
    for id in &ids[1..] {
        setup.run(&["backup", "verify", id]).expect_code(0);
    }
    // Idempotent: nothing more to do.
    let again = setup.run(&["prune", "--json"]).json();
    assert_eq!(again["deleted"], serde_json::json!([]));
}

#[test]
fn leftovers_of_an_unfinished_backup_are_removed_only_after_the_grace_period() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    full(&setup);
    let data = setup.repo_dir().join("data");
    let (old, fresh) = ("20261101T020000Z-full-0a0a", "20261201T020000Z-full-0b0b");
    for id in [old, fresh] {
        std::fs::create_dir_all(data.join(id)).unwrap();
        std::fs::write(data.join(id).join("dump.sql.zst.coffer-partial-1"), b"half").unwrap();
    }
    let status = std::process::Command::new("touch")
        .args(["-d", "3 days ago"])
        .arg(data.join(old).join("dump.sql.zst.coffer-partial-1"))
        .status()
        .unwrap();
    assert!(status.success());

    let plan = setup.run(&["prune", "--dry-run", "--json"]).json();
    assert_eq!(plan["orphans"], serde_json::json!([old]));
    assert!(data.join(old).exists(), "a dry run removes nothing");
    let done = setup.run(&["prune"]);
    done.expect_code(0);
    assert!(
        done.stdout
            .contains(&format!("leftovers of unfinished backup {old}")),
        "{done:?}"
    );
    assert!(
        !data
            .join(old)
            .join("dump.sql.zst.coffer-partial-1")
            .exists()
    );
    assert!(
        data.join(fresh)
            .join("dump.sql.zst.coffer-partial-1")
            .exists(),
        "a backup that may be in flight keeps its objects"
    );
    assert_eq!(setup.listed(None).len(), 1);
}

#[test]
fn a_retention_table_without_a_rule_is_a_config_error() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    setup.append_config("\n[retention.binlog]\n");
    let run = setup.run(&["prune", "--dry-run"]);
    run.expect_code(2);
    assert!(run.error_line().contains("retention.binlog"), "{run:?}");
}

#[test]
fn drill_reports_follow_their_own_rule_and_the_newest_stays() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    full(&setup);
    setup.append_config("\n[retention.drill]\nkeep_within = \"30d\"\n");
    let reports = setup.repo_dir().join("reports/drills");
    std::fs::create_dir_all(&reports).unwrap();
    let (old, older) = ("20200301T020000Z-drill-0c0c", "20200201T020000Z-drill-0d0d");
    for id in [old, older] {
        for ext in ["json", "md"] {
            std::fs::write(reports.join(format!("{id}.{ext}")), b"{}").unwrap();
        }
    }
    let plan = setup.run(&["prune", "--dry-run", "--json"]).json();
    let items = plan["drill_reports"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{plan}");
    assert_eq!(items[0]["id"], older);
    assert_eq!(items[0]["keep"], false);
    assert_eq!(
        items[0]["reasons"][0],
        "not kept by [retention.drill] (within 30d)"
    );
    assert_eq!(items[1]["reasons"][0], "the newest drill report");
    setup.run(&["prune"]).expect_code(0);
    let left = files_under(&reports);
    assert!(left.iter().all(|f| !f.contains(older)), "{left:?}");
    assert!(left.iter().any(|f| f.contains(old)), "{left:?}");
}

#[test]
fn a_prune_waits_for_the_exclusive_lock_and_gives_up_with_exit_7() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    setup.append_config("\n[retention.full]\nkeep_last = 1\n");
    let ids: Vec<String> = (0..2).map(|_| full(&setup)).collect();
    // A live shared lock of another job on this host (this test process).
    let now = jiff::Timestamp::now();
    let id = format!("{}-0123456789ab", now.strftime("%Y%m%dT%H%M%SZ"));
    let locks = setup.repo_dir().join("locks");
    std::fs::create_dir_all(&locks).unwrap();
    let record = serde_json::json!({
        "id": id, "kind": "shared", "purpose": "backup full",
        "host": coffer_core::lock::host_name(), "pid": std::process::id(),
        "created": now, "heartbeat": now, "created_by": "coffer test",
    });
    std::fs::write(locks.join(format!("{id}.json")), record.to_string()).unwrap();

    let run = setup.run(&["prune", "--lock-wait", "1"]);
    run.expect_code(7);
    assert!(run.error_line().contains("backup full"), "{run:?}");
    assert_eq!(setup.listed(None), ids, "nothing deleted without the lock");
    // A dry run takes no lock.
    setup.run(&["prune", "--dry-run"]).expect_code(0);

    std::fs::remove_file(locks.join(format!("{id}.json"))).unwrap();
    setup.run(&["prune"]).expect_code(0);
    assert_eq!(setup.listed(None), ids[1..]);
    let left = files_under(&locks);
    assert!(left.is_empty(), "the prune released its lock: {left:?}");
}

#[test]
fn a_prune_killed_at_any_point_leaves_every_listed_backup_whole_and_the_next_finishes() {
    let server = crate::util::s3s();
    let setup = Setup::new(
        Repo::S3 {
            server,
            bucket: server.new_bucket("prune-killed"),
            prefix: "repo".into(),
        },
        &["app"],
        "",
    );
    let ids: Vec<String> = (0..6).map(|_| full(&setup)).collect();
    setup.run(&["backup", "run", "incremental"]).expect_code(0);
    setup.append_config("\n[retention.full]\nkeep_last = 1\n[retention.binlog]\nkeep_last = 1\n");
    // SIGKILL after a growing delay: the first kills land before or during the deletions, the
    // last prune runs to its end. Each kill leaves a stale lock the next prune takes over.
    let mut delay_ms = 60;
    let finished = loop {
        let mut prune = setup
            .coffer(&["prune"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let killed = prune.try_wait().unwrap().is_none();
        if killed {
            prune.kill().unwrap();
        }
        let status = prune.wait().unwrap();
        // Whatever the point: every backup still listed is whole.
        for id in setup.listed(None) {
            setup.run(&["backup", "verify", &id]).expect_code(0);
        }
        if !killed {
            assert!(status.success(), "prune: {status:?}");
            break delay_ms;
        }
        assert!(delay_ms < 20_000, "prune never finished");
        delay_ms += 40;
    };
    assert!(finished > 60, "at least one prune was killed");
    let kept = setup.listed(Some("full"));
    assert_eq!(kept.last(), ids.last(), "the newest full is kept");
    // Give or take the base of the kept binlog's window.
    assert!(kept.len() <= 2, "{kept:?}");
    // And a prune after that has nothing left to do.
    let again = setup.run(&["prune", "--json"]).json();
    assert_eq!(again["deleted"], serde_json::json!([]), "{again}");
    assert_eq!(again["orphans"], serde_json::json!([]), "{again}");
}
