//! `coffer restore db`: verified before use, refused onto data unless told, hooks around it.

use std::sync::OnceLock;

use coffer_verifier::{Sandbox, SandboxOptions};

use crate::util::{Repo, Run, Setup, source_sql};

const TARGET_USER: &str = "restorer";
const TARGET_PASSWORD: &str = "r3store 'me\"";

/// One target server shared by these tests; each restores under its own database name.
fn target() -> &'static Sandbox {
    static TARGET: OnceLock<Sandbox> = OnceLock::new();
    TARGET.get_or_init(|| {
        let sandbox = Sandbox::start(SandboxOptions {
            server_id: 404,
            ..Default::default()
        })
        .unwrap();
        sandbox
            .create_user(TARGET_USER, TARGET_PASSWORD, "ALL PRIVILEGES ON *.*")
            .unwrap();
        sandbox
            .create_user("readonly", "ro", "SELECT ON *.*")
            .unwrap();
        sandbox
    })
}

fn target_sql(sql: &str) -> String {
    target().sql(sql).unwrap().trim().to_string()
}

/// `coffer restore db --latest --target 127.0.0.1:PORT …` with the target account from the environment.
fn restore(setup: &Setup, extra: &[&str]) -> Run {
    restore_as(setup, TARGET_USER, TARGET_PASSWORD, extra)
}

fn restore_as(setup: &Setup, user: &str, password: &str, extra: &[&str]) -> Run {
    let target = format!("127.0.0.1:{}", target().port());
    let mut args = vec!["restore", "db", "--latest", "--target", &target];
    args.extend_from_slice(extra);
    Run::from(
        setup
            .coffer(&args)
            .env("COFFER_TARGET_USER", user)
            .env("COFFER_TARGET_PASSWORD", password)
            .output()
            .unwrap(),
    )
}

fn checksums(sql: impl Fn(&str) -> String, db: &str) -> Vec<String> {
    [
        "users",
        "companies",
        "invoices",
        "offers",
        "payments",
        "audit_events",
    ]
    .iter()
    .map(|t| {
        sql(&format!("CHECKSUM TABLE `{db}`.`{t}`"))
            .split('\t')
            .nth(1)
            .unwrap()
            .to_string()
    })
    .collect()
}

#[test]
fn restore_reproduces_the_source_table_for_table() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    setup.run(&["backup", "run", "full"]).expect_code(0);
    let run = restore(&setup, &["--database", "restored_copy"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stdout.contains("app -> restored_copy") && run.stdout.contains(" s"),
        "{}",
        run.stdout
    );
    assert_eq!(
        checksums(target_sql, "restored_copy"),
        checksums(source_sql, "app")
    );
    assert_eq!(
        target_sql(
            "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'restored_copy'"
        ),
        "2"
    );
    assert_eq!(
        target_sql(
            "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'restored_copy'"
        ),
        "1"
    );
    assert_eq!(
        target_sql(
            "SELECT COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = 'restored_copy'"
        ),
        "1"
    );
    assert_eq!(
        target_sql("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'app'"),
        "0",
        "the rename must not create the original"
    );
}

#[test]
fn a_non_empty_target_is_refused_until_replacing_it_is_confirmed() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    setup.run(&["backup", "run", "full"]).expect_code(0);
    restore(&setup, &["--database", "occupied"]).expect_code(0);
    target_sql(
        "INSERT INTO occupied.users (name, email, password, role) VALUES ('intruder', 'x@y', 'p', 'admin')",
    );

    let refused = restore(&setup, &["--database", "occupied"]);
    refused.expect_code(9);
    assert!(
        refused.error_line().contains("occupied")
            && refused.error_line().contains("--drop-existing"),
        "{refused:#?}"
    );
    assert_eq!(
        target_sql("SELECT COUNT(*) FROM occupied.users WHERE name = 'intruder'"),
        "1",
        "nothing was touched"
    );

    let dry = restore(
        &setup,
        &["--database", "occupied", "--drop-existing", "--dry-run"],
    );
    assert_eq!(dry.code, 0, "{dry:#?}");
    assert!(dry.stdout.contains("DROPPED"), "{}", dry.stdout);

    // No terminal to confirm on: --yes is required.
    let unconfirmed = restore(&setup, &["--database", "occupied", "--drop-existing"]);
    unconfirmed.expect_code(9);
    assert!(
        unconfirmed.error_line().contains("--yes"),
        "{unconfirmed:#?}"
    );
    assert_eq!(
        target_sql("SELECT COUNT(*) FROM occupied.users WHERE name = 'intruder'"),
        "1"
    );

    let replaced = restore(
        &setup,
        &["--database", "occupied", "--drop-existing", "--yes"],
    );
    assert_eq!(replaced.code, 0, "{replaced:#?}");
    assert_eq!(
        target_sql("SELECT COUNT(*) FROM occupied.users WHERE name = 'intruder'"),
        "0"
    );
    assert_eq!(
        checksums(target_sql, "occupied"),
        checksums(source_sql, "app")
    );
}

