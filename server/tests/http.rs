//! The HTTP API as rqlite's clients use it: exact JSON for each endpoint
//! and parameter, through the leader and through a follower; bad input;
//! health probes while the cluster loses and regains its quorum.

mod common;

use std::time::Duration;

use common::{peak_rss_kib, wait_for, Cluster};
use serde_json::{json, Value as Json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// An HTTP/1.1 exchange on a fresh connection: (status, headers, body).
async fn http(address: &str, method: &str, target: &str, content_type: &str, body: &[u8]) -> (u16, String, String) {
    http_as(address, (method, target), content_type, body, None).await
}

/// `http` with an `Authorization` header if given.
async fn http_as(
    address: &str,
    (method, target): (&str, &str),
    content_type: &str,
    body: &[u8],
    authorization: Option<&str>,
) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let authorization = authorization.map(|value| format!("Authorization: {value}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: {content_type}\r\n\
         {authorization}Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    // A server refusing a body over its limit answers and closes before
    // reading it all: the answer is still there to read.
    let _ = stream.write_all(body).await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("answered within 30 s")
        .expect("read");
    let answer = String::from_utf8(answer).expect("utf-8");
    let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).expect("status");
    let body = if head.to_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_owned() };
    (status, head.to_owned(), body)
}

/// A chunked HTTP/1.1 body's content.
fn dechunk(mut body: &str) -> String {
    let mut content = String::new();
    for _ in 0..body.len() {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            break;
        }
        content.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    content
}

async fn post_json(address: &str, target: &str, body: Json) -> (u16, Json) {
    let (status, _, text) = http(address, "POST", target, "application/json", body.to_string().as_bytes()).await;
    (status, serde_json::from_str(&text).unwrap_or(Json::String(text)))
}

async fn get_json(address: &str, target: &str) -> (u16, Json) {
    let (status, _, text) = http(address, "GET", target, "application/json", b"").await;
    (status, serde_json::from_str(&text).unwrap_or(Json::String(text)))
}

