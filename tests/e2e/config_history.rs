//! Configuration history: versions taken only on change, masked diffs, byte-exact restores,
//! encrypted repositories and the git mirror, on a folder repository (no database).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{Run, coffer_command};

/// A test's folder: the config files under `etc/`, a folder repository, a state dir.
struct ConfigSetup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl ConfigSetup {
    /// A config with only `[repository]` (plus `repository_extra`) and one `[[config_backup]]`
    /// table over `etc/app/.env` and `etc/nginx/**/*.conf` (plus `table_extra`).
    fn new(repository_extra: &str, table_extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/app")).unwrap();
        std::fs::create_dir_all(dir.path().join("etc/nginx/sites")).unwrap();
        let root = dir.path().display();
        let text = format!(
            "state_dir = \"{root}/state\"\n\n[repository]\nurl = \"repo\"\n{repository_extra}\n\n\
             [[config_backup]]\npaths = [\"{root}/etc/app/.env\", \"{root}/etc/nginx/**/*.conf\"]\n{table_extra}\n"
        );
        let config = dir.path().join("coffer.toml");
        std::fs::write(&config, text).unwrap();
        ConfigSetup { dir, config }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn env_file(&self) -> String {
        self.path("etc/app/.env").display().to_string()
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut command = coffer_command();
        command.arg("--config").arg(&self.config).args(args);
        Run::from(command.output().unwrap())
    }

    /// `backup run config --json`: the version written, if any.
    fn capture(&self) -> Option<String> {
        let reports = self.run(&["backup", "run", "config", "--json"]).json();
        reports[0]["version"].as_str().map(str::to_string)
    }

    /// `coffer daemon` with this `[schedule]` line, its log in `daemon.log`.
    fn spawn_daemon(&self, schedule: &str) -> std::process::Child {
        let port = crate::util::free_port();
        let mut config = std::fs::read_to_string(&self.config).unwrap();
        config.push_str(&format!(
            "\n[schedule]\n{schedule}\n\n[daemon]\nlisten = \"127.0.0.1:{port}\"\n"
        ));
        std::fs::write(&self.config, config).unwrap();
        let log = std::fs::File::create(self.path("daemon.log")).unwrap();
        let mut command = coffer_command();
        command
            .arg("--config")
            .arg(&self.config)
            .arg("daemon")
            .stderr(log);
        command.spawn().unwrap()
    }

    /// Waits up to 30 s for `done`, failing with `what` and the daemon's log.
    fn wait_until(&self, what: &str, done: &dyn Fn() -> bool) {
        let started = std::time::Instant::now();
        while !done() {
            let log = std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default();
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "{what}: {log}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    fn history(&self, path: &str) -> Vec<serde_json::Value> {
        self.run(&["config", "history", path, "--json"])
            .json()
            .as_array()
            .unwrap()
            .clone()
    }
}

const ENV_V1: &str = "APP_ENV=production\nDB_HOST=db.internal\nDB_PASSWORD=hunter2\n";
const ENV_V2: &str = "APP_ENV=production\nDB_HOST=db2.internal\nDB_PASSWORD=hunter2\n";

/// Replaces `path` the way editors do: a new file renamed over the old one.
fn replace_by_rename(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp-edit");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_version_is_taken_only_when_a_content_changes() {
    let setup = ConfigSetup::new("", "");
    let env = setup.env_file();
    std::fs::write(&env, ENV_V1).unwrap();
    std::fs::write(
        setup.path("etc/nginx/sites/app.conf"),
        "server { listen 80; }\n",
    )
    .unwrap();
    std::fs::write(setup.path("etc/nginx/sites/readme.txt"), "not matched\n").unwrap();

    let first = setup.capture().expect("the first run takes a version");
    assert_eq!(setup.capture(), None, "no change, no version");
    // A touch changes the mtime, not the content: still no version.
    let file = std::fs::File::options().append(true).open(&env).unwrap();
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    drop(file);
    assert_eq!(setup.capture(), None, "an mtime alone is no change");

    std::fs::write(&env, ENV_V2).unwrap();
    let second = setup.capture().expect("an in-place edit takes one version");
    assert_eq!(setup.capture(), None);

    replace_by_rename(
        &setup.path("etc/nginx/sites/app.conf"),
        "server { listen 443; }\n",
    );
    let third = setup
        .capture()
        .expect("a replace by rename takes one version");
    assert_eq!(setup.capture(), None);

    let history = setup.history(&env);
    let ids: Vec<&str> = history.iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str()], "{history:#?}");
    assert_eq!(history[0]["change"], "added");
    assert_eq!(history[1]["change"], "modified");
    assert_eq!(history[1]["path"], env.as_str());
    assert_eq!(history[1]["size"], ENV_V2.len());
    let time = history[1]["time"].as_str().unwrap();
    assert!(time.parse::<jiff::Timestamp>().is_ok(), "RFC 3339: {time}");

