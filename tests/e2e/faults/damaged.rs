//! Damaged, missing, truncated and crafted objects in the repository: each is found before
//! anything is written, reported naming the object, with exit 6.

use crate::util::{Repo, Setup, source};

#[test]
fn a_missing_artifact_is_damage_exit_6_not_an_unknown_backup() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    setup.run(&["backup", "run", "full"]).expect_code(0);
    let data = setup.repo_dir().join("data");
    let backup = std::fs::read_dir(&data)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for file in std::fs::read_dir(&backup).unwrap() {
        std::fs::remove_file(file.unwrap().path()).unwrap();
    }
    let verify = setup.run(&["backup", "verify", "latest"]);
    verify.expect_code(6);
    // Into the source itself, under a new name: verification refuses before anything is touched.
    let target = format!("127.0.0.1:{}", source().sandbox.port());
    let restore = setup.run(&[
        "restore",
        "db",
        "--latest",
        "--target",
        &target,
        "--database",
        "never_created",
    ]);
    restore.expect_code(6);
    assert!(restore.error_line().contains("missing"), "{restore:#?}");
}

#[test]
fn a_crafted_manifest_cannot_steer_a_restore_outside_its_scratch_folder() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    setup.run(&["backup", "run", "full"]).expect_code(0);
    setup.run(&["backup", "run", "incremental"]).expect_code(0);
    let binlogs = setup
        .run(&["backup", "list", "--kind", "binlog", "--json"])
        .json();
    let id = binlogs[0]["id"].as_str().unwrap().to_string();
    let path = setup.repo_dir().join(format!("manifests/{id}.json"));
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let escape = setup.dir.path().join("escaped-binlog");
    manifest["binlog_file"]["file"] =
        serde_json::json!(format!("../../../../..{}", escape.display()));
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();

    let target = format!("127.0.0.1:{}", source().sandbox.port());
    for args in [
        vec!["backup", "list"],
        vec!["binlog", "window"],
        vec![
            "restore",
            "db",
            "--at-gtid",
            "0-1-1",
            "--target",
            &target,
            "--database",
            "never_created",
        ],
    ] {
        let run = setup.run(&args);
        run.expect_code(6);
        let line = run.error_line();
        assert!(
            line.contains(&format!("manifests/{id}.json")) && line.contains("binlog file name"),
            "{args:?}: {run:#?}"
        );
    }
    assert!(
        !escape.exists(),
        "a file was written outside the scratch folder"
    );
}

#[test]
fn a_truncated_binlog_artifact_ends_the_recoverable_window() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    setup.run(&["backup", "run", "full"]).expect_code(0);
    setup.run(&["backup", "run", "incremental"]).expect_code(0);
    let before = setup.run(&["binlog", "window", "--json"]).json();
    // The binlog the full backup's snapshot lies in: the first file its window needs (other
    // tests write to the shared source, so older closed files are archived too).
    let full = setup.run(&["backup", "show", "latest", "--json"]).json();
    let snapshot_file = full["binlog"]["file"].as_str().unwrap().to_string();
    let id = std::fs::read_dir(setup.repo_dir().join("manifests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| serde_json::from_slice::<serde_json::Value>(&std::fs::read(p).unwrap()).unwrap())
        .find(|m| m["kind"] == "binlog" && m["binlog_file"]["file"] == snapshot_file.as_str())
        .map(|m| m["id"].as_str().unwrap().to_string())
        .expect("the snapshot's binlog is archived");
    let folder = setup.repo_dir().join("data").join(&id);
    let artifact = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !p.to_string_lossy().contains(".index.json"))
        .unwrap();
    let bytes = std::fs::read(&artifact).unwrap();
    std::fs::write(&artifact, &bytes[..bytes.len() / 2]).unwrap();

    let after = setup.run(&["binlog", "window", "--json"]);
    after.expect_code(6);
    let report: serde_json::Value = serde_json::from_str(&after.stdout).unwrap();
    let gaps = report["gaps"].to_string();
    assert!(
        gaps.contains("damaged") && gaps.contains("bytes on storage"),
        "{gaps}"
    );
    assert_ne!(
        report["windows"][0]["to"], before["windows"][0]["to"],
        "the window still promises the truncated file: {report:#}"
    );
}
