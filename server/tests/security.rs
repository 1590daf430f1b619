//! Security with real processes on loopback: client TLS, peer mutual TLS,
//! users and permissions (through a follower as well as the leader),
//! client certificates, certificate reload on SIGHUP, connection limits
//! and idle timeouts. Certificates are made here (rcgen).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{cells, wait_for, Cluster};
use deeb_client::{Error, Options};
use deeb_proto::peer_client::PeerClient;
use deeb_proto::{RaftBatch, SnapshotChunk, SnapshotHeader};
use deeb_server::security::certs::{write_pem, Authority};
use deeb_server::security::tls::channel_config;
use deeb_server::security::{basic_authorization, users::hash_secret};
use tonic::transport::Endpoint;

/// A CA and certificates in a directory of their own.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA (`NAME-ca.pem`) and one node certificate for 127.0.0.1
    /// (`NAME-node.pem`), shared by every node of a test cluster.
    fn new() -> Pki {
        let pki = Pki { dir: tempfile::tempdir().expect("dir") };
        pki.authority("main");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn authority(&self, name: &str) -> Authority {
        let ca = Authority::new(&format!("{name} test CA")).expect("ca");
        write_pem(&self.path(&format!("{name}-ca.pem")), ca.cert_pem(), false).expect("write");
        write_pem(&self.path(&format!("{name}-ca-key.pem")), ca.key_pem(), true).expect("write");
        self.issue(&ca, &format!("{name}-node"), &["127.0.0.1".into()]);
        ca
    }

    fn issue(&self, ca: &Authority, name: &str, hosts: &[String]) {
        let issued = ca.issue(name, hosts).expect("issue");
        write_pem(&self.path(&format!("{name}.pem")), &issued.cert_pem, false).expect("write");
        write_pem(&self.path(&format!("{name}-key.pem")), &issued.key_pem, true).expect("write");
    }

    /// The flags for client TLS (optionally requiring client certificates)
    /// and peer mutual TLS with the `main` CA.
    fn node_flags(&self, client_ca: bool) -> Vec<String> {
        let (cert, key, ca) = (self.path("main-node.pem"), self.path("main-node-key.pem"), self.path("main-ca.pem"));
        let mut flags = vec![
            ("--tls-cert", &cert),
            ("--tls-key", &key),
            ("--peer-tls-cert", &cert),
            ("--peer-tls-key", &key),
            ("--peer-tls-ca", &ca),
        ];
        if client_ca {
            flags.push(("--tls-client-ca", &ca));
        }
        flags.into_iter().flat_map(|(flag, path)| [flag.to_owned(), path.display().to_string()]).collect()
    }

    /// Client options trusting the `main` CA, with `identity` (a
    /// certificate name made by `issue`) if given.
    fn options(&self, identity: Option<&str>) -> Options {
        let files = identity.map(|name| (self.path(&format!("{name}.pem")), self.path(&format!("{name}-key.pem"))));
        let identity = files.as_ref().map(|(cert, key)| (cert.as_path(), key.as_path()));
        let tls = channel_config(Some(&self.path("main-ca.pem")), identity).expect("tls");
        Options { tls: Some(tls), retry_budget: Duration::from_secs(3), ..Options::default() }
    }
}

const ADMIN_PASSWORD: &str = "admin-Secret-1";
const READER_PASSWORD: &str = "reader-Secret-2";
const OPERATOR_PASSWORD: &str = "operator-secret-7";
const WRITER_PASSWORD: &str = "writer-secret-5";

/// A users file: admin (all), reader (query, status), anonymous (status).
fn users_file(dir: &Path) -> PathBuf {
    let admin = hash_secret(ADMIN_PASSWORD).expect("hash");
    let reader = hash_secret(READER_PASSWORD).expect("hash");
    let operator = hash_secret(OPERATOR_PASSWORD).expect("hash");
    let writer = hash_secret(WRITER_PASSWORD).expect("hash");
    let text = format!(
        r#"[{{"username": "admin", "password_hash": "{admin}", "perms": ["all"]}},
            {{"username": "reader", "password_hash": "{reader}", "perms": ["query", "status"]}},
            {{"username": "operator", "password_hash": "{operator}", "perms": ["backup"]}},
            {{"username": "writer", "password_hash": "{writer}", "perms": ["execute"]}},
            {{"username": "*", "perms": ["status"]}}]"#
    );
    let path = dir.join("users.json");
    std::fs::write(&path, text).expect("write users");
    path
}

