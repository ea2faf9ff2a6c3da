//! Tampering is detected, not only damage: signed manifests and drill reports (checked by hand
//! with the real `minisign` too), readers that honour the repository marker, and manifests whose
//! name is not their id.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use coffer_core::signing::{SigningKey, VerifyKey};

use crate::util::{Repo, Run, Setup};

/// The reader commands every check below must hold for: each goes through the repository's
/// catalog in its own way.
fn readers(id: &str) -> Vec<Vec<String>> {
    [
        vec!["backup", "list"],
        vec!["backup", "list", "--json"],
        vec!["backup", "show", id],
        vec!["backup", "verify", id],
        vec!["backup", "verify", "latest"],
        // Port 1: the refusal must come before any connection to a target.
        vec![
            "restore",
            "db",
            "--latest",
            "--dry-run",
            "--target",
            "127.0.0.1:1",
        ],
        vec![
            "restore",
            "db",
            "--backup",
            id,
            "--dry-run",
            "--target",
            "127.0.0.1:1",
        ],
        vec!["status"],
        vec!["binlog", "window"],
        vec!["binlog", "find", "--table", "invoices"],
        vec!["drill", "run", "--backup", id],
    ]
    .into_iter()
    .map(|args| args.into_iter().map(String::from).collect())
    .collect()
}

/// Every reader exits 6 with an error line naming `what`.
fn every_reader_refuses(setup: &Setup, id: &str, what: &str, why: &str) {
    for args in readers(id) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = setup.run(&args);
        assert_eq!(
            run.code,
            6,
            "{why}: `coffer {}` must exit 6: {run:#?}",
            args.join(" ")
        );
        let line = run.error_line();
        assert!(
            line.contains(what),
            "{why}: `coffer {}` must name {what}: {line}",
            args.join(" ")
        );
    }
}

/// `coffer key generate --output-dir DIR` under umask 000, so a mode that only the umask made
/// private would show.
fn key_generate(dir: &Path) -> Run {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"umask 000 && exec "$0" key generate --output-dir "$1""#)
        .arg(env!("CARGO_BIN_EXE_coffer"))
        .arg(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("COFFER_") || key.starts_with("AWS_") {
            command.env_remove(key);
        }
    }
    Run::from(command.output().unwrap())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `minisign -Vm FILE -p PUBKEY`, or `None` (with a note) when minisign is not installed.
fn minisign_verify(file: &Path, public_key: &Path) -> Option<Run> {
    match Command::new("minisign")
        .arg("-Vm")
        .arg(file)
        .arg("-p")
        .arg(public_key)
        .output()
    {
        Ok(out) => Some(Run::from(out)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "note: minisign is not installed (apt-get install minisign): the by-hand check of {} is skipped",
                file.display()
            );
            None
        }
        Err(e) => panic!("cannot run minisign: {e}"),
    }
}

