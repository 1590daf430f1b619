//! The change stream (`Watch`) against real `deeb serve` processes: a
//! consumer on a follower, reconnecting from its last index while the
//! leader is killed twice, sees every committed change once after
//! deduplication, in log order, with images that fold into the table's
//! final contents; a start below the compaction point is refused with the
//! first index the log holds (gRPC and HTTP).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cells, Cluster};
use deeb_client::Options;
use deeb_proto::value::Kind;
use deeb_proto::{Change, ChangeKind, ErrorCode, NamedValue, Statement, TransferLeaderRequest, WatchRequest};

/// The test table, as the change stream folds it: id -> column -> value.
type Rows = BTreeMap<String, BTreeMap<String, String>>;

fn text(value: Option<&deeb_proto::Value>) -> String {
    match value.and_then(|value| value.kind.as_ref()) {
        None => "NULL".into(),
        Some(Kind::Integer(i)) => i.to_string(),
        Some(Kind::Real(r)) => r.to_string(),
        Some(Kind::Text(t)) => t.clone(),
        Some(Kind::Blob(b)) => format!("{b:?}"),
    }
}

fn columns(values: &[NamedValue]) -> BTreeMap<String, String> {
    values.iter().map(|named| (named.name.clone(), text(named.value.as_ref()))).collect()
}

/// Folds a stream of changes to table `t`, as a consumer would: drops
/// what it saw before (by index, request and position), and fails on
/// anything a complete, ordered, exact stream cannot hold: a change out of
/// log order, a request cut short, an insert of a row that exists, an
/// update or delete of one that does not, a before image that differs
/// from the row as folded so far.
fn fold(changes: &[Change]) -> Result<Rows, String> {
    let mut rows = Rows::new();
    let mut last: Option<&Change> = None;
    let mut seen = BTreeSet::new();
    for change in changes {
        let place = (change.index, change.request, change.position);
        if !seen.insert(place) {
            continue;
        }
        if let Some(previous) = last {
            let previous_place = (previous.index, previous.request, previous.position);
            if place <= previous_place {
                return Err(format!("{place:?} after {previous_place:?}: out of log order"));
            }
            let same_request = (previous.index, previous.request) == (change.index, change.request);
            if same_request == previous.last_in_request || (same_request && change.position != previous.position + 1) {
                return Err(format!("{place:?} after {previous_place:?}: a request not whole"));
            }
        }
        if last.is_none_or(|previous| previous.last_in_request) && change.position != 0 {
            return Err(format!("{place:?}: a request that does not start at position 0"));
        }
        last = Some(change);
        if change.table != "t" {
            continue;
        }
        let key = columns(&change.key).get("id").cloned().ok_or(format!("{place:?}: no id in the key"))?;
        let (before, after) = (columns(&change.before), columns(&change.after));
        match change.kind() {
            ChangeKind::Insert => {
                if rows.insert(key.clone(), after).is_some() {
                    return Err(format!("{place:?}: insert of row {key}, which exists"));
                }
            }
            ChangeKind::Update | ChangeKind::Delete => {
                let row = rows.get_mut(&key).ok_or(format!("{place:?}: {:?} of row {key}, absent", change.kind()))?;
                for (column, value) in &before {
                    if row.get(column) != Some(value) {
                        return Err(format!("{place:?}: before image {column}={value}, but the row holds {row:?}"));
                    }
                }
                if change.kind() == ChangeKind::Delete {
                    if before != *row {
                        return Err(format!("{place:?}: a delete's before image {before:?} is not the row {row:?}"));
                    }
                    rows.remove(&key);
                } else {
                    row.extend(after);
                }
            }
            other => return Err(format!("{place:?}: unexpected {other:?} on t")),
        }
    }
    Ok(rows)
}

/// The table's rows as `fold` holds them.
async fn table_rows(cluster: &Cluster, node: u64) -> Rows {
    let result = cluster.query(node, "SELECT id, v, s FROM t ORDER BY id").await.expect("read t");
    cells(&result)
        .into_iter()
        .map(|row| {
            let named = ["id", "v", "s"].iter().map(|c| (*c).to_owned()).zip(row.iter().cloned());
            (row[0].clone(), named.collect())
        })
        .collect()
}

fn statement(sql: String) -> Statement {
    Statement { sql, ..Statement::default() }
}