fn as_user(mut options: Options, user: &str, password: &str) -> Options {
    options.authorization = Some(basic_authorization(user, password));
    options
}

/// Starts a 3-node cluster with client TLS, peer mutual TLS and `extra`.
fn secured_cluster(pki: &Pki, client_ca: bool, extra: &[String]) -> Cluster {
    let mut flags = pki.node_flags(client_ca);
    flags.extend_from_slice(extra);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cluster = Cluster::start(3, &flags);
    cluster.secrets = vec![ADMIN_PASSWORD.into(), READER_PASSWORD.into(), OPERATOR_PASSWORD.into()];
    cluster
}

fn code_of(error: &Error) -> Option<tonic::Code> {
    Some(error.code())
}

/// Permissions hold through a follower as well as through the leader; a
/// wrong password is refused; anonymous access follows the `*` entry.
#[tokio::test]
async fn permissions_hold_through_follower_and_leader() {
    let pki = Pki::new();
    let users = users_file(pki.dir.path());
    let mut cluster = secured_cluster(&pki, false, &["--auth".into(), users.display().to_string()]);
    cluster.options = as_user(pki.options(None), "admin", ADMIN_PASSWORD);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).expect("follower");
    // The admin writes through a follower: the leader believes the user
    // the follower forwards over the peer link.
    cluster.execute(follower, "CREATE TABLE t (id INTEGER PRIMARY KEY)").await.expect("admin creates via follower");
    cluster.execute(leader, "INSERT INTO t VALUES (1)").await.expect("admin writes on the leader");
    let reader = as_user(pki.options(None), "reader", READER_PASSWORD);
    for node in [follower, leader] {
        let client = cluster.sql_client(node, Options { follow_leader: false, ..reader.clone() });
        let rows = common::query_with(&client, "SELECT count(*) FROM t").await.expect("reader reads");
        assert_eq!(cells(&rows), vec![vec!["1".to_owned()]]);
        let write = client.execute_sql("INSERT INTO t VALUES (2)").await.expect_err("reader may not write");
        assert_eq!(code_of(&write), Some(tonic::Code::PermissionDenied), "node {node}: {write:?}");
        let mut grpc = client.pool().client(&cluster.addr(node)).expect("client");
        let mut request = tonic::Request::new(deeb_proto::RemoveNodeRequest { node_id: 3 });
        let value = basic_authorization("reader", READER_PASSWORD).parse().expect("metadata");
        request.metadata_mut().insert("authorization", value);
        let removed = grpc.remove_node(request).await.expect_err("reader may not change membership");
        assert_eq!(removed.code(), tonic::Code::PermissionDenied, "node {node}: {removed:?}");
        // Backups need the `backup` permission, which the reader lacks and
        // the operator has (and nothing else).
        let refused = client.backup(deeb_proto::BackupRequest::default()).await.expect_err("reader may not back up");
        assert_eq!(code_of(&refused), Some(tonic::Code::PermissionDenied), "node {node}: {refused:?}");
        let operator = as_user(pki.options(None), "operator", OPERATOR_PASSWORD);
        let operator = cluster.sql_client(node, Options { follow_leader: false, ..operator });
        let mut stream = operator.backup(deeb_proto::BackupRequest::default()).await.expect("operator backs up");
        let (mut bytes, mut announced) = (0, None);
        for _ in 0..100_000 {
            let Some(chunk) = stream.message().await.expect("a chunk") else { break };
            announced = announced.or(chunk.header.map(|header| header.total_bytes));
            bytes += chunk.data.len() as u64;
        }
        assert_eq!(Some(bytes), announced, "node {node}: the whole copy");
        let query = common::query_with(&operator, "SELECT 1").await.expect_err("the operator may not query");
        assert_eq!(code_of(&query), Some(tonic::Code::PermissionDenied), "{query:?}");
    }
    // A restore replaces the whole database: it needs `backup` as well as
    // `execute`, which alone writes.
    let writer = cluster.sql_client(follower, as_user(pki.options(None), "writer", WRITER_PASSWORD));
    writer.execute_sql("INSERT INTO t VALUES (3)").await.expect("the writer writes");
    let piece = deeb_proto::RestorePart { id: "r".into(), last: true, data: b"x".to_vec(), ..Default::default() };
    let restore = deeb_proto::ExecuteRequest { restore: Some(piece), ..Default::default() };
    let refused = writer.execute_request(restore).await.expect_err("a writer may not restore");
    assert_eq!(code_of(&refused), Some(tonic::Code::PermissionDenied), "{refused:?}");
    let wrong = cluster.sql_client(follower, as_user(pki.options(None), "reader", "not-the-password"));
    let refused = common::query_with(&wrong, "SELECT 1").await.expect_err("wrong password");
    assert_eq!(code_of(&refused), Some(tonic::Code::Unauthenticated), "{refused:?}");
    let anonymous = cluster.sql_client(follower, pki.options(None));
    anonymous.status(&cluster.addr(follower)).await.expect("anonymous may see status");
    let refused = common::query_with(&anonymous, "SELECT 1").await.expect_err("anonymous may not query");
    assert_eq!(code_of(&refused), Some(tonic::Code::PermissionDenied), "{refused:?}");
    // Nothing of the above put a password in a log line.
    assert_eq!(cluster.leaked_secrets(), Vec::<String>::new());
}

