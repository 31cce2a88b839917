//! The mirror's own checks of Go modules (`goproxy::checksum`), against the
//! real thing: `h1:` hashes compared with what the `go` command computes for
//! zips from the tests' GOPROXY tree and zips Go's own writer made, and
//! lookups verified against a real checksum database (golang.org/x/mod/sumdb,
//! tests/go/sumdbserver), including one that forks and one that is down.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use common::go::{
    GoEnv, GoVersion, ModuleVersion, StaticProxy, SumdbServer, build_x_mod_tool, escape,
    standard_modules, write_tree,
};
use common::process;
use mirror::checksum::{
    Answer, Database, Fetch, FetchError, H1, ModulePath, SignedTree, SumFile, Verified,
    VerifyError, Version,
};

const NAME: &str = "sum.checksum.test";

/// A change made to an answer in transit, by path.
type Tamper = fn(&str, Bytes) -> Bytes;

/// The database's answers as the fill path will get them: what earlier
/// proofs kept first, then the database at `base` (or nothing, when down),
/// with an optional change made to answers in transit.
struct KeptThenDatabase {
    client: reqwest::Client,
    base: Mutex<Option<String>>,
    kept: Mutex<HashMap<String, Bytes>>,
    asked: Mutex<Vec<String>>,
    tamper: Mutex<Option<Tamper>>,
}

impl KeptThenDatabase {
    fn new(base: &str) -> KeptThenDatabase {
        KeptThenDatabase {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            base: Mutex::new(Some(base.to_owned())),
            kept: Mutex::new(HashMap::new()),
            asked: Mutex::new(Vec::new()),
            tamper: Mutex::new(None),
        }
    }

    fn point_at(&self, base: Option<&str>) {
        *self.base.lock().unwrap() = base.map(str::to_owned);
    }

    fn keep(&self, proof: &[Answer]) {
        let mut kept = self.kept.lock().unwrap();
        for answer in proof {
            kept.insert(answer.path.clone(), answer.body.clone());
        }
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }

    async fn remote(&self, path: &str) -> Result<Bytes, FetchError> {
        let base = self.base.lock().unwrap().clone();
        let base = base.ok_or_else(|| FetchError::Unreachable("database down".into()))?;
        self.asked.lock().unwrap().push(path.to_owned());
        let response = self
            .client
            .get(format!("{base}/{path}"))
            .send()
            .await
            .map_err(|e| FetchError::Unreachable(e.to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| FetchError::Unreachable(e.to_string()))?;
        match status.as_u16() {
            200 => Ok(match *self.tamper.lock().unwrap() {
                Some(tamper) => tamper(path, body),
                None => body,
            }),
            404 | 410 => Err(FetchError::NotFound(
                String::from_utf8_lossy(&body).trim_end().to_owned(),
            )),
            _ => Err(FetchError::Unreachable(format!("status {status}"))),
        }
    }
}

impl Fetch for KeptThenDatabase {
    fn fetch(&self, path: &str) -> impl Future<Output = Result<Bytes, FetchError>> + Send {
        let kept = self.kept.lock().unwrap().get(path).cloned();
        let path = path.to_owned();
        async move {
            match kept {
                Some(body) => Ok(body),
                None => self.remote(&path).await,
            }
        }
    }
}

fn module(path: &str, version: &str) -> (ModulePath, Version) {
    (
        path.parse().expect("module path"),
        version.parse().expect("version"),
    )
}

fn file_in_tree(tree: &Path, path: &str, version: &str, ext: &str) -> PathBuf {
    tree.join(escape(path))
        .join("@v")
        .join(format!("{}.{ext}", escape(version)))
}

/// Looks `m` up, keeps the proof as the fill path will, and returns it.
async fn verify(
    db: &Database,
    fetch: &KeptThenDatabase,
    head: Option<&SignedTree>,
    m: &ModuleVersion,
) -> Result<Verified, VerifyError> {
    let (path, version) = module(&m.path, &m.version);
    let verified = sendable(db.lookup(fetch, head, &path, &version)).await?;
    fetch.keep(&verified.proof);
    Ok(verified)
}

/// The fill path runs lookups in spawned tasks: they must be `Send`.
fn sendable<F: Future + Send>(future: F) -> F {
    future
}

fn check_files(tree: &Path, m: &ModuleVersion, verified: &Verified) {
    let go_mod = H1::go_mod_file(&file_in_tree(tree, &m.path, &m.version, "mod")).unwrap();
    let zip = H1::zip_file(&file_in_tree(tree, &m.path, &m.version, "zip")).unwrap();
    verified.check(SumFile::GoMod, go_mod).unwrap();
    verified.check(SumFile::Zip, zip).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_records_verify_and_match_our_hashes_of_every_module() {
    let tree = tempfile::tempdir().unwrap();
    let modules = standard_modules();
    write_tree(tree.path(), &modules);
    let work = tempfile::tempdir().unwrap();
    // 300 records first: full tiles, a level-1 tile and partial ones.
    let sumdb = SumdbServer::start(work.path(), NAME, tree.path(), 300).await;
    let db = Database::new(&sumdb.vkey).unwrap();
    assert_eq!(db.name(), NAME);
    let fetch = KeptThenDatabase::new(&sumdb.url);

    let mut head: Option<SignedTree> = None;
    for m in &modules {
        let verified = verify(&db, &fetch, head.as_ref(), m).await.unwrap();
        check_files(tree.path(), m, &verified);
        let size = verified.head.tree().size;
        assert!(
            head.as_ref().is_none_or(|h| h.tree().size < size),
            "{m:?}",
            m = m.path
        );
        head = Some(verified.head);
    }
    let head = head.unwrap();
    assert_eq!(head.tree().size, 300 + modules.len() as u64);
    // A record among the first 256 is proven through a full tile below the
    // level-1 tile.
    let (filler, version) = module("fill.test/m5", "v1.0.0");
    let verified = db
        .lookup(&fetch, Some(&head), &filler, &version)
        .await
        .unwrap();
    assert_eq!(verified.head, head);
    let synthetic: H1 = "h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        .parse()
        .unwrap();
    verified.check(SumFile::Zip, synthetic).unwrap();
    let asked = fetch.asked();
    assert!(asked.iter().any(|p| p == "tile/8/0/000"), "{asked:?}");
    assert!(asked.iter().any(|p| p == "tile/8/1/000.p/1"), "{asked:?}");

    // The stored note reopens to the same head, and /latest agrees with it.
    let reopened = db.open_head(head.note().clone()).unwrap();
    assert_eq!(reopened, head);
    let (latest, _) = db.latest(&fetch, Some(&head)).await.unwrap();
    assert_eq!(latest.tree(), head.tree());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_the_database_disagrees_with_or_a_module_it_lacks_is_refused() {
    let tree = tempfile::tempdir().unwrap();
    let modules = standard_modules();
    write_tree(tree.path(), &modules);
    let work = tempfile::tempdir().unwrap();
    let sumdb = SumdbServer::start(work.path(), NAME, tree.path(), 0).await;
    let db = Database::new(&sumdb.vkey).unwrap();
    let fetch = KeptThenDatabase::new(&sumdb.url);

    let greet = &modules[0];
    let verified = verify(&db, &fetch, None, greet).await.unwrap();
    let other_zip = H1::zip_file(&file_in_tree(
        tree.path(),
        &modules[1].path,
        &modules[1].version,
        "zip",
    ))
    .unwrap();
    match verified.check(SumFile::Zip, other_zip) {
        Err(VerifyError::HashMismatch(mismatch)) => {
            assert_eq!(
                (mismatch.module.as_str(), mismatch.version.as_str()),
                ("example.com/greet", "v1.0.0")
            );
            assert_eq!(mismatch.ours, other_zip);
            assert_eq!(Some(mismatch.database), verified.zip);
            assert_eq!(mismatch.db_name, NAME);
        }
        other => panic!("{other:?}"),
    }
    let forged_mod = H1::go_mod(b"module example.com/greet\n\nrequire evil.example v1.0.0\n");
    assert!(matches!(
        verified.check(SumFile::GoMod, forged_mod),
        Err(VerifyError::HashMismatch(_))
    ));

    let (path, version) = module("example.com/greet", "v9.9.9");
    match db
        .lookup(&fetch, Some(&verified.head), &path, &version)
        .await
    {
        Err(VerifyError::NotInDatabase {
            module,
            version,
            text,
            ..
        }) => {
            assert_eq!(
                (module.as_str(), version.as_str()),
                ("example.com/greet", "v9.9.9")
            );
            assert!(text.contains("no such file"), "{text}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_or_head_changed_in_transit_or_signed_by_another_key_is_refused() {
    let tree = tempfile::tempdir().unwrap();
    let modules = standard_modules();
    write_tree(tree.path(), &modules);
    let work = tempfile::tempdir().unwrap();
    let sumdb = SumdbServer::start(work.path(), NAME, tree.path(), 20).await;
    let db = Database::new(&sumdb.vkey).unwrap();
    let fetch = KeptThenDatabase::new(&sumdb.url);

    // Another hash in the record: the log's leaf no longer matches it.
    *fetch.tamper.lock().unwrap() = Some(|path, body| {
        if !path.starts_with("lookup/") {
            return body;
        }
        let text = String::from_utf8(body.to_vec()).unwrap();
        let at = text.find(" h1:").unwrap() + 4;
        let mut bytes = text.into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        Bytes::from(bytes)
    });
    let error = verify(&db, &fetch, None, &modules[0]).await.unwrap_err();
    assert!(
        matches!(&error, VerifyError::Invalid { reason, .. } if reason.contains("does not match the log")),
        "{error}"
    );

    // Another tree size in the signed head: the signature fails.
    *fetch.tamper.lock().unwrap() = Some(|path, body| {
        if !path.starts_with("lookup/") {
            return body;
        }
        let text = String::from_utf8(body.to_vec()).unwrap();
        Bytes::from(text.replacen("tree\n2", "tree\n3", 1))
    });
    let error = verify(&db, &fetch, None, &modules[1]).await.unwrap_err();
    assert!(
        matches!(&error, VerifyError::Invalid { reason, .. } if reason.contains("invalid signature")),
        "{error}"
    );

    // A tile changed in transit: the proof fails.
    *fetch.tamper.lock().unwrap() = Some(|path, body| {
        if !path.starts_with("tile/") {
            return body;
        }
        let mut bytes = body.to_vec();
        bytes[0] ^= 1;
        Bytes::from(bytes)
    });
    let error = verify(&db, &fetch, None, &modules[2]).await.unwrap_err();
    assert!(
        matches!(&error, VerifyError::Invalid { reason, .. } if reason.contains("inconsistent")),
        "{error}"
    );
    *fetch.tamper.lock().unwrap() = None;

    // The same database name with another key: nothing it signed opens.
    let other_key = another_key(NAME);
    let impostor = Database::new(&other_key).unwrap();
    let error = verify(&impostor, &fetch, None, &modules[3])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, VerifyError::Invalid { reason, .. } if reason.contains("no signature by")),
        "{error}"
    );
    assert!(verify(&db, &fetch, None, &modules[3]).await.is_ok());
}

/// A well-formed verifier key for `name` whose key is not the database's.
fn another_key(name: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let mut key = vec![1u8];
    key.extend_from_slice(&[42; 32]);
    let digest = sha2::Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update(b"\n")
        .chain_update(&key)
        .finalize();
    format!(
        "{name}+{}+{}",
        hex::encode(&digest[..4]),
        base64::engine::general_purpose::STANDARD.encode(&key)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_forks_or_rolls_back_is_a_security_event() {
    let tree = tempfile::tempdir().unwrap();
    let modules = standard_modules();
    write_tree(tree.path(), &modules);
    let work = tempfile::tempdir().unwrap();
    // The forked log starts with 3 records of its own.
    let sumdb = SumdbServer::start_forked(work.path(), NAME, tree.path(), 0, 3).await;
    let fork_url = sumdb.fork_url.clone().unwrap();
    let db = Database::new(&sumdb.vkey).unwrap();
    let fetch = KeptThenDatabase::new(&sumdb.url);
    let mut head = None;
    let on = |url: &str| fetch.point_at(Some(url));

    // Ours: 2 records. Theirs: 4 that do not start with ours.
    for m in &modules[0..2] {
        head = Some(verify(&db, &fetch, head.as_ref(), m).await.unwrap().head);
    }
    on(&fork_url);
    let error = verify(&db, &fetch, head.as_ref(), &modules[2])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, VerifyError::Fork(d) if d.ours.size == 2 && d.theirs.size == 4),
        "{error}"
    );
    assert!(error.is_security_event());
    let forked_note = match &error {
        VerifyError::Fork(d) => d.theirs_note.clone(),
        _ => unreachable!(),
    };

    // Ours: 4 records, theirs 4 with another root.
    on(&sumdb.url);
    for m in &modules[3..5] {
        head = Some(verify(&db, &fetch, head.as_ref(), m).await.unwrap().head);
    }
    on(&fork_url);
    let error = verify(&db, &fetch, head.as_ref(), &modules[2])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, VerifyError::Fork(d) if d.ours.size == 4 && d.theirs.size == 4),
        "{error}"
    );

    // Ours: 6 records; theirs now 5, not a prefix of ours (proven from the
    // tiles kept for our head).
    on(&sumdb.url);
    let mut older = None;
    for m in &modules[5..7] {
        older = head.clone();
        head = Some(verify(&db, &fetch, head.as_ref(), m).await.unwrap().head);
    }
    on(&fork_url);
    let error = verify(&db, &fetch, head.as_ref(), &modules[7])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, VerifyError::Rollback(d) if d.ours.size == 6 && d.theirs.size == 5),
        "{error}"
    );
    assert!(error.is_security_event());