fn encoded(sql: &str) -> String {
    sql.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// Each rqlite endpoint and parameter: request in, exact JSON out, through
/// the leader and through a follower.
#[tokio::test]
async fn rqlite_endpoints_answer_exactly() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).expect("follower");
    for node in [leader, follower] {
        let at = cluster.http_addr(node);
        let table = format!("foo{node}");
        let create = format!(
            "CREATE TABLE {table} (id INTEGER NOT NULL PRIMARY KEY, name TEXT, age INTEGER, score REAL, data BLOB)"
        );
        assert_eq!(post_json(&at, "/db/execute", json!([create])).await, (200, json!({"results": [{}]})));
        let insert = json!([
            [format!("INSERT INTO {table}(name, age, score, data) VALUES(?, ?, ?, ?)"), "fiona", 20, 1.5, [1, 2, 3]],
            [format!("INSERT INTO {table}(name, age) VALUES(:name, :age)"), {"name": "bob", "age": null}],
        ]);
        let expected =
            json!({"results": [{"last_insert_id": 1, "rows_affected": 1}, {"last_insert_id": 2, "rows_affected": 1}]});
        assert_eq!(post_json(&at, "/db/execute", insert).await, (200, expected));
        let select = format!("SELECT * FROM {table} ORDER BY id");
        let rows = json!({"results": [{
            "columns": ["id", "name", "age", "score", "data"],
            "types": ["integer", "text", "integer", "real", "blob"],
            "values": [[1, "fiona", 20, 1.5, "AQID"], [2, "bob", null, null, null]],
        }]});
        assert_eq!(get_json(&at, &format!("/db/query?q={}", encoded(&select))).await, (200, rows.clone()));
        assert_eq!(post_json(&at, "/db/query?level=weak", json!([select])).await, (200, rows));
        let associative = format!(
            "/db/query?associative&blob_array&level=none&freshness=1s&q={}",
            encoded(&format!("SELECT id, data, 1 + 1 AS two FROM {table} WHERE id = 1"))
        );
        let expected = json!({"results": [{"types": {"id": "integer", "data": "blob", "two": "integer"}, "rows": [{"id": 1, "data": [1, 2, 3], "two": 2}]}]});
        assert_eq!(get_json(&at, &associative).await, (200, expected));
        // Without ?transaction each statement stands alone, as in rqlite.
        let mixed = json!([
            format!("INSERT INTO {table}(name) VALUES('a')"),
            "INSERT INTO nope VALUES(1)",
            format!("INSERT INTO {table}(name) VALUES('b')"),
        ]);
        let expected = json!({"results": [
            {"last_insert_id": 3, "rows_affected": 1}, {"error": "no such table: nope"}, {"last_insert_id": 4, "rows_affected": 1},
        ]});
        assert_eq!(post_json(&at, "/db/execute", mixed.clone()).await, (200, expected));
        // With it, all or nothing.
        let expected = json!({"results": [{}, {"error": "no such table: nope"}]});
        assert_eq!(post_json(&at, "/db/execute?transaction", mixed).await, (200, expected));
        let count = format!("SELECT count(*) AS n FROM {table}");
        let four = json!({"results": [{"columns": ["n"], "types": ["integer"], "values": [[4]]}]});
        assert_eq!(get_json(&at, &format!("/db/query?q={}", encoded(&count))).await, (200, four));
        // A write through /db/query is a per-statement error.
        let write = format!("/db/query?q={}", encoded(&format!("DELETE FROM {table}")));
        let (status, answer) = get_json(&at, &write).await;
        assert_eq!(status, 200);
        assert!(answer["results"][0]["error"].as_str().is_some_and(|e| e.contains("read-only")), "{answer}");
        // /db/request runs each statement as what it is.
        let request = json!([
            count,
            format!("INSERT INTO {table}(name) VALUES('c')"),
            format!("WITH x AS (SELECT 9) INSERT INTO {table}(age) SELECT * FROM x")
        ]);
        let expected = json!({"results": [
            {"columns": ["n"], "types": ["integer"], "values": [[4]]},
            {"last_insert_id": 5, "rows_affected": 1},
            {"last_insert_id": 6, "rows_affected": 1},
        ]});
        assert_eq!(post_json(&at, "/db/request", request).await, (200, expected));
        // text/plain is one statement; ?pretty indents; ?timings adds time.
        let (status, head, body) = http(
            &at,
            "POST",
            "/db/execute?pretty&timings",
            "text/plain",
            format!("DELETE FROM {table} WHERE id = 6").as_bytes(),
        )
        .await;
        assert_eq!(status, 200);
        assert!(body.contains("\n  \"results\": [") && body.contains("\"time\":"), "{body}");
        let answer: Json = serde_json::from_str(&body).expect("json");
        // deeb reports the statement's own insert id: none for a DELETE
        // (rqlite repeats the connection's last one).
        assert_eq!(answer["results"], json!([{"rows_affected": 1}]));
        assert!(head.to_lowercase().contains(&format!("x-deeb-served-by: {leader}")), "{head}");
    }
}

/// Method, target, content type, body, expected status, text the answer holds.
type BadCase = (&'static str, &'static str, &'static str, Vec<u8>, u16, &'static str);

