//! A `[[files]]` source on an S3 prefix, through the binary, on Garage (a real object store,
//! with ETags in its listings): snapshot, a second snapshot that reads only the changed object,
//! restore to another prefix with content types and metadata, and one folder into a directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use coffer_core::storage::{ObjectAttrs, S3Objects, body_from_reader};

use crate::util::{Run, S3Server, coffer_command, garage};

const OBJECTS: usize = 150;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn content(n: usize, version: u64) -> Vec<u8> {
    let mut state = (n as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ version;
    (0..200 + n * 37)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Object `n`: its key under the prefix and its attributes.
fn object(n: usize) -> (String, ObjectAttrs) {
    let key = match n {
        0 => "a b/R\u{e9}sum\u{e9} \u{2603}.pdf".to_string(),
        n => format!("tenants/t{}/doc-{n:04}.pdf", n % 5),
    };
    let mut attrs = ObjectAttrs {
        content_type: Some("application/pdf".into()),
        ..Default::default()
    };
    attrs
        .metadata
        .insert("tenant".into(), format!("t{}", n % 5));
    (key, attrs)
}

async fn put(objects: &S3Objects, key: &str, bytes: Vec<u8>, attrs: &ObjectAttrs) {
    objects
        .put(key, attrs, body_from_reader(std::io::Cursor::new(bytes)))
        .await
        .unwrap();
}

/// Every object under `objects`: key → (bytes, content type, metadata).
async fn read_all(objects: &S3Objects) -> BTreeMap<String, (Vec<u8>, ObjectAttrs)> {
    use tokio::io::AsyncReadExt;
    let mut all = BTreeMap::new();
    for listed in objects.list().await.unwrap() {
        let (head, mut reader) = objects.get(&listed.key).await.unwrap();
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).await.unwrap();
        all.insert(listed.key, (bytes, head.attrs));
    }
    all
}

struct S3FilesSetup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl S3FilesSetup {
    /// A config with a folder repository and one `[[files]]` source on `s3://BUCKET/PREFIX/`.
    fn new(s3: &S3Server, bucket: &str, prefix: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ak"), &s3.access_key).unwrap();
        std::fs::write(dir.path().join("sk"), &s3.secret_key).unwrap();
        let config = dir.path().join("coffer.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"state\"\n\n[repository]\nurl = \"repo\"\n\n[[files]]\nname = \"docs\"\n\
                 url = \"s3://{bucket}/{prefix}/\"\nendpoint = \"{}\"\nregion = \"{}\"\n\
                 access_key_id_file = \"ak\"\nsecret_access_key_file = \"sk\"\n",
                s3.endpoint, s3.region
            ),
        )
        .unwrap();
        S3FilesSetup { dir, config }
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut command = coffer_command();
        command.arg("--config").arg(&self.config).args(args);
        Run::from(command.output().unwrap())
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }
}

fn files_under(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                out.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn an_s3_prefix_snapshots_and_restores_to_another_prefix_and_into_a_folder() {
    let s3 = garage();
    let bucket = s3.new_bucket("unused");
    let prefix = format!("files-src-{}", std::process::id());
    let rt = runtime();
    let source = S3Objects::new(s3.s3_config(&bucket, &prefix));
    rt.block_on(async {
        for n in 0..OBJECTS {
            let (key, attrs) = object(n);
            put(&source, &key, content(n, 1), &attrs).await;
        }
    });
    let setup = S3FilesSetup::new(s3, &bucket, &prefix);

    let first = setup.run(&["backup", "run", "files", "--json"]).json();
    assert_eq!(first[0]["source_kind"], "s3", "{first:#}");
    assert_eq!(first[0]["snapshot"]["files"], OBJECTS, "{first:#}");
    assert_eq!(first[0]["snapshot"]["read_files"], OBJECTS, "{first:#}");

    // One object rewritten (same size, new ETag), one added: only those two are read.
    rt.block_on(async {
        let (key, attrs) = object(7);
        put(&source, &key, content(7, 2), &attrs).await;
        put(&source, "tenants/new.txt", b"new\n".to_vec(), &attrs).await;
    });
    let second = setup.run(&["backup", "run", "files", "--json"]).json();
    assert_eq!(second[0]["parent"], first[0]["id"], "{second:#}");
    assert_eq!(second[0]["snapshot"]["files"], OBJECTS + 1, "{second:#}");
    assert_eq!(second[0]["snapshot"]["read_files"], 2, "{second:#}");

    // Everything, to another prefix: the same keys, bytes, content types and metadata.
    let target = format!("s3://{bucket}/{prefix}-restored/");
    setup
        .run(&["restore", "files", "--latest", "--to-s3", &target])
        .expect_code(0);
    let restored = S3Objects::new(s3.s3_config(&bucket, &format!("{prefix}-restored")));
    let (want, got) = rt.block_on(async { (read_all(&source).await, read_all(&restored).await) });
    assert_eq!(want.len(), OBJECTS + 1);
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (key, (bytes, attrs)) in &want {
        let (got_bytes, got_attrs) = &got[key];
        assert!(bytes == got_bytes, "{key}: content differs");
        assert_eq!(attrs, got_attrs, "{key}");
    }
    // A non-empty target prefix is refused, and left as it was.
    let again = setup.run(&["restore", "files", "--latest", "--to-s3", &target]);
    again.expect_code(9);
    assert!(again.error_line().contains("not empty"), "{again:#?}");

    // One folder into a directory, at its path under the target.
    let folder = setup.path("t1");
    setup
        .run(&[
            "restore",
            "files",
            "--latest",
            "--path",
            "tenants/t1/",
            "--to",
            folder.to_str().unwrap(),
        ])
        .expect_code(0);
    let on_disk = files_under(&folder);
    let expected: BTreeMap<String, Vec<u8>> = want
        .iter()
        .filter(|(key, _)| key.starts_with("tenants/t1/"))
        .map(|(key, (bytes, _))| (key.clone(), bytes.clone()))
        .collect();
    assert!(expected.len() >= 25, "{}", expected.len());
    assert_eq!(on_disk, expected);

    // Without S3 credentials of its own, a restore to S3 from a folder-only config says so.
    std::fs::write(
        setup.path("folder-only.toml"),
        "state_dir = \"state\"\n\n[repository]\nurl = \"repo\"\n",
    )
    .unwrap();
    let mut command = coffer_command();
    command
        .arg("--config")
        .arg(setup.path("folder-only.toml"))
        .args(["restore", "files", "--latest", "--to-s3", &target]);
    let run = Run::from(command.output().unwrap());
    run.expect_code(2);
    assert!(run.error_line().contains("no S3 server"), "{run:#?}");
}