/// With --tls-client-ca a client must present a certificate from that CA;
/// its common name names the user.
#[tokio::test]
async fn client_certificates_are_required_and_name_the_user() {
    let pki = Pki::new();
    let main = Authority::new("user CA").expect("ca");
    write_pem(&pki.path("user-ca.pem"), main.cert_pem(), false).expect("write");
    pki.issue(&main, "reader", &[]);
    let stranger = Authority::new("stranger CA").expect("ca");
    pki.issue(&stranger, "stranger", &[]);
    let users = users_file(pki.dir.path());
    let mut flags = pki.node_flags(false);
    flags.extend(["--tls-client-ca".to_owned(), pki.path("user-ca.pem").display().to_string()]);
    flags.extend(["--auth".to_owned(), users.display().to_string()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cluster = Cluster::start(3, &flags);
    cluster.options = pki.options(Some("reader"));
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    let rows = cluster.query(leader, "SELECT 7").await.expect("the reader's certificate names a user");
    assert_eq!(cells(&rows), vec![vec!["7".to_owned()]]);
    let write = cluster.execute(leader, "CREATE TABLE t (id INTEGER)").await.expect_err("reader may not write");
    assert_eq!(code_of(&write), Some(tonic::Code::PermissionDenied), "{write:?}");
    for options in [pki.options(None), pki.options(Some("stranger"))] {
        let client = cluster.sql_client(leader, options);
        client.status(&cluster.addr(leader)).await.expect_err("no certificate from the client CA");
    }
    // A user's certificate is not a node's: the peer listener refuses it.
    let reader_tls =
        channel_config(Some(&pki.path("main-ca.pem")), Some((&pki.path("reader.pem"), &pki.path("reader-key.pem"))))
            .expect("tls");
    let peer = Endpoint::from_shared(format!("https://{}", cluster.peer_addr(leader))).expect("uri");
    let raft = match peer.tls_config(reader_tls).expect("tls").connect().await {
        Ok(channel) => PeerClient::new(channel).raft(tokio_stream::iter([RaftBatch::default()])).await.map(drop),
        Err(error) => Err(tonic::Status::unavailable(error.to_string())),
    };
    assert!(raft.is_err(), "a user's certificate reached the peer service");
}

/// A peer with a certificate from another CA, or with none, cannot join,
/// send raft messages or stream a snapshot; the cluster keeps serving.
#[tokio::test]
async fn peers_without_a_certificate_from_the_peer_ca_are_refused() {
    let pki = Pki::new();
    pki.authority("other");
    let mut cluster = secured_cluster(&pki, false, &[]);
    cluster.options = pki.options(None);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    let target = cluster.peer_addr(leader);
    // Raw peer calls: with the other CA's certificate, and over plaintext.
    let other_ca = channel_config(
        Some(&pki.path("main-ca.pem")),
        Some((&pki.path("other-node.pem"), &pki.path("other-node-key.pem"))),
    )
    .expect("tls");
    let with_other =
        Endpoint::from_shared(format!("https://{target}")).expect("uri").tls_config(other_ca).expect("tls");
    let plain = Endpoint::from_shared(format!("http://{target}")).expect("uri");
    for (what, endpoint) in [("another CA's certificate", with_other), ("no TLS", plain)] {
        let batch = RaftBatch { from: 99, ..RaftBatch::default() };
        let raft = match endpoint.connect().await {
            Ok(channel) => PeerClient::new(channel).raft(tokio_stream::iter([batch])).await.map(drop),
            Err(error) => Err(tonic::Status::unavailable(error.to_string())),
        };
        assert!(raft.is_err(), "{what}: raft messages accepted");
        let header = SnapshotHeader { from: 99, ..SnapshotHeader::default() };
        let chunk = SnapshotChunk { header: Some(header), ..SnapshotChunk::default() };
        let snapshot = match endpoint.connect().await {
            Ok(channel) => PeerClient::new(channel).install_snapshot(tokio_stream::iter([chunk])).await.map(drop),
            Err(error) => Err(tonic::Status::unavailable(error.to_string())),
        };
        assert!(snapshot.is_err(), "{what}: snapshot stream accepted");
    }
    // A node with the other CA's certificate tries to join.
    let other_flags = [
        "--peer-tls-cert",
        &pki.path("other-node.pem").display().to_string(),
        "--peer-tls-key",
        &pki.path("other-node-key.pem").display().to_string(),
        "--peer-tls-ca",
        &pki.path("other-ca.pem").display().to_string(),
    ]
    .map(str::to_owned);
    cluster.extra_args = other_flags.to_vec();
    cluster.spawn_joining(4, leader, false);
    let log = cluster.dir.path().join(format!("node-{leader}.log"));
    wait_for(Duration::from_secs(15), "the leader refuses node 4's handshake", || async {
        std::fs::read_to_string(&log).ok()?.contains("TLS handshake refused side=\"peers\"").then_some(())
    })
    .await;
    cluster.execute(leader, "CREATE TABLE t (id INTEGER PRIMARY KEY)").await.expect("the cluster serves");
    let status = cluster.status(leader).await.expect("status");
    assert!(status.members.iter().all(|member| member.node_id != 4), "node 4 joined: {status:?}");
}

/// A rotated certificate is served after SIGHUP, without a restart and
/// without the cluster losing its leader.
#[tokio::test]
async fn certificates_are_reloaded_on_sighup() {
    let pki = Pki::new();
    let mut cluster = secured_cluster(&pki, false, &[]);
    cluster.options = pki.options(None);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    let before = served_certificate(&cluster.addr(leader), &pki.path("main-ca.pem")).await;
    let term = cluster.status(leader).await.expect("status").term;
    // Same CA, new key and certificate, written over the files.
    let main = Authority::load(
        &std::fs::read_to_string(pki.path("main-ca.pem")).expect("ca"),
        &std::fs::read_to_string(pki.path("main-ca-key.pem")).expect("ca key"),
    )
    .expect("main CA");
    pki.issue(&main, "main-node", &["127.0.0.1".into()]);
    for child in cluster.children.values() {
        let sent = std::process::Command::new("kill").args(["-HUP", &child.id().to_string()]).status();
        assert!(sent.is_ok_and(|status| status.success()));
    }
    let after = wait_for(Duration::from_secs(10), "the new certificate is served", || async {
        let served = served_certificate(&cluster.addr(leader), &pki.path("main-ca.pem")).await;
        (served != before).then_some(served)
    })
    .await;
    let on_disk = std::fs::read_to_string(pki.path("main-node.pem")).expect("cert");
    let der: rustls::pki_types::CertificateDer<'_> =
        rustls::pki_types::pem::PemObject::from_pem_slice(on_disk.as_bytes()).expect("pem");
    assert_eq!(after, der.to_vec());
    cluster.execute(leader, "CREATE TABLE t (id INTEGER PRIMARY KEY)").await.expect("the cluster serves");
    let status = cluster.status(leader).await.expect("status");
    assert_eq!((status.role.as_str(), status.term), ("leader", term), "leadership kept across the reload");
}

/// The certificate `address` presents (DER), checked against `ca`.
async fn served_certificate(address: &str, ca: &Path) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in deeb_server::security::tls::load_certs(ca).expect("ca") {
        roots.add(cert).expect("root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    tls.get_ref().1.peer_certificates().expect("certificate")[0].to_vec()
}

/// 5,000 idle connections to one node do not stop it serving others, and
/// are closed after the idle timeout; a client that sends part of a
/// request and then nothing is dropped after the idle timeout too.
#[tokio::test]
async fn idle_and_slow_connections_do_not_stop_a_node() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let cluster = Cluster::start(3, &["--idle-timeout", "4s"]);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    cluster.execute(leader, "CREATE TABLE t (id INTEGER PRIMARY KEY)").await.expect("create");
    let target = cluster.addr(leader);
    let mut idle = Vec::new();
    for _ in 0..IDLE_CONNECTIONS {
        idle.push(tokio::net::TcpStream::connect(&target).await.expect("connect"));
    }
    let started = std::time::Instant::now();
    cluster.execute(leader, "INSERT INTO t VALUES (1)").await.expect("served with the idle connections open");
    let rows = cluster.query(leader, "SELECT count(*) FROM t").await.expect("read");
    assert_eq!(cells(&rows), vec![vec!["1".to_owned()]]);
    println!("a write and a read with {IDLE_CONNECTIONS} idle connections open: {:?}", started.elapsed());
    // A slow client: the HTTP/2 preface and the start of a frame, then nothing.
    let mut slow = tokio::net::TcpStream::connect(&target).await.expect("connect");
    slow.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00").await.expect("partial request");
    let sent = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buffer = [0u8; 1024];
        while let Ok(read) = slow.read(&mut buffer).await {
            if read == 0 {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the slow client was not dropped");
    assert!(sent.elapsed() >= Duration::from_secs(3), "dropped before the idle timeout: {:?}", sent.elapsed());
    // The idle ones were closed by now as well.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 1024];
        // The server's settings frame, then the end.
        while let Ok(read) = idle[0].read(&mut buffer).await {
            if read == 0 {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle connection is still open");
    drop(idle);
    cluster.execute(leader, "INSERT INTO t VALUES (2)").await.expect("still serving");
}

const IDLE_CONNECTIONS: usize = 5_000;

/// Past --max-connections a caller gets a clear error, and is served again
/// once connections close.
#[tokio::test]
async fn connections_past_the_limit_get_a_clear_error() {
    let cluster = Cluster::start(3, &["--max-connections", "16"]);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    let target = cluster.addr(leader);
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(tokio::net::TcpStream::connect(&target).await.expect("connect"));
    }
    // The listener takes them up in the background.
    let refused = wait_for(Duration::from_secs(10), "a refusal", || async {
        let client = cluster.sql_client(leader, Options::default());
        client.status(&target).await.err()
    })
    .await;
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("too many connections"), "{}", refused.message());
    // Connections of earlier calls (finding the leader) may still close
    // and free a place: let them, and take any place they free.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(&target).await.expect("connect"));
    }
    // A connection past the limit is closed at a fixed deadline, however
    // busily its caller speaks: a valid HTTP/2 preface, then pings.
    let mut chatty = tokio::net::TcpStream::connect(&target).await.expect("connect");
    let opened = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        use tokio::io::AsyncWriteExt as _;
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
        let ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00pingpong";
        let mut sent = chatty.write_all(preface).await;
        while sent.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            sent = chatty.write_all(ping).await;
        }
    })
    .await;
    let lived = opened.elapsed();
    println!("an over-limit connection pinging every 200 ms was closed after {lived:?}");
    assert!(closed.is_ok(), "an over-limit connection stayed open for 8 s by pinging");
    assert!(lived >= Duration::from_millis(1500), "closed before its deadline ({lived:?}): was it served at all?");
    drop(held);
    wait_for(Duration::from_secs(10), "served again", || async {
        cluster.sql_client(leader, Options::default()).status(&target).await.ok()
    })
    .await;
}

/// The log check above finds what it looks for.
#[test]
fn the_log_check_finds_planted_secrets() {
    let secrets = vec![ADMIN_PASSWORD.to_owned()];
    let clean = "INFO node open\nINFO authentication refused credentials=Password(\"admin\")";
    assert!(common::lines_with_secrets(clean, &secrets).is_empty());
    let leaked = format!("INFO ok\nDEBUG header authorization={ADMIN_PASSWORD}\nINFO -----BEGIN PRIVATE KEY-----\n");
    assert_eq!(common::lines_with_secrets(&leaked, &secrets).len(), 2);
}