#[test]
fn a_damaged_backup_is_refused_before_the_target_or_hooks_run() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    let marker = setup.dir.path().join("before-ran");
    setup.append_config(&format!(
        "\n[restore]\nbefore = [\"touch '{}'\"]\n",
        marker.display()
    ));
    let manifest = setup.run(&["backup", "run", "full", "--json"]).json();
    let path = setup
        .repo_dir()
        .join(manifest["artifacts"][0]["key"].as_str().unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let run = restore(&setup, &["--database", "never_created"]);
    run.expect_code(6);
    assert!(
        run.error_line().contains("SHA-256") && run.error_line().contains("not touched"),
        "{run:#?}"
    );
    assert_eq!(
        target_sql(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'never_created'"
        ),
        "0"
    );
    assert!(
        !marker.exists(),
        "the before hook ran for a refused restore"
    );
}

#[test]
fn hooks_run_around_a_restore_and_after_runs_when_it_fails() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    let (before, after) = (
        setup.dir.path().join("app-down"),
        setup.dir.path().join("app-up"),
    );
    setup.append_config(&format!(
        "\n[restore]\nbefore = [\"touch '{}'\"]\nafter = [\"touch '{}'\"]\n",
        before.display(),
        after.display()
    ));
    setup.run(&["backup", "run", "full"]).expect_code(0);
    restore(&setup, &["--database", "hooked"]).expect_code(0);
    assert!(before.exists() && after.exists());

    std::fs::remove_file(&after).unwrap();
    // An account that can read but not create: the client fails mid-restore.
    let failed = restore_as(&setup, "readonly", "ro", &["--database", "hooked_ro"]);
    failed.expect_code(5);
    assert!(
        failed.error_line().contains("mariadb client failed"),
        "{failed:#?}"
    );
    assert!(
        after.exists(),
        "the after hook must run when the restore fails"
    );
}

#[test]
fn bad_target_and_conflicting_flags_are_bad_input() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    let run = setup.run(&["restore", "db", "--latest", "--target", "nohostport"]);
    run.expect_code(2);
    assert!(run.error_line().contains("HOST:PORT"), "{run:#?}");
    setup.run(&["restore", "db"]).expect_code(2);
    setup
        .run(&["restore", "db", "--latest", "--backup", "x"])
        .expect_code(2);
}

#[test]
fn restoring_a_binlog_backup_by_id_is_refused() {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    setup.run(&["backup", "run", "full"]).expect_code(0);
    setup.run(&["backup", "run", "incremental"]).expect_code(0);
    let list = setup
        .run(&["backup", "list", "--kind", "binlog", "--json"])
        .json();
    let id = list[0]["id"].as_str().expect("a binlog backup").to_string();
    let target = format!("127.0.0.1:{}", target().port());
    for extra in [&[][..], &["--dry-run"][..]] {
        let mut args = vec!["restore", "db", "--backup", &id, "--target", &target];
        args.extend_from_slice(extra);
        let run = Run::from(
            setup
                .coffer(&args)
                .env("COFFER_TARGET_USER", TARGET_USER)
                .env("COFFER_TARGET_PASSWORD", TARGET_PASSWORD)
                .output()
                .unwrap(),
        );
        run.expect_code(2);
        assert!(run.error_line().contains("only a full backup"), "{run:#?}");
    }
}