    // Two heads of the true log merge to the newer; a forked one never does.
    on(&sumdb.url);
    let (head, older) = (head.unwrap(), older.unwrap());
    let (merged, _) = db.advance(&fetch, &older, head.clone()).await.unwrap();
    assert_eq!(merged, head);
    let (merged, _) = db.advance(&fetch, &head, older.clone()).await.unwrap();
    assert_eq!(merged, head);
    let forked = db.open_head(forked_note).unwrap();
    let error = db.advance(&fetch, &head, forked).await.unwrap_err();
    assert!(error.is_security_event(), "{error}");
    // The true log's own latest head is consistent with ours.
    assert!(db.latest(&fetch, Some(&head)).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_records_and_tiles_verify_while_the_database_is_down() {
    let tree = tempfile::tempdir().unwrap();
    let modules = standard_modules();
    write_tree(tree.path(), &modules);
    let work = tempfile::tempdir().unwrap();
    let sumdb = SumdbServer::start(work.path(), NAME, tree.path(), 300).await;
    let db = Database::new(&sumdb.vkey).unwrap();
    let fetch = KeptThenDatabase::new(&sumdb.url);
    let mut head = None;
    for m in &modules[0..4] {
        head = Some(verify(&db, &fetch, head.as_ref(), m).await.unwrap().head);
    }
    let head = head.unwrap();

    let SumdbServer { guard, .. } = sumdb;
    drop(guard);
    fetch.point_at(None);
    let before = fetch.asked().len();
    // Their lookups were signed at older heads: proven against ours from kept tiles.
    for m in &modules[0..4] {
        let verified = verify(&db, &fetch, Some(&head), m).await.unwrap();
        check_files(tree.path(), m, &verified);
        assert_eq!(verified.head, head);
    }
    assert_eq!(
        fetch.asked().len(),
        before,
        "nothing asked of a database that is down"
    );
    let error = verify(&db, &fetch, Some(&head), &modules[4])
        .await
        .unwrap_err();
    assert!(matches!(error, VerifyError::Unreachable { .. }), "{error}");
}

/// What `go mod download -json` printed for each module it fetched from
/// `proxy`, and the environment whose module cache holds its files.
async fn go_mod_download(proxy: &str, args: &[String]) -> (GoEnv, Vec<serde_json::Value>) {
    let home = tempfile::tempdir().unwrap();
    let go = GoEnv {
        dir: home,
        version: GoVersion::Go119,
        goproxy: proxy.to_owned(),
        ca: PathBuf::from("/dev/null"),
        gosumdb: "off".into(),
        gotoolchain: "local".into(),
    };
    let cwd = go.work_dir("outside");
    let mut all = vec!["mod".to_owned(), "download".to_owned(), "-json".to_owned()];
    all.extend_from_slice(args);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let output = go.ok(&cwd, &all).await;
    let parsed: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&output)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("go mod download -json");
    (go, parsed)
}

/// A module written by Go's own zip writer (x/mod/zip CreateFromDir):
/// nested directories, spaces and upper case in file names.
async fn go_written_module(tree: &Path, tools: &Path) -> (String, String) {
    let (path, version) = ("example.com/Go/Written".to_owned(), "v1.2.3".to_owned());
    let source = tools.join("src");
    let go_mod = format!("module {path}\n\ngo 1.19\n");
    for (name, content) in [
        ("go.mod", go_mod.as_str()),
        ("written.go", "package written\n"),
        ("a dir/with space.txt", "spaced\n"),
        ("deep/er/Upper.go", "package er\n"),
        ("LICENSE", "licensed\n"),
    ] {
        let file = source.join(name);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
    }
    let modzip = build_x_mod_tool(tools, "modzip").await;
    let base = file_in_tree(tree, &path, &version, "zip");
    std::fs::create_dir_all(base.parent().unwrap()).unwrap();
    let mut command = Command::new(modzip);
    command
        .arg("-dir")
        .arg(&source)
        .arg("-path")
        .arg(&path)
        .arg("-version")
        .arg(&version)
        .arg("-out")
        .arg(&base);
    let output = process::run(&mut command, Duration::from_secs(60));
    assert!(
        output.status.success(),
        "modzip: {}",
        process::text(&output)
    );
    std::fs::write(file_in_tree(tree, &path, &version, "mod"), &go_mod).unwrap();
    std::fs::write(
        file_in_tree(tree, &path, &version, "info"),
        format!("{{\"Version\":\"{version}\"}}"),
    )
    .unwrap();
    (path, version)
}

/// A zip with explicit directory entries, which Go hashes as names too.
fn module_with_directory_entries(tree: &Path) -> (String, String) {
    let (path, version) = ("example.com/dirs".to_owned(), "v0.1.0".to_owned());
    let zip_path = file_in_tree(tree, &path, &version, "zip");
    std::fs::create_dir_all(zip_path.parent().unwrap()).unwrap();
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    let prefix = format!("{path}@{version}/");
    let go_mod = format!("module {path}\n");
    zip.add_directory(format!("{prefix}sub"), options).unwrap();
    zip.start_file(format!("{prefix}go.mod"), options).unwrap();
    zip.write_all(go_mod.as_bytes()).unwrap();
    zip.add_directory(format!("{prefix}sub/inner dir"), options)
        .unwrap();
    zip.start_file(format!("{prefix}sub/inner dir/file name.txt"), options)
        .unwrap();
    zip.write_all(b"inside\n").unwrap();
    zip.finish().unwrap();
    std::fs::write(file_in_tree(tree, &path, &version, "mod"), &go_mod).unwrap();
    std::fs::write(
        file_in_tree(tree, &path, &version, "info"),
        format!("{{\"Version\":\"{version}\"}}"),
    )
    .unwrap();
    (path, version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_h1_hashes_are_those_the_go_command_computes() {
    let tree = tempfile::tempdir().unwrap();
    let modules = standard_modules();
    write_tree(tree.path(), &modules);
    let tools = tempfile::tempdir().unwrap();
    let mut wanted: Vec<(String, String)> = modules
        .iter()
        .map(|m| (m.path.clone(), m.version.clone()))
        .collect();
    wanted.push(go_written_module(tree.path(), tools.path()).await);
    wanted.push(module_with_directory_entries(tree.path()));
    let proxy = StaticProxy::start(tree.path()).await;

    let args: Vec<String> = wanted.iter().map(|(p, v)| format!("{p}@{v}")).collect();
    let (_go, downloaded) = go_mod_download(&proxy.url(), &args).await;
    assert_eq!(downloaded.len(), wanted.len(), "{downloaded:?}");
    for module in &downloaded {
        let field = |name: &str| {
            module[name]
                .as_str()
                .unwrap_or_else(|| panic!("{name} in {module}"))
                .to_owned()
        };
        assert!(module.get("Error").is_none(), "{module}");
        let zip = H1::zip_file(Path::new(&field("Zip"))).unwrap();
        let go_mod = H1::go_mod_file(Path::new(&field("GoMod"))).unwrap();
        assert_eq!(
            zip.to_string(),
            field("Sum"),
            "{}@{}",
            field("Path"),
            field("Version")
        );
        assert_eq!(
            go_mod.to_string(),
            field("GoModSum"),
            "{}@{}",
            field("Path"),
            field("Version")
        );
    }
}
