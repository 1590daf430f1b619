//! Scheduled backups as an operator sets them up: three nodes given the
//! same `--backup-dir` (or `--backup-url` of an S3-compatible server), a
//! 1 s interval, keep 3. Only the leader takes them, each slot once, none
//! while nothing changes, the last three kept and listed in the manifest,
//! and a leader change neither loses nor repeats one.

mod common;

use std::time::Duration;

use common::{wait_for, Cluster};
use deeb_server::scheduled::{Entry, Manifest, Store};

const KEEP: usize = 3;

async fn manifest(store: &Store) -> Manifest {
    store.manifest().await.expect("the manifest reads")
}

/// Waits for a backup holding the write at `index`: the entry.
async fn backup_holding(store: &Store, index: u64) -> Entry {
    wait_for(Duration::from_secs(20), "a backup holding the write", || async {
        manifest(store).await.backups.into_iter().find(|entry| entry.applied_index >= index)
    })
    .await
}

#[tokio::test]
async fn the_leader_takes_one_backup_a_slot_and_keeps_the_last_ones() {
    let dir = tempfile::tempdir().expect("dir");
    let backups = dir.path().join("backups");
    let store = Store::Dir(backups.clone());
    let kept = one_backup_a_slot(&["--backup-dir", backups.to_str().expect("UTF-8")], &store).await;
    let mut files: Vec<String> = std::fs::read_dir(&backups)
        .expect("dir")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut expected: Vec<String> = kept.backups.iter().map(|entry| entry.file.clone()).collect();
    expected.push("manifest.json".to_owned());
    expected.sort();
    assert_eq!(files, expected, "the kept files and the manifest, nothing else");
    // Each file is the state it says: its digest, and the last has the
    // last write.
    for entry in &kept.backups {
        let (index, digest) = deeb_core::sql::file_digest(&backups.join(&entry.file)).expect("digest");
        assert_eq!((index, format!("{digest:016x}")), (entry.applied_index, entry.digest.clone()), "{}", entry.file);
    }
    let last = kept.backups.last().expect("a backup");
    let last = rusqlite::Connection::open(backups.join(&last.file)).expect("open");
    let max: i64 = last.query_row("SELECT max(v) FROM t", [], |row| row.get(0)).expect("max");
    assert_eq!(max, 100);
}

/// The same against an S3-compatible server on loopback (moto's, from
/// the Python registry): `.ci/s3` starts it, exports `AWS_ENDPOINT_URL`
/// and the other `AWS_*` settings, and runs this test.
#[tokio::test]
#[ignore = "needs an S3-compatible server: .ci/s3 starts moto's and runs it"]
async fn the_leader_backs_up_to_an_s3_compatible_store() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL: the S3-compatible server (.ci/s3)");
    let bucket = format!("deeb-{}", std::process::id());
    create_bucket(&endpoint, &bucket).await;
    let url = format!("s3://{bucket}/cluster-a");
    let store = Store::objects(&url).expect("the store");
    let kept = one_backup_a_slot(&["--backup-url", &url], &store).await;
    // The kept ones hold the state they say.
    let dir = tempfile::tempdir().expect("dir");
    for entry in &kept.backups {
        let local = dir.path().join(&entry.file);
        let bytes = store.get(&entry.file).await.expect("read back").expect("there");
        std::fs::write(&local, bytes).expect("write");
        let (index, digest) = deeb_core::sql::file_digest(&local).expect("digest");
        assert_eq!((index, format!("{digest:016x}")), (entry.applied_index, entry.digest.clone()), "{}", entry.file);
    }
}

/// `PUT /BUCKET` (moto takes it unsigned).
async fn create_bucket(endpoint: &str, bucket: &str) {
    let (status, body) = s3_request(endpoint, &format!("PUT /{bucket} HTTP/1.0\r\nContent-Length: 0\r\n\r\n")).await;
    assert_eq!(status, 200, "create bucket {bucket}: {}", String::from_utf8_lossy(&body));
}

async fn s3_request(endpoint: &str, request: &str) -> (u16, Vec<u8>) {
    let address = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let answer = common::http(address, request.as_bytes(), Duration::from_secs(30)).await;
    assert!(!answer.open, "the S3 server answered within 30 s");
    (answer.status, answer.body)
}