/// Writes through the node at `address` until `stop`: inserts, updates of one or many
/// rows, deletes, replaces, and requests of several statements. Errors
/// (a leader killed mid-write) are left to the check: the stream must
/// match whatever committed.
async fn write_until(address: String, stop: Arc<AtomicBool>) -> usize {
    let client = deeb_client::Client::new(&[&address], Options { follow_leader: false, ..Options::default() });
    let mut written = 0;
    for i in 0..20_000_u64 {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let (a, b) = ((i * 7) % 40, (i * 13 + 5) % 40);
        let statements = match i % 6 {
            0 | 1 => vec![format!("INSERT OR IGNORE INTO t VALUES ({a}, {i}, 'i{i}')")],
            2 => vec![format!("UPDATE t SET v = v + 1 WHERE id = {a}")],
            3 => vec![format!("DELETE FROM t WHERE id = {a}")],
            4 => vec![
                format!("INSERT OR REPLACE INTO t VALUES ({a}, {i}, NULL)"),
                format!("UPDATE t SET s = 'u{i}' WHERE id = {b}"),
            ],
            _ => vec![format!("UPDATE t SET v = -v WHERE id < {}", a / 4), format!("DELETE FROM t WHERE id = {b}")],
        };
        if client.execute_statements(statements.into_iter().map(statement).collect()).await.is_ok() {
            written += 1;
        }
    }
    written
}

/// Reads node `node`'s change stream of `t` until it has seen a change at
/// or past the index `until` holds (0: not known yet), dropping and
/// reopening the stream every so often from the last index it saw (so it
/// sees some changes twice), and again whenever it breaks.
async fn consume(address: String, until: Arc<std::sync::atomic::AtomicU64>) -> (Vec<Change>, usize) {
    let client = deeb_client::Client::new(&[&address], Options::default());
    let (mut changes, mut opened) = (Vec::<Change>::new(), 0);
    let mut from = 1;
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        let target = until.load(Ordering::SeqCst);
        if target != 0 && changes.last().is_some_and(|change| change.index >= target) {
            break;
        }
        let request = WatchRequest { from_index: from, tables: vec!["t".into()], include_before_images: true };
        let mut stream = match client.watch(request).await {
            Ok(stream) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        opened += 1;
        // Drop the stream after a number of changes that varies.
        let cut = 17 + (opened * 29) % 61;
        for _ in 0..cut {
            match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                Ok(Ok(Some(change))) => {
                    from = change.index;
                    changes.push(change);
                }
                Ok(_) | Err(_) => break,
            }
        }
    }
    (changes, opened)
}