#[test]
fn a_signed_backup_verifies_by_hand_and_forged_or_unsigned_manifests_are_refused() {
    let setup = Setup::new(
        Repo::Folder,
        &["app"],
        "signing_key_file = \"keys/coffer.key\"\nverify_key = \"keys/coffer.pub\"\n",
    );
    let keys = setup.dir.path().join("keys");

    // The key pair: the secret half 0600 whatever the umask; never replaced.
    let generated = key_generate(&keys);
    assert_eq!(generated.code, 0, "{generated:#?}");
    assert!(
        generated.stdout.contains("verify_key = \"RW"),
        "{generated:#?}"
    );
    assert_eq!(mode(&keys.join("coffer.key")), 0o600);
    let secret = std::fs::read(keys.join("coffer.key")).unwrap();
    let again = key_generate(&keys);
    assert_eq!(again.code, 2, "{again:#?}");
    assert!(again.error_line().contains("already exists"), "{again:#?}");
    assert_eq!(std::fs::read(keys.join("coffer.key")).unwrap(), secret);

    // A backup writes its signature; the real minisign accepts it.
    let backup = setup.run(&["backup", "run", "full", "--json"]).json();
    let id = backup["id"].as_str().unwrap().to_string();
    let manifest = setup.repo_dir().join(format!("manifests/{id}.json"));
    let signature = setup
        .repo_dir()
        .join(format!("manifests/{id}.json.minisig"));
    assert!(
        signature.is_file(),
        "no signature next to {}",
        manifest.display()
    );
    if let Some(run) = minisign_verify(&manifest, &keys.join("coffer.pub")) {
        assert_eq!(run.code, 0, "minisign refuses coffer's signature: {run:#?}");
        let said = format!("{}{}", run.stdout, run.stderr);
        println!("minisign -Vm manifests/{id}.json -p keys/coffer.pub:\n{said}");
        assert!(
            said.contains("Signature and comment signature verified"),
            "{said}"
        );
        assert!(
            said.contains(&format!("file:manifests/{id}.json")),
            "{said}"
        );
    }

    // Signed and checked: every reader works, and nothing warns about unchecked signatures.
    let list = setup.run(&["backup", "list", "--json"]);
    assert_eq!(list.json().as_array().unwrap().len(), 1);
    assert!(!list.stderr.contains("not checked"), "{list:#?}");
    setup.run(&["backup", "verify", &id]).expect_code(0);

    // A forged manifest (what someone with write access to the bucket could write).
    let original = std::fs::read_to_string(&manifest).unwrap();
    let forged = original.replacen("\"host\": \"127.0.0.1\"", "\"host\": \"10.66.6.6\"", 1);
    assert_ne!(forged, original, "the manifest names its source host");
    std::fs::write(&manifest, &forged).unwrap();
    let key = format!("manifests/{id}.json");
    every_reader_refuses(&setup, &id, &key, "a forged manifest");
    assert!(
        setup
            .run(&["backup", "list"])
            .error_line()
            .contains("does not match"),
        "the refusal says why"
    );
    if let Some(run) = minisign_verify(&manifest, &keys.join("coffer.pub")) {
        assert_ne!(run.code, 0, "minisign accepts a forged manifest: {run:#?}");
    }
    std::fs::write(&manifest, &original).unwrap();

    // An unsigned manifest.
    let signature_bytes = std::fs::read(&signature).unwrap();
    std::fs::remove_file(&signature).unwrap();
    every_reader_refuses(&setup, &id, &key, "an unsigned manifest");
    assert!(
        setup
            .run(&["backup", "list"])
            .error_line()
            .contains("is not signed"),
        "the refusal says why"
    );
    std::fs::write(&signature, &signature_bytes).unwrap();
    setup.run(&["backup", "list"]).expect_code(0);

    // Signed by another key (a forger's own): refused, naming both key ids.
    let other = setup.dir.path().join("other");
    key_generate(&other).expect_code(0);
    let forger = SigningKey::from_file(&other.join("coffer.key")).unwrap();
    let ours = VerifyKey::from_file(&keys.join("coffer.pub")).unwrap();
    std::fs::write(
        &signature,
        forger.sign(original.as_bytes(), "forged").unwrap(),
    )
    .unwrap();
    let run = setup.run(&["backup", "list"]);
    run.expect_code(6);
    let line = run.error_line();
    assert!(
        line.contains(&key) && line.contains(&forger.key_id()) && line.contains(&ours.key_id()),
        "{line}"
    );
    std::fs::write(&signature, &signature_bytes).unwrap();

    // A verify key that is not the signing key's public half is a config error.
    setup.edit_config(
        "verify_key = \"keys/coffer.pub\"",
        "verify_key = \"other/coffer.pub\"",
    );
    let run = setup.run(&["backup", "list"]);
    run.expect_code(2);
    assert!(
        run.error_line().contains("repository.verify_key"),
        "{run:#?}"
    );
    // The key itself works as well as its file (a restore host needs no key file).
    setup.edit_config(
        "verify_key = \"other/coffer.pub\"",
        &format!("verify_key = \"{}\"", ours.to_base64()),
    );
    setup.run(&["backup", "list"]).expect_code(0);

    // Drill reports are checked the same way.
    let report = setup
        .repo_dir()
        .join("reports/drills/20300101T000000Z-drill-0001.json");
    std::fs::create_dir_all(report.parent().unwrap()).unwrap();
    std::fs::write(&report, "{}").unwrap();
    let run = setup.run(&["drill", "history"]);
    run.expect_code(6);
    assert!(
        run.error_line()
            .contains("reports/drills/20300101T000000Z-drill-0001.json is not signed"),
        "{run:#?}"
    );
    std::fs::remove_file(&report).unwrap();

    // Without verify_key: readers work, and say once that nothing is checked.
    setup.edit_config(&format!("verify_key = \"{}\"", ours.to_base64()), "");
    let run = setup.run(&["backup", "verify", &id]);
    run.expect_code(0);
    assert_eq!(
        run.stderr.matches("signatures are not checked").count(),
        1,
        "{run:#?}"
    );
}

