//! A backup that cannot see everything fails, naming what it cannot see; with
//! `allow_incomplete` it is taken and says so everywhere (issue 8, defects 3 and 10).

use crate::util::{BACKUP_GRANTS, Repo, Setup, source};

/// A config for the shared source's `app`, as account `user` (password `password`), with
/// `allow_incomplete` when asked.
fn setup_as(user: &str, password: &str, allow_incomplete: bool) -> Setup {
    let setup = Setup::new(Repo::Folder, &["app"], "");
    let extra = if allow_incomplete {
        "\nallow_incomplete = true"
    } else {
        ""
    };
    setup.edit_config(
        "user = \"coffer_backup\"",
        &format!("user = \"{user}\"{extra}"),
    );
    std::fs::write(
        setup.dir.path().join("secrets/db-password"),
        format!("{password}\n"),
    )
    .unwrap();
    setup
}

/// An account with the backup grants except TRIGGER.
fn account_without_trigger() -> (&'static str, &'static str) {
    let (user, password) = ("priv_no_trigger", "no-trigger pw");
    source()
        .sandbox
        .create_user(
            user,
            password,
            "SELECT, SHOW VIEW, EVENT, LOCK TABLES, RELOAD, BINLOG MONITOR, REPLICATION SLAVE ON *.*",
        )
        .unwrap();
    (user, password)
}

fn listed(setup: &Setup) -> Vec<serde_json::Value> {
    setup
        .run(&["backup", "list", "--json"])
        .json()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn an_account_without_trigger_cannot_back_up_and_nothing_is_listed() {
    let (user, password) = account_without_trigger();
    let setup = setup_as(user, password, false);
    let run = setup.run(&["backup", "run", "full"]);
    run.expect_code(5);
    let line = run.error_line();
    assert!(
        line.contains(&format!("the account {user}@"))
            && line.contains("cannot see triggers of app (needs TRIGGER on app.* or *.*)")
            && line.contains("allow_incomplete"),
        "{line}"
    );
    // Nothing was dumped or stored: no manifest, no data.
    assert!(listed(&setup).is_empty());
    let data = setup.repo_dir().join("data");
    assert!(
        !data.exists() || std::fs::read_dir(&data).unwrap().next().is_none(),
        "objects left under data/"
    );
    // `check` reads the grants with the same parser and names the same thing.
    let check = setup.run(&["check"]);
    check.expect_code(3);
    assert!(
        check
            .stdout
            .contains("cannot see triggers of app (needs TRIGGER on app.* or *.*)"),
        "{check:#?}"
    );
}

#[test]
fn allow_incomplete_backs_up_and_every_reader_says_what_may_be_missing() {
    let (user, password) = account_without_trigger();
    let setup = setup_as(user, password, true);
    let expected = "triggers of app (needs TRIGGER on app.* or *.*)";
    let run = setup.run(&["backup", "run", "full"]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("INCOMPLETE") && run.stdout.contains(expected),
        "{run:#?}"
    );

    let entries = listed(&setup);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["may_be_missing"], serde_json::json!([expected]));
    let manifest = setup.run(&["backup", "show", "latest", "--json"]).json();
    assert_eq!(manifest["may_be_missing"], serde_json::json!([expected]));
    // The dump really lacks the trigger: what the manifest warns about is true.
    assert_eq!(
        manifest["expectations"]["databases"][0]["triggers"],
        serde_json::json!([])
    );

    let list = setup.run(&["backup", "list"]);
    list.expect_code(0);
    assert!(
        list.stdout.contains("INCOMPLETE") && list.stdout.contains(expected),
        "{list:#?}"
    );
    let show = setup.run(&["backup", "show", "latest"]);
    show.expect_code(0);
    assert!(
        show.stdout.contains("INCOMPLETE") && show.stdout.contains(expected),
        "{show:#?}"
    );
    let verify = setup.run(&["backup", "verify", "latest"]);
    verify.expect_code(0);
    assert!(verify.stdout.contains(expected), "{verify:#?}");
    // `check` passes, and says what backups will lack.
    let check = setup.run(&["check"]);
    check.expect_code(0);
    assert!(check.stdout.contains(expected), "{check:#?}");
}

#[test]
fn select_only_on_app_hides_its_routines() {
    let (user, password) = ("priv_app_only", "app-only pw");
    let sandbox = &source().sandbox;
    sandbox
        .create_user(
            user,
            password,
            "RELOAD, BINLOG MONITOR, REPLICATION SLAVE ON *.*",
        )
        .unwrap();
    sandbox
        .sql(&format!(
            "GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON app.* TO '{user}'@'127.0.0.1';\n\
             GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON app.* TO '{user}'@'localhost';"
        ))
        .unwrap();
    let setup = setup_as(user, password, false);
    let run = setup.run(&["backup", "run", "full"]);
    run.expect_code(5);
    let line = run.error_line();
    assert!(
        line.contains("cannot see routines of app (needs SELECT on *.* or on mysql.proc)"),
        "{line}"
    );
    // Tables, views, triggers and events of app are visible: only routines are named.
    for visible in ["tables of", "views of", "triggers of", "events of"] {
        assert!(!line.contains(visible), "{line}");
    }
    assert!(listed(&setup).is_empty());

    // SELECT on mysql.proc is what shows routines: then the backup is complete, routines in it.
    sandbox
        .sql(&format!(
            "GRANT SELECT ON mysql.proc TO '{user}'@'127.0.0.1';\n\
             GRANT SELECT ON mysql.proc TO '{user}'@'localhost';"
        ))
        .unwrap();
    let manifest = setup.run(&["backup", "run", "full", "--json"]).json();
    assert!(manifest.get("may_be_missing").is_none(), "{manifest:#}");
    assert_eq!(
        manifest["expectations"]["databases"][0]["routines"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{manifest:#}"
    );
}

#[test]
fn the_full_backup_grants_still_pass() {
    let (user, password) = ("priv_full", "full pw");
    source()
        .sandbox
        .create_user(user, password, BACKUP_GRANTS)
        .unwrap();
    let setup = setup_as(user, password, false);
    let check = setup.run(&["check"]);
    check.expect_code(0);
    assert!(check.stdout.contains("privileges sufficient"), "{check:#?}");
    let manifest = setup.run(&["backup", "run", "full", "--json"]).json();
    assert!(manifest.get("may_be_missing").is_none(), "{manifest:#}");
    let app = &manifest["expectations"]["databases"][0];
    assert_eq!(app["triggers"].as_array().unwrap().len(), 1, "{app:#}");
    assert_eq!(app["routines"].as_array().unwrap().len(), 2, "{app:#}");
    assert_eq!(listed(&setup)[0]["may_be_missing"], serde_json::json!([]));
}
