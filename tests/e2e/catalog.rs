//! The manifest cache under `state_dir/cache/`: private, used only while the listing agrees, never
//! a way around a signature, never a way to resurrect a deleted backup.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::util::{Repo, Setup, s3s};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every `*.entry` file under the cache folder.
fn entries(state: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut folders = vec![state.join("cache")];
    while let Some(folder) = folders.pop() {
        let Ok(read) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in read.flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "entry") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn cached_manifests_on_s3_follow_the_listing_and_their_signatures() {
    let server = s3s();
    let bucket = server.new_bucket("catalog-cache");
    let setup = Setup::new(
        Repo::S3 {
            server,
            bucket: bucket.clone(),
            prefix: "repo".into(),
        },
        &["app"],
        "signing_key_file = \"keys/coffer.key\"\nverify_key = \"keys/coffer.pub\"\n",
    );
    setup.edit_config(
        "timezone = \"Asia/Riyadh\"\n",
        "timezone = \"Asia/Riyadh\"\nstate_dir = \"state\"\n",
    );
    let keys = setup.dir.path().join("keys");
    setup
        .run(&["key", "generate", "--output-dir", keys.to_str().unwrap()])
        .expect_code(0);
    let first = setup.run(&["backup", "run", "full", "--json"]).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let second = setup.run(&["backup", "run", "full", "--json"]).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let state = setup.dir.path().join("state");
    let list = |code: i32| {
        let run = setup.run(&["backup", "list", "--json"]);
        run.expect_code(code);
        run
    };
    let cold = list(0).stdout;
    let cached = entries(&state);
    assert_eq!(cached.len(), 2, "{cached:?}");
    for entry in &cached {
        assert_eq!(mode(entry), 0o600, "{}", entry.display());
        assert_eq!(mode(entry.parent().unwrap()), 0o700);
    }
    assert_eq!(mode(&state.join("cache")), 0o700);
    // Warm: the same answer.
    assert_eq!(list(0).stdout, cold);

    // A forged manifest on the server (another size and time): read again and refused.
    let objects = server
        .data_dir
        .as_ref()
        .unwrap()
        .join(&bucket)
        .join("repo/manifests");
    let manifest = objects.join(format!("{first}.json"));
    let original = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        original.replacen("\"host\": \"127.0.0.1\"", "\"host\": \"10.66.6.6\"", 1),
    )
    .unwrap();
    let refused = list(6);
    assert!(
        refused
            .error_line()
            .contains(&format!("manifests/{first}.json")),
        "{refused:#?}"
    );
    std::fs::write(&manifest, &original).unwrap();
    assert_eq!(list(0).stdout, cold);

    // Its signature gone: refused as unsigned, cached or not.
    let signature = objects.join(format!("{first}.json.minisig"));
    let signature_bytes = std::fs::read(&signature).unwrap();
    std::fs::remove_file(&signature).unwrap();
    assert!(list(6).error_line().contains("is not signed"));
    std::fs::write(&signature, &signature_bytes).unwrap();

    // Another verify key: what this one checked is not taken on trust.
    let other = setup.dir.path().join("other-keys");
    setup
        .run(&["key", "generate", "--output-dir", other.to_str().unwrap()])
        .expect_code(0);
    setup.edit_config(
        "verify_key = \"keys/coffer.pub\"",
        "verify_key = \"other-keys/coffer.pub\"",
    );
    setup.edit_config(
        "signing_key_file = \"keys/coffer.key\"",
        "signing_key_file = \"other-keys/coffer.key\"",
    );
    assert_eq!(list(6).code, 6);
    setup.edit_config(
        "verify_key = \"other-keys/coffer.pub\"",
        "verify_key = \"keys/coffer.pub\"",
    );
    setup.edit_config(
        "signing_key_file = \"other-keys/coffer.key\"",
        "signing_key_file = \"keys/coffer.key\"",
    );

    // A damaged entry is ignored and rewritten; a deleted backup is not listed from the cache,
    // and its entry goes.
    for entry in entries(&state) {
        std::fs::write(&entry, "not an entry").unwrap();
    }
    assert_eq!(list(0).stdout, cold);
    assert!(entries(&state).iter().all(|e| {
        std::fs::read(e)
            .unwrap()
            .starts_with(b"coffer-manifest-cache 1\n")
    }));
    std::fs::remove_file(&manifest).unwrap();
    std::fs::remove_file(&signature).unwrap();
    let listed = list(0).json();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str()]);
    assert_eq!(entries(&state).len(), 1);
}