async fn leader_other_than(cluster: &Cluster, avoid: u64) -> u64 {
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    if leader != avoid {
        return leader;
    }
    let target = (1..=3).find(|id| *id != avoid && cluster.children.contains_key(id)).expect("another node");
    let mut client = cluster.client(avoid).await;
    client.transfer_leader(TransferLeaderRequest { node_id: target }).await.expect("transfer leadership");
    common::wait_for(Duration::from_secs(20), "the new leader", || async {
        (cluster.wait_leader(&[1, 2, 3]).await == target).then_some(target)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_on_a_follower_sees_every_change_once_through_two_leader_kills() {
    let mut cluster = Cluster::start(3, &[]);
    let first_leader = cluster.wait_leader(&[1, 2, 3]).await;
    let follower = (1..=3).find(|id| *id != first_leader).expect("a follower");
    cluster.execute(first_leader, "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, s TEXT)").await.expect("create");

    let until = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let consumer = tokio::spawn(consume(cluster.addr(follower), until.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until(cluster.addr(follower), stop.clone()));

    for round in 1..=2 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let leader = leader_other_than(&cluster, follower).await;
        eprintln!("round {round}: killing leader {leader}");
        cluster.kill(leader);
        let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
        cluster.wait_leader(&others).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        cluster.spawn(leader);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    let written = writer.await.expect("writer");
    let marker = cluster.execute(follower, "INSERT INTO t VALUES (1000, 0, 'end')").await.expect("marker");
    until.store(marker.index, Ordering::SeqCst);
    let (changes, opened) = consumer.await.expect("consumer");

    let rows = fold(&changes).unwrap_or_else(|error| panic!("the change stream does not fold: {error}"));
    let unique: BTreeSet<_> = changes.iter().map(|c| (c.index, c.request, c.position)).collect();
    eprintln!(
        "{written} requests acknowledged; {} changes received over {opened} streams, {} after deduplication",
        changes.len(),
        unique.len()
    );
    assert!(written > 50, "too few writes to show anything: {written}");
    assert!(opened > 3 && changes.len() > unique.len(), "the consumer must have resumed and seen repeats");
    assert_eq!(rows, table_rows(&cluster, follower).await, "the folded stream differs from the table");
}

/// A stream its consumer does not read, while 96 MiB of rows are written:
/// the serving follower's peak RSS stays within a few MiB of the other
/// follower's (the stream waits for its consumer, holding a bounded
/// window), and every row then arrives once the consumer reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_does_not_read_holds_back_its_stream_not_server_memory() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let (serving, idle) = (followers[0], followers[1]);
    let created = cluster.execute(leader, "CREATE TABLE big (id INTEGER PRIMARY KEY, pad TEXT)").await.expect("create");
    let client = deeb_client::Client::new(&[&cluster.addr(serving)], Options::default());
    let request = WatchRequest { from_index: created.index + 1, tables: vec!["big".into()], ..WatchRequest::default() };
    let mut stream = client.watch(request).await.expect("watch");
    let (writes, rows_per_write) = (24, 4096);
    for write in 0..writes {
        let sql = format!(
            "INSERT INTO big (pad) SELECT printf('%.1000c', char(65 + {write})) FROM \
             (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {rows_per_write}) SELECT x FROM c)"
        );
        cluster.execute(leader, &sql).await.expect("fill");
    }
    let index = cluster.status(leader).await.expect("status").commit_index;
    for id in &followers {
        cluster.wait_applied(*id, index).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let peak = |id: u64| common::peak_rss_kib(cluster.children[&id].id()).expect("VmHWM");
    let (serving_peak, idle_peak) = (peak(serving), peak(idle));
    println!("96 MiB written, the stream unread: serving follower's peak RSS {serving_peak} KiB, the other's {idle_peak} KiB");
    assert!(serving_peak < idle_peak + 32 * 1024, "the unread stream cost {} KiB", serving_peak - idle_peak);

    let mut received = 0;
    while received < writes * rows_per_write {
        let change = tokio::time::timeout(Duration::from_secs(20), stream.message()).await;
        let change = change.expect("a change within 20 s").expect("stream").expect("a change");
        assert_eq!((change.kind(), change.table.as_str()), (ChangeKind::Insert, "big"));
        received += 1;
    }
}

/// `GET path` on `address`: the status and the body read for at most
/// `read_for` (a stream does not end by itself).
async fn http_get(address: &str, path: &str, read_for: Duration) -> (u16, String) {
    let (status, body, _) = http_get_open(address, path, read_for).await;
    (status, body)
}

/// [`http_get`], and whether the connection was still open at the end.
async fn http_get_open(address: &str, path: &str, read_for: Duration) -> (u16, String, bool) {
    let answer = common::http(address, format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes(), read_for).await;
    (answer.status, String::from_utf8_lossy(&answer.body).into_owned(), answer.open)
}

/// A stream's JSON lines (keep-alive lines left out) as read for 2 s, and
/// its body; the answer must be a 200.
async fn json_lines(address: &str, path: &str) -> (Vec<serde_json::Value>, String) {
    let (status, body) = http_get(address, path, Duration::from_secs(2)).await;
    assert_eq!(status, 200, "{body}");
    let lines = body.lines().filter(|line| !line.is_empty()).map(|line| serde_json::from_str(line).expect("JSON"));
    (lines.collect(), body)
}

#[tokio::test]
async fn a_watch_below_the_compaction_point_names_the_first_index() {
    let cluster = Cluster::start(3, &["--snapshot-interval", "20", "--compaction-lag", "5", "--idle-timeout", "2s"]);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    cluster.execute(leader, "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, s TEXT)").await.expect("create");
    let mut last = 0;
    for i in 0..60 {
        last = cluster.execute(leader, &format!("INSERT INTO t VALUES ({i}, {i}, 'x')")).await.expect("insert").index;
    }
    let node = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.wait_applied(node, last).await;
    let client = deeb_client::Client::new(&[&cluster.addr(node)], Options::default());
    let first_index = common::wait_for(Duration::from_secs(30), "the log compacted", || async {
        let request = WatchRequest { from_index: 1, ..WatchRequest::default() };
        let error = client.watch(request).await.err()?;
        assert_eq!(error.error_code, Some(ErrorCode::Compacted), "{error:?}");
        let message = error.message();
        let first: u64 = message.split("starts at index ").nth(1)?.split(';').next()?.parse().ok()?;
        Some(first)
    })
    .await;
    assert!(first_index > 1, "first index {first_index}");

    // From the first index the log holds, the stream starts.
    let request = WatchRequest { from_index: first_index, ..WatchRequest::default() };
    let mut stream = client.watch(request).await.expect("watch from the first index");
    let change = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
    let change = change.expect("a change within 10 s").expect("stream").expect("a change");
    assert!(change.index >= first_index && change.kind() == ChangeKind::Insert, "{change:?}");

    // The same over HTTP: 410 with the code, then a stream of JSON lines;
    // a malformed parameter is a 400.
    let http = cluster.http_addr(node);
    let (status, body) = http_get(&http, "/api/v1/watch?from_index=1", Duration::from_secs(10)).await;
    assert_eq!(status, 410, "{body}");
    assert!(body.contains("ERROR_CODE_COMPACTED") && body.contains(&format!("index {first_index}")), "{body}");
    let (status, body) = http_get(&http, "/api/v1/watch?from_index=x", Duration::from_secs(10)).await;
    assert_eq!(status, 400, "{body}");
    let path = format!("/api/v1/watch?from_index={first_index}&tables=T&include_before_images=true");
    let (lines, body) = json_lines(&http, &path).await;
    // One insert per entry from the first index to the last.
    assert_eq!(lines.len() as u64, last - first_index + 1, "{body}");
    assert!(lines.iter().all(|line| line["kind"] == "INSERT" && line["table"] == "t"), "{body}");
    assert_eq!(lines.last().map(|line| line["key"][0]["value"]["integer"].clone()), Some(59.into()));

    // In Debezium's envelope; an unknown format is a 400.
    let path = format!("/api/v1/watch?from_index={first_index}&format=debezium");
    let (events, body) = json_lines(&http, &path).await;
    assert_eq!(events.len() as u64, last - first_index + 1, "{body}");
    let final_event = events.last().expect("an event");
    assert_eq!((final_event["op"].clone(), final_event["after"]["id"].clone()), ("c".into(), 59.into()), "{body}");
    assert_eq!(final_event["source"]["lsn"], last);
    let (status, body) = http_get(&http, "/api/v1/watch?format=avro", Duration::from_secs(10)).await;
    assert_eq!(status, 400, "{body}");

    // A quiet stream outlives the connections' 2 s idle timeout: it sends
    // an empty line every second.
    let (status, body, open) = http_get_open(&http, "/api/v1/watch", Duration::from_secs(5)).await;
    assert_eq!(status, 200, "{body}");
    assert!(open, "the stream was closed: {body:?}");
    assert!(body.len() >= 3 && body.bytes().all(|byte| byte == b'\n'), "{body:?}");
}

#[test]
fn the_fold_fails_a_stream_that_is_not_exact() {
    let change = |index: u64,
                  position: u32,
                  last: bool,
                  kind: ChangeKind,
                  id: i64,
                  before: &[(&str, i64)],
                  after: &[(&str, i64)]| {
        let named = |values: &[(&str, i64)]| -> Vec<NamedValue> {
            values
                .iter()
                .map(|(name, value)| NamedValue {
                    name: (*name).into(),
                    value: Some(deeb_proto::Value { kind: Some(Kind::Integer(*value)) }),
                })
                .collect()
        };
        Change {
            index,
            position,
            last_in_request: last,
            kind: kind.into(),
            table: "t".into(),
            key: named(&[("id", id)]),
            before: named(before),
            after: named(after),
            ..Change::default()
        }
    };
    let insert = change(5, 0, true, ChangeKind::Insert, 1, &[], &[("id", 1), ("v", 1)]);
    let update = change(6, 0, true, ChangeKind::Update, 1, &[("id", 1), ("v", 1)], &[("id", 1), ("v", 2)]);
    let good = [insert.clone(), update.clone(), update.clone()];
    let rows = fold(&good).expect("a good stream folds (the repeat dropped)");
    assert_eq!(rows["1"]["v"], "2");
    // A lost insert, a reordering, a wrong before image, a cut request.
    assert!(fold(std::slice::from_ref(&update)).is_err());
    assert!(fold(&[update.clone(), insert.clone()]).is_err());
    let wrong = change(6, 0, true, ChangeKind::Update, 1, &[("id", 1), ("v", 7)], &[("id", 1), ("v", 2)]);
    assert!(fold(&[insert.clone(), wrong]).is_err());
    let cut = change(5, 0, false, ChangeKind::Insert, 1, &[], &[("id", 1), ("v", 1)]);
    assert!(fold(&[cut, update.clone()]).is_err());
    let twice = change(6, 0, true, ChangeKind::Insert, 1, &[], &[("id", 1), ("v", 1)]);
    assert!(fold(&[insert, twice]).is_err());
}
