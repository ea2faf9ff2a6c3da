//! Full backups into S3: s3s-fs (strict about signatures and checksums) and Garage (a real store).

use crate::util::{Repo, S3Server, Setup, garage, s3s};

fn backup_list_verify(server: &S3Server, bucket: &str, prefix: &str) -> (Setup, serde_json::Value) {
    let bucket = server.new_bucket(bucket);
    let setup = Setup::new(
        Repo::S3 {
            server,
            bucket,
            prefix: prefix.into(),
        },
        &["app", "bulk"],
        "",
    );
    let manifest = setup.run(&["backup", "run", "full", "--json"]).json();
    let id = manifest["id"].as_str().unwrap();
    // `bulk` is ~35 MiB: the dump outgrows a 5 MiB part, so this is a multipart upload.
    assert!(
        manifest["artifacts"][0]["stored_size"].as_u64().unwrap() > 5 * 1024 * 1024,
        "{manifest}"
    );
    let list = setup.run(&["backup", "list", "--json"]).json();
    assert_eq!(list[0]["id"], id);
    let verify = setup.run(&["backup", "verify", id]);
    assert_eq!(verify.code, 0, "{verify:#?}");
    (setup, manifest)
}

#[test]
fn full_backup_to_s3s_fs_multipart_verified_and_damage_found() {
    let server = s3s();
    let (setup, manifest) = backup_list_verify(server, "fulls3s", "prod/db");
    let id = manifest["id"].as_str().unwrap();
    let key = manifest["artifacts"][0]["key"].as_str().unwrap();
    // s3s-fs keeps objects as plain files: flip one byte behind the server's back.
    let path = server
        .data_dir
        .as_ref()
        .unwrap()
        .join("fulls3s/prod/db")
        .join(key);
    let mut bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes[1000] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let verify = setup.run(&["backup", "verify", id]);
    verify.expect_code(6);
    assert!(verify.stdout.contains(key), "{verify:#?}");

    let check = setup.run(&["check", "--json"]).json();
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["s3_capabilities"]["multipart"], true);
    assert_eq!(
        check["s3_capabilities"]["conditional_write"], true,
        "s3s-fs honours If-None-Match"
    );
}

#[test]
fn full_backup_to_garage_is_listed_and_verified() {
    let server = garage();
    let (setup, _) = backup_list_verify(server, "backups", "coffer-e2e");
    let check = setup.run(&["check", "--json"]).json();
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["s3_capabilities"]["multipart"], true);
    assert_eq!(
        check["s3_capabilities"]["conditional_write"], false,
        "Garage ignores If-None-Match"
    );
    assert_eq!(check["s3_capabilities"]["object_lock"], false);
}