/// Bad input gets a clear error and the node keeps serving.
#[tokio::test]
async fn bad_http_input_gets_clear_errors() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    let at = cluster.http_addr(leader);
    let cases: Vec<BadCase> = vec![
        ("POST", "/db/execute", "application/json", b"[\"CREATE TABLE".to_vec(), 400, "invalid JSON"),
        ("POST", "/db/execute", "application/json", b"{\"sql\": 1}".to_vec(), 400, "invalid JSON"),
        ("POST", "/db/execute", "application/json", b"[]".to_vec(), 400, "no statements"),
        ("POST", "/db/execute", "application/json", b"[[\"SELECT ?\", {\"a\": 1}, 2]]".to_vec(), 400, "statement 0"),
        ("GET", "/db/query?q=SELECT%201&level=bogus", "application/json", Vec::new(), 400, "unknown level"),
        ("GET", "/db/query?q=SELECT%201&timeout=soon", "application/json", Vec::new(), 400, "bad timeout"),
        ("GET", "/db/query?q=", "application/json", Vec::new(), 400, "empty query"),
        ("GET", "/db/execute", "application/json", Vec::new(), 405, ""),
        ("GET", "/no/such/endpoint", "application/json", Vec::new(), 404, ""),
        ("POST", "/db/execute", "text/plain", vec![b'x'; 64 << 20], 413, ""),
    ];
    for (method, target, content_type, body, expected, says) in cases {
        let (status, _, text) = http(&at, method, target, content_type, &body).await;
        assert_eq!(status, expected, "{method} {target}: {text}");
        assert!(text.contains(says), "{method} {target}: {text}");
    }
    let (status, answer) = post_json(&at, "/db/execute", json!(["CREATE TABLE t (x)"])).await;
    assert_eq!((status, answer), (200, json!({"results": [{}]})), "still serving");
}