    let conf = setup.path("etc/nginx/sites/app.conf").display().to_string();
    let conf_history = setup.history(&conf);
    let ids: Vec<&str> = conf_history
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str(), third.as_str()]);
    let unmatched = setup
        .path("etc/nginx/sites/readme.txt")
        .display()
        .to_string();
    assert!(
        setup.history(&unmatched).is_empty(),
        "only globbed files are versioned"
    );

    // A deleted file is one more version, recorded as a deletion.
    std::fs::remove_file(&conf).unwrap();
    let fourth = setup.capture().expect("a deletion takes a version");
    let conf_history = setup.history(&conf);
    assert_eq!(conf_history.last().unwrap()["id"], fourth.as_str());
    assert_eq!(conf_history.last().unwrap()["change"], "deleted");
}

#[test]
fn the_diff_masks_secrets_and_a_restore_gives_the_old_bytes_back() {
    let setup = ConfigSetup::new("", "");
    let env = setup.env_file();
    std::fs::write(&env, ENV_V1).unwrap();
    std::fs::set_permissions(&env, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let first = setup.capture().unwrap();
    std::fs::write(&env, ENV_V2.replace("hunter2", "hunter3")).unwrap();
    let second = setup.capture().unwrap();

    let run = setup.run(&["config", "diff", &env]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stdout.contains("-DB_HOST=db.internal"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("+DB_HOST=db2.internal"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("hunter2") && !run.stderr.contains("hunter2"),
        "{run:#?}"
    );
    assert!(!run.stdout.contains("hunter3"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&first) && run.stdout.contains(&second),
        "the headers name the versions: {}",
        run.stdout
    );
    // The password changed: the line shows it, without either value.
    assert!(
        run.stdout.contains("-DB_PASSWORD=********\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("+DB_PASSWORD=******** (changed)\n"),
        "{}",
        run.stdout
    );

    let explicit = setup.run(&["config", "diff", &env, "--from", &first, "--to", &second]);
    assert_eq!(explicit.stdout, run.stdout);
    let unknown = setup.run(&["config", "diff", &env, "--from", "../etc/passwd"]);
    assert_eq!(unknown.code, 2, "a malformed id is bad input: {unknown:#?}");

    let restored = setup.path("restored.env");
    let to = restored.display().to_string();
    setup
        .run(&["restore", "config", &env, "--version", &first, "--to", &to])
        .expect_code(0);
    assert_eq!(std::fs::read(&restored).unwrap(), ENV_V1.as_bytes());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&restored).unwrap().permissions(),
    );
    assert_eq!(mode & 0o7777, 0o640, "the recorded mode");

    let refused = setup.run(&["restore", "config", &env, "--version", &second, "--to", &to]);
    assert_ne!(refused.code, 0, "an existing file is refused");
    assert_eq!(std::fs::read(&restored).unwrap(), ENV_V1.as_bytes());
    setup
        .run(&["restore", "config", &env, "--to", &to, "--overwrite"])
        .expect_code(0);
    assert_eq!(
        std::fs::read_to_string(&restored).unwrap(),
        ENV_V2.replace("hunter2", "hunter3"),
        "the default is the newest version"
    );
}

#[test]
fn without_a_recipient_every_run_warns() {
    let setup = ConfigSetup::new("", "");
    std::fs::write(setup.env_file(), ENV_V1).unwrap();
    for _ in 0..2 {
        let run = setup.run(&["backup", "run", "config"]);
        assert_eq!(run.code, 0, "{run:#?}");
        assert!(
            run.stderr
                .contains("coffer: warning: no encryption recipient"),
            "{}",
            run.stderr
        );
    }
}

fn age_keypair() -> (String, String) {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    (
        identity.to_string().expose_secret().to_string(),
        identity.to_public().to_string(),
    )
}

#[test]
fn an_encrypted_history_needs_the_identity_and_stores_no_plain_text() {
    let (secret, public) = age_keypair();
    let setup = ConfigSetup::new(&format!("encryption_recipient = \"{public}\"\n"), "");
    let identity = setup.path("identity.txt");
    std::fs::write(&identity, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(
        &identity,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let identity = identity.display().to_string();
    let env = setup.env_file();
    std::fs::write(&env, ENV_V1).unwrap();
    let run = setup.run(&["backup", "run", "config"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        !run.stderr.contains("no encryption recipient"),
        "{}",
        run.stderr
    );
    std::fs::write(&env, ENV_V2).unwrap();
    let second = setup.capture().unwrap();

    for file in crate::util::files_under(&setup.path("repo")) {
        let bytes = std::fs::read(setup.path("repo").join(&file)).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("hunter2") && !text.contains("db2.internal"),
            "{file} holds the plain text"
        );
    }

    let without = setup.run(&["config", "diff", &env]);
    assert_eq!(without.code, 2, "{without:#?}");
    assert!(
        without.error_line().contains("--identity-file"),
        "{without:#?}"
    );
    let with = setup.run(&["config", "diff", &env, "--identity-file", &identity]);
    assert_eq!(with.code, 0, "{with:#?}");
    assert!(
        with.stdout.contains("+DB_HOST=db2.internal"),
        "{}",
        with.stdout
    );
    assert!(!with.stdout.contains("hunter2"));

    let to = setup.path("restored.env").display().to_string();
    let without = setup.run(&["restore", "config", &env, "--version", &second, "--to", &to]);
    assert_eq!(without.code, 2, "{without:#?}");
    assert!(!Path::new(&to).exists());

    // Another host (its own state dir, no local chunk-id key) recovers the key with the identity.
    let other = setup.path("other.toml");
    let text = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace("/state\"", "/other-state\"");
    std::fs::write(&other, text).unwrap();
    let mut command = coffer_command();
    command.arg("--config").arg(&other).args([
        "restore",
        "config",
        &env,
        "--version",
        &second,
        "--to",
        &to,
        "--identity-file",
        &identity,
    ]);
    let run = Run::from(command.output().unwrap());
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(std::fs::read(&to).unwrap(), ENV_V2.as_bytes());
}

#[test]
fn the_git_mirror_gets_one_masked_commit_per_version() {
    let root = tempfile::tempdir().unwrap();
    let mirror = root.path().join("config.git");
    let setup = ConfigSetup::new("", &format!("git_mirror = \"{}\"\n", mirror.display()));
    let env = setup.env_file();
    std::fs::write(&env, ENV_V1).unwrap();
    setup.capture().unwrap();
    assert_eq!(setup.capture(), None);
    std::fs::write(&env, ENV_V2).unwrap();
    let second = setup.capture().unwrap();

    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg(format!("--git-dir={}", mirror.display()))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(git(&["rev-list", "--count", "HEAD"]).trim(), "2");
    let log = git(&["log", "-p"]);
    assert!(!log.contains("hunter2"), "{log}");
    assert!(log.contains("DB_PASSWORD=********"), "{log}");
    assert!(log.contains("+DB_HOST=db2.internal"), "{log}");
    assert!(log.contains(&format!("Coffer-Version: {second}")), "{log}");
    let tree_path = env.trim_start_matches('/');
    let files = git(&["ls-tree", "-r", "--name-only", "HEAD"]);
    assert!(files.lines().any(|l| l == tree_path), "{files}");

    // A mirror that lost the newest version catches up on the next run, with no new version.
    std::fs::remove_dir_all(&mirror).unwrap();
    assert_eq!(setup.capture(), None);
    assert_eq!(git(&["rev-list", "--count", "HEAD"]).trim(), "1");
    let log = git(&["log", "-p"]);
    assert!(log.contains(&format!("Coffer-Version: {second}")), "{log}");
    assert!(
        log.contains("DB_HOST=db2.internal") && !log.contains("hunter2"),
        "{log}"
    );
    assert_eq!(setup.capture(), None);
    assert_eq!(
        git(&["rev-list", "--count", "HEAD"]).trim(),
        "1",
        "caught up once"
    );
}

#[test]
fn the_daemon_takes_versions_on_its_config_schedule() {
    let setup = ConfigSetup::new("", "");
    let env = setup.env_file();
    std::fs::write(&env, ENV_V1).unwrap();
    let mut daemon = setup.spawn_daemon("config = \"*/1 * * * * *\"");
    let wait_until = |what: &str, done: &dyn Fn() -> bool| setup.wait_until(what, done);
    let versions = || setup.history(&env).len();
    wait_until("the first scheduled run took no version", &|| {
        versions() == 1
    });
    std::fs::write(&env, ENV_V2).unwrap();
    wait_until("the edit was never versioned", &|| versions() == 2);
    // Further runs without a change take nothing more.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(versions(), 2);
    let state = std::fs::read_to_string(setup.path("repo/state/config.json")).unwrap();
    assert!(state.contains("succeeded"), "{state}");
    crate::util::signal("-TERM", &daemon.id().to_string());
    daemon.wait().unwrap();
}

#[test]
fn the_daemon_polls_the_files_every_poll_interval_without_a_schedule() {
    let setup = ConfigSetup::new("", "poll_interval = \"1s\"\n");
    let env = setup.env_file();
    std::fs::write(&env, ENV_V1).unwrap();
    // A schedule that names no config job (and nothing due during the test).
    let mut daemon = setup.spawn_daemon("verify = \"0 4 1 1 *\"");
    let wait_until = |what: &str, done: &dyn Fn() -> bool| setup.wait_until(what, done);
    let versions = || setup.history(&env).len();
    wait_until("the first poll took no version", &|| versions() == 1);
    replace_by_rename(Path::new(&env), ENV_V2);
    wait_until("the replaced file was never versioned", &|| versions() == 2);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(versions(), 2, "polls without a change take nothing");
    crate::util::signal("-TERM", &daemon.id().to_string());
    daemon.wait().unwrap();
}

#[test]
fn the_daemon_versions_a_watched_file_within_seconds_of_an_edit_or_a_rename() {
    // A poll an hour away and no config schedule: only the watcher can see these changes.
    let setup = ConfigSetup::new("", "poll_interval = \"1h\"\n");
    let env = setup.env_file();
    let conf = setup.path("etc/nginx/sites/app.conf");
    std::fs::write(&env, ENV_V1).unwrap();
    std::fs::write(&conf, "server { listen 80; }\n").unwrap();
    let mut daemon = setup.spawn_daemon("verify = \"0 4 1 1 *\"");
    let versions = || setup.history(&env).len();
    setup.wait_until("the first poll took no version", &|| versions() == 1);

    std::fs::write(&env, ENV_V2).unwrap();
    setup.wait_until("an edit in place was never versioned", &|| versions() == 2);
    // A file under a glob's folder, replaced the way editors do.
    let conf_text = conf.display().to_string();
    replace_by_rename(&conf, "server { listen 443; }\n");
    setup.wait_until("a replace by rename was never versioned", &|| {
        setup.history(&conf_text).len() == 2
    });
    // A file the table does not name changes nothing.
    std::fs::write(setup.path("etc/nginx/sites/notes.txt"), "x\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(versions(), 2);
    assert_eq!(setup.history(&conf_text).len(), 2);
    crate::util::signal("-TERM", &daemon.id().to_string());
    daemon.wait().unwrap();
}

/// Every chunk id named by a JSON file under `folder` (a mark's `packs[].chunks`, a version's
/// `files[].chunks`).
fn chunk_ids_under(folder: &Path, pick: fn(&serde_json::Value) -> Vec<String>) -> Vec<String> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(folder).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let value: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            ids.extend(pick(&value));
        }
    }
    ids
}

fn version_chunks(version: &serde_json::Value) -> Vec<String> {
    version["files"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["chunks"].as_array().unwrap().clone())
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_prune_drops_versions_retention_no_longer_keeps_and_never_the_chunks_kept_ones_need() {
    let setup = ConfigSetup::new("\n[retention.config]\nkeep_last = 1\n", "");
    let env = setup.env_file();
    let conf = setup.path("etc/nginx/sites/app.conf").display().to_string();
    std::fs::write(&env, ENV_V1).unwrap();
    std::fs::write(&conf, "server { listen 80; }\n").unwrap();
    let first = setup.capture().unwrap();
    let versions = setup.path("repo/configs/config");
    let first_chunks = chunk_ids_under(&versions, version_chunks);
    std::fs::write(&env, ENV_V2).unwrap();
    let second = setup.capture().unwrap();

    let dry = setup.run(&["prune", "--dry-run", "--json"]).json();
    let planned: Vec<(&str, bool)> = dry["config_versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap(), i["keep"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        planned,
        [(first.as_str(), false), (second.as_str(), true)],
        "{dry:#}"
    );
    assert!(
        setup
            .path(&format!("repo/configs/config/{first}.json"))
            .exists()
    );

    let pruned = setup.run(&["prune", "--json"]).json();
    assert!(
        !setup
            .path(&format!("repo/configs/config/{first}.json"))
            .exists(),
        "{pruned:#}"
    );
    // The first version's .env chunk is garbage now, marked; nothing the kept one names is.
    let kept = chunk_ids_under(&versions, version_chunks);
    let marked = chunk_ids_under(&setup.path("repo/gc/marks"), |mark| {
        mark["packs"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["chunks"].as_array().unwrap().clone())
            .map(|c| c.as_str().unwrap().to_string())
            .collect()
    });
    let dropped: Vec<&String> = first_chunks.iter().filter(|c| !kept.contains(c)).collect();
    assert_eq!(dropped.len(), 1, "only the .env changed");
    assert!(marked.contains(dropped[0]), "{pruned:#}");
    assert!(
        kept.iter().all(|c| !marked.contains(c)),
        "a kept version's chunk was marked as garbage: {pruned:#}"
    );

    // What is left reads as before: the unchanged file's history starts at the kept version.
    let history = setup.history(&conf);
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0]["id"], second.as_str());
    assert_eq!(history[0]["change"], "retained");
    let restored = setup.path("restored.conf");
    setup
        .run(&[
            "restore",
            "config",
            &conf,
            "--to",
            &restored.display().to_string(),
        ])
        .expect_code(0);
    assert_eq!(
        std::fs::read_to_string(&restored).unwrap(),
        "server { listen 80; }\n"
    );
}