/// Three nodes with `destination` and a 1 s interval, keep 3: five
/// writes, each in a backup the leader took; three quiet slots handled
/// without a backup; the leader killed and the next one taking them. The
/// manifest at the end, checked against the store.
async fn one_backup_a_slot(destination: &[&str], store: &Store) -> Manifest {
    let mut args = vec!["--backup-interval", "1s", "--backup-keep", "3"];
    args.extend_from_slice(destination);
    let mut cluster = Cluster::start(3, &args);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    cluster.execute(leader, "CREATE TABLE t (v INTEGER)").await.expect("create");
    let mut taken = Vec::new();
    for value in 0..5 {
        let written = cluster.execute(leader, &format!("INSERT INTO t VALUES ({value})")).await.expect("insert");
        taken.push(backup_holding(store, written.index).await);
    }
    assert!(taken.iter().all(|entry| entry.taken_by == leader), "only the leader takes them: {taken:#?}");
    // Nothing changes for three slots: no new backup, the slots handled.
    let before = manifest(store).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = manifest(store).await;
    assert_eq!(after.backups, before.backups, "unchanged: no new backup");
    assert!(after.last_slot >= before.last_slot + 2, "the quiet slots are handled: {before:?} then {after:?}");

    // The leader goes; the next one takes the backups from then on.
    cluster.kill(leader);
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let next = cluster.wait_leader(&others).await;
    let written = cluster.execute(next, "INSERT INTO t VALUES (100)").await.expect("insert");
    let entry = backup_holding(store, written.index).await;
    assert_eq!(entry.taken_by, next);

    let kept = manifest(store).await;
    kept.verify(store, KEEP).await.expect("the manifest matches the files");
    assert_eq!(kept.backups.len(), KEEP);
    assert_eq!(kept.backups.last(), Some(&entry));
    assert!(store.size_and_crc(&taken[0].file).await.is_err(), "the oldest backup was removed");
    kept
}

/// The manifest check finds each fault it is there for.
#[tokio::test]
async fn the_manifest_check_finds_faults() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("a.db"), b"aaaa").expect("write");
    std::fs::write(dir.path().join("b.db"), b"bbbb").expect("write");
    let entry = |file: &str, slot: u64, crc32c: u32| Entry {
        file: file.to_owned(),
        slot,
        applied_index: slot,
        bytes: 4,
        crc32c: format!("{crc32c:08x}"),
        digest: String::new(),
        taken_by: 1,
        taken_at: 0,
    };
    let (a, b) = (crc32c::crc32c(b"aaaa"), crc32c::crc32c(b"bbbb"));
    let good = Manifest { last_slot: 2, backups: vec![entry("a.db", 1, a), entry("b.db", 2, b)] };
    let store = Store::Dir(dir.path().to_path_buf());
    good.verify(&store, 2).await.expect("a good manifest");
    let faults = [
        ("too many kept", good.clone(), 1),
        ("a slot repeated", Manifest { backups: vec![entry("a.db", 2, a), entry("b.db", 2, b)], ..good.clone() }, 2),
        ("a slot past the last handled", Manifest { last_slot: 1, ..good.clone() }, 2),
        ("a damaged file", Manifest { backups: vec![entry("a.db", 1, b)], ..good.clone() }, 2),
        ("a missing file", Manifest { backups: vec![entry("c.db", 1, a)], ..good.clone() }, 2),
    ];
    for (fault, manifest, keep) in faults {
        assert!(manifest.verify(&store, keep).await.is_err(), "{fault} passes");
    }
}

/// The leader dies just before a slot begins, with a change it never
/// backed up: the node that comes to lead takes that slot's backup in the
/// slot itself (nodes look every second), not a slot later.
#[tokio::test]
async fn a_new_leader_takes_the_slot_its_predecessor_missed() {
    let dir = tempfile::tempdir().expect("dir");
    let backups = dir.path().join("backups");
    let interval = 5;
    let store = Store::Dir(backups.clone());
    let args = ["--backup-interval", "5s", "--backup-dir", backups.to_str().expect("UTF-8")];
    let mut cluster = Cluster::start(3, &args);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    cluster.execute(leader, "CREATE TABLE t (v INTEGER)").await.expect("create");
    backup_holding(&store, 1).await;
    // Just before the next slot: a change, then the leader goes.
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
    let slot_start = |slot: u64| Duration::from_secs(slot * interval);
    let next_slot = now().as_secs() / interval + 1;
    tokio::time::sleep(slot_start(next_slot).saturating_sub(now() + Duration::from_millis(400))).await;
    let written = cluster.execute(leader, "INSERT INTO t VALUES (1)").await.expect("insert");
    cluster.kill(leader);
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let next = cluster.wait_leader(&others).await;
    let led_in = now().as_secs() / interval;
    let entry = backup_holding(&store, written.index).await;
    assert_eq!(entry.taken_by, next);
    assert_eq!(entry.slot, led_in, "taken in the slot the new leader began leading in");
    manifest(&store).await.verify(&store, 7).await.expect("the manifest matches the files");
}