#[test]
fn keys_made_by_minisign_sign_for_coffer_and_minisign_checks_coffer_keys() {
    let dir = tempfile::tempdir().unwrap();
    let Ok(made) = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(dir.path().join("m.pub"))
        .arg("-s")
        .arg(dir.path().join("m.key"))
        .output()
    else {
        println!(
            "note: minisign is not installed (apt-get install minisign): interoperability not checked"
        );
        return;
    };
    assert!(made.status.success(), "{made:#?}");
    // minisign's own unencrypted key signs; minisign's own public key file checks it.
    let key = SigningKey::from_file(&dir.path().join("m.key")).unwrap();
    let public = VerifyKey::from_file(&dir.path().join("m.pub")).unwrap();
    assert_eq!(key.verify_key(), public);
    let file = dir.path().join("manifest.json");
    std::fs::write(&file, "{\"id\": \"x\"}\n").unwrap();
    let signature = key
        .sign(&std::fs::read(&file).unwrap(), "timestamp:1\tfile:x")
        .unwrap();
    std::fs::write(dir.path().join("manifest.json.minisig"), &signature).unwrap();
    let run = minisign_verify(&file, &dir.path().join("m.pub")).unwrap();
    assert_eq!(run.code, 0, "{run:#?}");
    // And a signature minisign makes is one coffer accepts.
    std::fs::remove_file(dir.path().join("manifest.json.minisig")).unwrap();
    let signed = Command::new("minisign")
        .arg("-Sm")
        .arg(&file)
        .arg("-s")
        .arg(dir.path().join("m.key"))
        .args(["-t", "signed by hand"])
        .output()
        .unwrap();
    assert!(signed.status.success(), "{signed:#?}");
    let by_hand = std::fs::read(dir.path().join("manifest.json.minisig")).unwrap();
    assert_eq!(
        public
            .verify(&std::fs::read(&file).unwrap(), &by_hand)
            .unwrap(),
        "signed by hand"
    );
    // A public key file coffer writes is one minisign reads.
    let coffer_keys = dir.path().join("coffer");
    coffer_core::signing::generate_key_pair(&coffer_keys).unwrap();
    let ours = SigningKey::from_file(&coffer_keys.join("coffer.key")).unwrap();
    std::fs::write(
        dir.path().join("manifest.json.minisig"),
        ours.sign(&std::fs::read(&file).unwrap(), "c").unwrap(),
    )
    .unwrap();
    let run = minisign_verify(&file, &coffer_keys.join("coffer.pub")).unwrap();
    assert_eq!(run.code, 0, "{run:#?}");
}

#[test]
fn readers_honour_the_marker_and_a_manifest_must_carry_its_own_name() {
    // A missing marker in an empty repository is an empty repository.
    let setup = Setup::new(Repo::Folder, &["app"], "");
    let empty = setup.run(&["backup", "list"]);
    empty.expect_code(0);
    assert!(empty.stdout.contains("no backups in"), "{empty:#?}");

    let id = setup.run(&["backup", "run", "full", "--json"]).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let marker = setup.repo_dir().join("coffer-repository.json");
    let original = std::fs::read_to_string(&marker).unwrap();

    // A marker of a newer format, or one that is not JSON: every reader refuses, naming it.
    let newer = original.replacen("\"format_version\": 1", "\"format_version\": 2", 1);
    assert_ne!(newer, original);
    std::fs::write(&marker, &newer).unwrap();
    every_reader_refuses(
        &setup,
        &id,
        "coffer-repository.json",
        "a marker of format 2",
    );
    assert!(
        setup
            .run(&["backup", "list"])
            .error_line()
            .contains("upgrade coffer")
    );
    std::fs::write(&marker, "{\"format_version\": 1, ").unwrap();
    every_reader_refuses(
        &setup,
        &id,
        "coffer-repository.json",
        "a marker that is not JSON",
    );
    // Drill reports are behind the same marker.
    let history = setup.run(&["drill", "history"]);
    history.expect_code(6);
    assert!(
        history.error_line().contains("coffer-repository.json"),
        "{history:#?}"
    );
    // Manifests without a marker: not a repository coffer made, or its marker was deleted.
    std::fs::remove_file(&marker).unwrap();
    every_reader_refuses(
        &setup,
        &id,
        "coffer-repository.json",
        "manifests without a marker",
    );
    std::fs::write(&marker, &original).unwrap();
    setup.run(&["backup", "list"]).expect_code(0);

    // A manifest copied under another name is refused, not listed twice.
    let manifests = setup.repo_dir().join("manifests");
    let copy = manifests.join("20300101T000000Z-full-beef.json");
    std::fs::copy(manifests.join(format!("{id}.json")), &copy).unwrap();
    let run = setup.run(&["backup", "list", "--json"]);
    run.expect_code(6);
    let line = run.error_line();
    assert!(
        line.contains("manifests/20300101T000000Z-full-beef.json") && line.contains(&id),
        "{line}"
    );
    std::fs::remove_file(&copy).unwrap();

    // A manifest of a kind this coffer does not know is listed, as unknown.
    let unknown_id = "20300101T000000Z-snapshot-0001";
    std::fs::write(
        manifests.join(format!("{unknown_id}.json")),
        format!(
            "{{\"format_version\": 1, \"id\": \"{unknown_id}\", \"kind\": \"snapshot\", \
             \"started_at\": \"2030-01-01T00:00:00Z\", \"finished_at\": \"2030-01-01T00:00:05Z\", \
             \"volumes\": [{{\"name\": \"x\"}}]}}\n"
        ),
    )
    .unwrap();
    let listed = setup.run(&["backup", "list", "--json"]).json();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:#?}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[1]["id"], unknown_id);
    assert_eq!(listed[1]["kind"], "unknown");
    let text = setup.run(&["backup", "list"]);
    text.expect_code(0);
    assert!(
        text.stdout
            .lines()
            .any(|l| l.starts_with(unknown_id) && l.contains("unknown")),
        "{text:#?}"
    );
    // Full-backup readers still find the full backup.
    setup.run(&["backup", "verify", "latest"]).expect_code(0);
    let only_full = setup
        .run(&["backup", "list", "--kind", "full", "--json"])
        .json();
    assert_eq!(only_full.as_array().unwrap().len(), 1);
}