/// `/readyz` answers 503 while the cluster has no leader and 200 again
/// once it has; `/livez` stays 200 on the node cut off from the others.
#[tokio::test]
async fn readyz_follows_the_quorum_and_livez_the_process() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    let survivor = [1, 2, 3].into_iter().find(|id| *id != leader).expect("follower");
    let at = cluster.http_addr(survivor);
    let (status, _, body) = http(&at, "GET", "/readyz", "text/plain", b"").await;
    assert_eq!((status, body.as_str()), (200, "[+]node ok\n[+]leader ok\n[+]store ok"));
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != survivor).collect();
    for id in &others {
        cluster.kill(*id);
    }
    let body = wait_for(Duration::from_secs(30), "readyz 503 without a leader", || async {
        let (status, _, body) = http(&at, "GET", "/readyz", "text/plain", b"").await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(body.contains("[-]leader does not exist"), "{body}");
    let (status, _, body) = http(&at, "GET", "/livez", "text/plain", b"").await;
    assert_eq!((status, body.as_str()), (200, "[+]node ok"));
    let (status, _, body) = http(&at, "GET", "/readyz?noleader", "text/plain", b"").await;
    assert_eq!((status, body.as_str()), (200, "[+]node ok"));
    for id in &others {
        cluster.spawn(*id);
    }
    wait_for(Duration::from_secs(30), "readyz 200 with a leader again", || async {
        let (status, _, _) = http(&at, "GET", "/readyz", "text/plain", b"").await;
        (status == 200).then_some(())
    })
    .await;
}

/// A node removed from the cluster is not ready (a Service must stop
/// sending it clients), though it still answers and still knows a leader.
#[tokio::test]
async fn readyz_fails_on_a_removed_node() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    let removed = [1, 2, 3].into_iter().find(|id| *id != leader).expect("follower");
    let at = cluster.http_addr(removed);
    let (status, _, _) = http(&at, "GET", "/readyz", "text/plain", b"").await;
    assert_eq!(status, 200, "ready while a member");
    let mut client = cluster.client(leader).await;
    client.remove_node(deeb_proto::RemoveNodeRequest { node_id: removed }).await.expect("remove");
    let body = wait_for(Duration::from_secs(30), "readyz 503 once removed", || async {
        let (status, _, body) = http(&at, "GET", "/readyz", "text/plain", b"").await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(body.contains("[-]not a member of the cluster"), "{body}");
    let (status, _, _) = http(&at, "GET", "/livez", "text/plain", b"").await;
    assert_eq!(status, 200, "alive all the same");
}

/// HTTP Basic credentials and the users file's permissions, through a
/// follower: anonymous readiness only, a reader that cannot write, a wrong
/// password refused.
#[tokio::test]
async fn http_basic_credentials_and_permissions() {
    use deeb_server::security::{basic_authorization, users::hash_secret};
    let dir = tempfile::tempdir().expect("dir");
    let (admin, reader) = (hash_secret("admin-pw-3").expect("hash"), hash_secret("reader-pw-4").expect("hash"));
    let users = dir.path().join("users.json");
    let text = format!(
        r#"[{{"username": "admin", "password_hash": "{admin}", "perms": ["all"]}},
            {{"username": "reader", "password_hash": "{reader}", "perms": ["query"]}},
            {{"username": "*", "perms": ["ready"]}}]"#
    );
    std::fs::write(&users, text).expect("write");
    let users = users.display().to_string();
    let mut cluster = Cluster::start(3, &["--auth", &users, "--insecure-peers"]);
    cluster.secrets = vec!["admin-pw-3".into(), "reader-pw-4".into()];
    cluster.options.authorization = Some(basic_authorization("admin", "admin-pw-3"));
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).expect("follower");
    let at = cluster.http_addr(follower);
    let (admin, reader) = (basic_authorization("admin", "admin-pw-3"), basic_authorization("reader", "reader-pw-4"));
    let create = br#"["CREATE TABLE t (x)"]"#;
    let (status, _, body) = http_as(&at, ("POST", "/db/execute"), "application/json", create, Some(&admin)).await;
    assert_eq!((status, body.as_str()), (200, r#"{"results":[{}]}"#));
    let (status, _, _) = http_as(&at, ("GET", "/readyz"), "text/plain", b"", None).await;
    assert_eq!(status, 200, "anonymous may probe readiness");
    let (status, _, _) = http_as(&at, ("GET", "/db/query?q=SELECT%201"), "text/plain", b"", None).await;
    assert_eq!(status, 403, "anonymous may not query");
    let (status, _, _) = http_as(&at, ("GET", "/db/query?q=SELECT%201"), "text/plain", b"", Some(&reader)).await;
    assert_eq!(status, 200, "the reader queries");
    let insert = br#"["INSERT INTO t VALUES (1)"]"#;
    let (status, _, body) = http_as(&at, ("POST", "/db/execute"), "application/json", insert, Some(&reader)).await;
    assert_eq!(status, 403, "the reader may not write: {body}");
    let wrong = basic_authorization("reader", "not-it");
    let (status, head, _) = http_as(&at, ("GET", "/db/query?q=SELECT%201"), "text/plain", b"", Some(&wrong)).await;
    assert_eq!(status, 401);
    assert!(head.to_lowercase().contains("www-authenticate: basic"), "{head}");
    // The refusals are counted in the metrics, which need `status`.
    let (status, _, _) = http_as(&at, ("GET", "/metrics"), "text/plain", b"", Some(&reader)).await;
    assert_eq!(status, 403, "the reader may not read the metrics");
    let (status, _, metrics) = http_as(&at, ("GET", "/metrics"), "text/plain", b"", Some(&admin)).await;
    assert_eq!(status, 200);
    for (operation, outcome, count) in
        [("query", "permission_denied", 1.0), ("execute", "permission_denied", 1.0), ("query", "unauthenticated", 1.0)]
    {
        let name = format!(r#"deeb_requests_total{{api="http",operation="{operation}",outcome="{outcome}"}}"#);
        assert_eq!(sample(&metrics, &name), Some(count), "{name} in\n{metrics}");
    }
}

/// deeb's own JSON API mirrors the gRPC one: values of every type round
/// trip, queries stream as newline-delimited JSON through leader and
/// follower, failures carry the typed error detail with its HTTP code.
#[tokio::test]
async fn native_api_mirrors_grpc() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).expect("follower");
    let at = cluster.http_addr(follower);
    let values =
        json!([{"integer": -9_007_199_254_740_993_i64}, {"real": 2.5}, {"text": "fiona"}, {"blob": "AAH/"}, null]);
    let request = json!({"statements": [
        {"sql": "CREATE TABLE t (id INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT, b BLOB, n)"},
        {"sql": "INSERT INTO t (i, r, s, b, n) VALUES (?, ?, ?, ?, ?)", "params": values},
        {"sql": "INSERT INTO t (s) VALUES (:s) RETURNING id", "named_params": [{"name": ":s", "value": {"text": "x"}}]},
    ], "idempotency_key": "native-1"});
    let (status, answer) = post_json(&at, "/api/v1/execute", request.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["served_by"], json!(leader));
    let index = answer["index"].as_u64().expect("an index");
    assert_eq!(answer["results"][1], json!({"rows_affected": 1, "last_insert_id": 1, "columns": [], "rows": []}));
    let returning = &answer["results"][2];
    assert_eq!(returning["columns"], json!([{"name": "id", "declared_type": "INTEGER"}]));
    assert_eq!(returning["rows"], json!([{"values": [{"integer": 2}]}]));
    let (status, again) = post_json(&at, "/api/v1/execute", request).await;
    assert_eq!((status, again["index"].as_u64()), (200, Some(index)), "the idempotency key answers the retry");
    for node in [leader, follower] {
        let query =
            json!({"statement": {"sql": "SELECT i, r, s, b, n FROM t WHERE id = ?", "params": [{"integer": 1}]}});
        let (status, head, body) =
            http(&cluster.http_addr(node), "POST", "/api/v1/query", "application/json", query.to_string().as_bytes())
                .await;
        assert_eq!(status, 200, "{body}");
        assert!(head.to_lowercase().contains("content-type: application/x-ndjson"), "{head}");
        let lines: Vec<Json> = body.lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect();
        assert_eq!(lines.len(), 1, "{body}");
        assert_eq!(lines[0]["rows"], json!([{"values": values}]));
        assert_eq!(lines[0]["columns"][2], json!({"name": "s", "declared_type": "TEXT"}));
        assert_eq!(lines[0]["served_by"], json!(node));
    }
    let (status, answer) = get_json(&at, "/api/v1/status").await;
    assert_eq!((status, answer["node_id"].as_u64(), answer["leader_id"].as_u64()), (200, Some(follower), Some(leader)));
    assert_eq!(answer["members"].as_array().map(Vec::len), Some(3));
    // Failures: the typed detail, the HTTP code from one mapping.
    let failures = [
        ("/api/v1/query", json!({"statement": {"sql": "SELECT * FROM nope"}}), 400, "ERROR_CODE_SQL"),
        ("/api/v1/query", json!({"statement": {"sql": "DELETE FROM t"}}), 400, "ERROR_CODE_REFUSED"),
        (
            "/api/v1/execute",
            json!({"statements": [{"sql": "INSERT INTO t (id) VALUES (1)"}]}),
            409,
            "ERROR_CODE_CONSTRAINT",
        ),
        ("/api/v1/execute", json!({"statements": [{"sql": "SELECT"}], "extra": 1}), 400, "ERROR_CODE_INVALID_REQUEST"),
        (
            "/api/v1/execute",
            json!({"statements": [{"sql": "SELECT ?", "params": [7]}]}),
            400,
            "ERROR_CODE_INVALID_REQUEST",
        ),
        ("/api/v1/execute", json!({"statements": [{"sql": "SELECT ?", "params": [{"blob": "%%"}]}]}), 400, "base64"),
        ("/api/v1/query", json!({"statement": {"sql": "SELECT 1"}, "consistency": "fast"}), 400, "INVALID_REQUEST"),
        ("/api/v1/remove-node", json!({"node_id": 0}), 400, "ERROR_CODE_INVALID_REQUEST"),
    ];
    for (target, body, code, says) in failures {
        let (status, answer) = post_json(&at, target, body.clone()).await;
        assert_eq!(status, code, "{body}: {answer}");
        assert!(answer.to_string().contains(says), "{body}: {answer}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
    }
    let (status, _, body) = http(&at, "POST", "/api/v1/execute", "application/json", b"{\"statements\": [").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid JSON body"), "{body}");
    let (status, _, _) = http(&at, "GET", "/api/v1/status?with_digest=maybe", "application/json", b"").await;
    assert_eq!(status, 400);
    let (status, answer) =
        post_json(&at, "/api/v1/query", json!({"statement": {"sql": "SELECT count(*) FROM t"}})).await;
    assert_eq!(status, 200, "still serving: {answer}");
}

/// The most a node's peak RSS may grow while it streams a 100 MB result.
const GROWTH_KIB_MAX: i64 = 40 * 1024;

/// A 100,000-row, 100 MB result streams through the native endpoint while
/// the serving node's peak memory stays flat, and the node serves on.
#[tokio::test]
async fn native_query_streams_a_large_result_in_flat_memory() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).expect("follower");
    let pid = cluster.children[&follower].id();
    let peak = || peak_rss_kib(pid).expect("the serving node's VmHWM");
    let before = peak();
    let sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000) \
               SELECT x, printf('%.1000c', 'y') AS pad FROM c";
    let request = json!({"statement": {"sql": sql}, "timeout_ms": 120_000}).to_string();
    // HTTP/1.0: the body runs to the end of the connection, unchunked,
    // read as it arrives without keeping it.
    let mut stream = tokio::net::TcpStream::connect(cluster.http_addr(follower)).await.expect("connect");
    let head = format!(
        "POST /api/v1/query HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{request}",
        request.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let (mut pending, mut buffer) = (Vec::new(), vec![0_u8; 1 << 16]);
    let (mut header_done, mut rows, mut bytes, mut next_x) = (false, 0_u64, 0_u64, 1_i64);
    for _ in 0..1_000_000 {
        let read = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buffer))
            .await
            .expect("data within 60 s")
            .expect("read");
        if read == 0 {
            break;
        }
        bytes += read as u64;
        pending.extend_from_slice(&buffer[..read]);
        if !header_done {
            let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            let head = String::from_utf8_lossy(&pending[..end]).to_string();
            assert!(head.contains(" 200 "), "{head}");
            pending.drain(..end + 4);
            header_done = true;
        }
        while let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
            let line: Json = serde_json::from_slice(&pending[..end]).expect("a JSON line");
            assert!(line.get("error").is_none(), "{line}");
            for row in line["rows"].as_array().expect("rows") {
                assert_eq!(row["values"][0]["integer"].as_i64(), Some(next_x), "rows in order");
                next_x += 1;
                rows += 1;
            }
            pending.drain(..=end);
        }
    }
    assert!(pending.is_empty(), "a partial last line");
    let after = peak();
    println!("streamed {rows} rows, {bytes} bytes; serving node's peak RSS {before} KiB before, {after} KiB after");
    assert_eq!(rows, 100_000);
    assert!(bytes > 100_000_000, "{bytes}");
    assert!(after < before + GROWTH_KIB_MAX, "peak memory grew by {} KiB for a {bytes}-byte result", after - before);
    // The measure sees buffering: rqlite's API gathers a result whole (up
    // to its 64 MiB bound, then refuses it), and the peak shows it.
    let (status, answer) = post_json(&cluster.http_addr(follower), "/db/query", json!([sql])).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.to_string().contains("over 64 MiB"), "{answer}");
    let gathered = peak();
    println!("after the same query through /db/query: {gathered} KiB");
    assert!(gathered > after + GROWTH_KIB_MAX, "a gathered result shows in the peak: {after} -> {gathered} KiB");
    let (status, answer) = get_json(&cluster.http_addr(follower), "/db/query?q=SELECT%201").await;
    assert_eq!(status, 200, "still serving: {answer}");
}

/// The OpenAPI document and Swagger UI are served, from the binary.
#[tokio::test]
async fn openapi_document_and_swagger_ui_are_served() {
    let cluster = Cluster::start(1, &[]);
    cluster.wait_leader(&[1]).await;
    let at = cluster.http_addr(1);
    let (status, document) = get_json(&at, "/openapi.json").await;
    assert_eq!(status, 200);
    assert!(document["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{document}");
    for path in ["/api/v1/execute", "/api/v1/query", "/db/query", "/db/execute", "/db/request", "/readyz"] {
        assert!(document["paths"].get(path).is_some(), "{path} documented");
    }
    let (status, head, page) = http(&at, "GET", "/openapi-ui/", "text/html", b"").await;
    assert_eq!(status, 200, "{head}");
    assert!(page.contains("swagger"), "{page}");
}

/// `/leader`, `/nodes`, `?redirect`, `?raft_index` and raft progress name
/// the leader's HTTP address, heard over the peer link, on every node.
#[tokio::test]
async fn cluster_endpoints_name_the_leader() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).expect("follower");
    let (at, leader_url) = (cluster.http_addr(follower), format!("http://{}", cluster.http_addr(leader)));
    let answer = wait_for(Duration::from_secs(10), "the leader's HTTP address heard", || async {
        let (status, answer) = get_json(&at, "/leader").await;
        (status == 200 && answer["leader"]["api_addr"] == json!(leader_url)).then_some(answer)
    })
    .await;
    let leader_entry = json!({"id": leader.to_string(), "addr": cluster.peer_addr(leader), "api_addr": leader_url});
    assert_eq!(answer, json!({ "leader": leader_entry }));
    let (status, nodes) = get_json(&at, "/nodes").await;
    assert_eq!(status, 200);
    let entry = |id: u64, leads: bool| {
        let url = format!("http://{}", cluster.http_addr(id));
        let addr = cluster.peer_addr(id);
        json!({"id": id.to_string(), "api_addr": url, "addr": addr, "voter": true, "reachable": true, "leader": leads})
    };
    // The follower hears the leader and is itself; the third node's
    // addresses it knows from the leader, who relays them, but it does not
    // hear that node itself (followers do not talk to each other).
    assert_eq!(nodes[leader.to_string()], entry(leader, true), "{nodes}");
    assert_eq!(nodes[follower.to_string()], entry(follower, false), "{nodes}");
    let third = [1, 2, 3].into_iter().find(|id| ![leader, follower].contains(id)).expect("a third node");
    let mut relayed = entry(third, false);
    relayed["reachable"] = json!(false);
    let nodes = wait_for(Duration::from_secs(10), "the third node's addresses relayed", || async {
        let (_, nodes) = get_json(&at, "/nodes").await;
        (nodes[third.to_string()] == relayed).then_some(nodes)
    })
    .await;
    assert_eq!(nodes.as_object().map(serde_json::Map::len), Some(3), "{nodes}");
    let (_, listed) = get_json(&cluster.http_addr(leader), "/nodes?ver=2").await;
    let all: Vec<Json> = [1, 2, 3].into_iter().map(|id| entry(id, id == leader)).collect();
    assert_eq!(listed, json!({ "nodes": all }), "the leader hears every member");
    // ?redirect: a follower answers with the leader's URL; the leader serves.
    let create = br#"["CREATE TABLE r (x)"]"#;
    let (status, head, _) = http(&at, "POST", "/db/execute?redirect&pretty", "application/json", create).await;
    assert_eq!(status, 301, "{head}");
    let location = format!("location: {leader_url}/db/execute?redirect&pretty");
    assert!(head.to_lowercase().contains(&location), "{head}");
    let (status, _, body) =
        http(&cluster.http_addr(leader), "POST", "/db/execute?redirect", "application/json", create).await;
    assert_eq!((status, body.as_str()), (200, r#"{"results":[{}]}"#));
    let (status, head, _) = http(&at, "GET", "/db/query?q=SELECT%201&redirect", "text/plain", b"").await;
    assert_eq!(status, 301, "{head}");
    let (status, _, _) = http(&at, "GET", "/db/query?q=SELECT%201&redirect&level=none", "text/plain", b"").await;
    assert_eq!(status, 200, "a read at none is served where it lands");
    // ?raft_index: the index a write was applied at.
    let (status, answer) = post_json(&at, "/db/execute?raft_index", json!(["INSERT INTO r VALUES (1)"])).await;
    assert_eq!(status, 200);
    let index = answer["raft_index"].as_u64().expect("a raft index");
    let (_, progress) = get_json(&cluster.http_addr(leader), "/api/v1/raft/progress").await;
    assert_eq!(progress["role"], json!("leader"));
    let matched: Vec<u64> =
        progress["progress"].as_array().expect("progress").iter().filter_map(|p| p["match_index"].as_u64()).collect();
    assert_eq!(matched.len(), 3, "{progress}");
    assert!(matched.iter().filter(|m| **m >= index).count() >= 2, "a quorum holds the write: {progress}");
    let (_, progress) = get_json(&at, "/api/v1/raft/progress").await;
    assert_eq!(progress["leader_id"], json!(leader));
    assert_eq!(progress["progress"][0]["match_index"], json!(null), "known on the leader only");
}

/// The value of the sample `name` (with its labels) in a metrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// `/metrics` serves Prometheus' text, and its counters move with the
/// traffic (the Python parser checks the format in `.ci/rqlite-clients`).
#[tokio::test]
async fn metrics_move_with_traffic() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    let at = cluster.http_addr(leader);
    let (status, head, before) = http(&at, "GET", "/metrics", "text/plain", b"").await;
    assert_eq!(status, 200, "{head}");
    assert!(head.to_lowercase().contains("application/openmetrics-text"), "{head}");
    assert!(before.ends_with("# EOF\n"), "{before}");
    let writes = r#"deeb_requests_total{api="http",operation="execute",outcome="ok"}"#;
    let failed = r#"deeb_requests_total{api="http",operation="execute",outcome="invalid_argument"}"#;
    assert_eq!(sample(&before, writes), None);
    for n in 0..5 {
        let (status, _) = post_json(&at, "/db/execute", json!([format!("CREATE TABLE m{n} (x)")])).await;
        assert_eq!(status, 200);
    }
    post_json(&at, "/db/execute", json!(["NOT SQL"])).await;
    let (_, _, after) = http(&at, "GET", "/metrics", "text/plain", b"").await;
    assert_eq!(sample(&after, writes), Some(5.0), "{after}");
    assert_eq!(sample(&after, failed), Some(1.0), "{after}");
    for name in [
        "deeb_server_is_leader",
        "deeb_server_has_leader",
        "deeb_disk_wal_fsync_duration_seconds_count",
        "deeb_server_batch_requests_count",
        r#"deeb_job_duration_seconds_count{job="apply"}"#,
    ] {
        assert!(sample(&after, name).is_some_and(|v| v >= 1.0), "{name} in\n{after}");
    }
    let sent = after.lines().filter(|l| l.starts_with("deeb_network_peer_sent_bytes_total{")).count();
    assert_eq!(sent, 2, "bytes sent to each follower:\n{after}");
    let applied = sample(&after, "deeb_server_proposals_applied").expect("applied");
    assert!(applied > sample(&before, "deeb_server_proposals_applied").expect("applied"));
    let open = sample(&after, r#"deeb_open_connections{listener="http"}"#).expect("open connections");
    assert!(open >= 1.0, "this scrape's own connection: {after}");
}
