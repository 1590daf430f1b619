//! `deeb shell` with piped stdin.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use common::Cluster;

fn shell(addr: &str, extra: &[&str], input: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_deeb"))
        .args(["shell", "--addr", addr])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shell");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write session");
    child.wait_with_output().expect("output")
}

async fn shell_async(addr: String, extra: &'static [&'static str], input: &'static str) -> std::process::Output {
    tokio::task::spawn_blocking(move || shell(&addr, extra, input)).await.expect("join")
}

/// A piped session runs statement after statement (a `;` in a string does
/// not end one, a trigger body stays whole), and stops at the first
/// failure with exit code 1.
#[tokio::test]
async fn piped_session_prints_a_table_and_stops_at_the_first_error() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[1, 2, 3]).await;
    let session = "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT);\n\
                   CREATE TABLE scratch (x);\n\
                   INSERT INTO scratch VALUES (1);\n\
                   CREATE TRIGGER wipe AFTER INSERT ON people BEGIN\n\
                     DELETE FROM scratch;\n\
                   END;\n\
                   INSERT INTO people (name) VALUES ('alice'),\n  ('bob; the builder');\n\
                   SELECT id, name FROM people ORDER BY id;\n\
                   .tables\n\
                   SELECT count(*) AS left_in_scratch FROM scratch;\n\
                   SELECT * FROM nowhere;\n\
                   INSERT INTO people (name) VALUES ('after the error');\n\
                   .quit\n";
    let output = shell_async(cluster.addr(2), &[], session).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    let table = " id | name\n----+------------------\n 1  | alice\n 2  | bob; the builder\n(2 rows)\n";
    assert!(stdout.contains(table), "stdout:\n{stdout}");
    assert!(stdout.contains("\npeople\nscratch\n"), "stdout:\n{stdout}");
    assert!(stdout.contains(" left_in_scratch\n-----------------\n 0\n"), "the trigger ran whole:\n{stdout}");
    assert_eq!(stderr, "error: no such table: nowhere [sql]\n");
    let rows = cluster.query(1, "SELECT count(*) FROM people").await.expect("count");
    assert_eq!(common::cells(&rows), [["2"]], "nothing after the failing statement ran");
}

/// `--keep-going` runs on after a failure (and still exits 1); `.mode`,
/// `.headers`, `.nullvalue` and `.schema` print exactly.
#[tokio::test]
async fn keep_going_modes_and_schema() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[1, 2, 3]).await;
    let session = "CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT);\n\
                   INSERT INTO nowhere VALUES (1);\n\
                   INSERT INTO kv VALUES (1, 'a,\"b\"'), (2, NULL);\n\
                   .mode csv\n\
                   SELECT * FROM kv ORDER BY k;\n\
                   .headers off\n\
                   SELECT v FROM kv ORDER BY k;\n\
                   .mode line\n\
                   .nullvalue (null)\n\
                   SELECT v FROM kv WHERE k = 2;\n\
                   .schema\n";
    let output = shell_async(cluster.addr(1), &["--keep-going"], session).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "a failure still shows in the exit code");
    let expected = "k,v\n1,\"a,\"\"b\"\"\"\n2,\n\"a,\"\"b\"\"\"\n\nv = (null)\n\
                    CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT);\n";
    assert!(stdout.ends_with(expected), "stdout:\n{stdout}");
}

/// A shell on a pseudo-terminal, driven as a person types.
mod pty {
    use std::io::{Read as _, Write as _};
    use std::os::fd::{FromRawFd as _, OwnedFd};
    use std::os::unix::process::CommandExt as _;
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    pub struct Terminal {
        pub child: Child,
        writer: std::fs::File,
        screen: Arc<Mutex<Vec<u8>>>,
        /// Prompts waited for so far.
        prompts: usize,
    }

    impl Terminal {
        /// Starts `deeb shell` with the terminal as its stdin, stdout and
        /// stderr and as its controlling terminal (so Ctrl-C is SIGINT).
        pub fn start(addr: &str, history: &std::path::Path) -> Terminal {
            let (mut master, mut slave) = (0, 0);
            // SAFETY: out pointers are valid; no name, termios or size.
            let rc = unsafe {
                libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null())
            };
            assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
            // SAFETY: fresh descriptors we own.
            let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
            let mut command = Command::new(env!("CARGO_BIN_EXE_deeb"));
            command
                .args(["shell", "--addr", addr])
                .env("DEEB_HISTORY", history)
                .env("TERM", "xterm")
                .stdin(Stdio::from(slave.try_clone().expect("dup")))
                .stdout(Stdio::from(slave.try_clone().expect("dup")))
                .stderr(Stdio::from(slave));
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = command.spawn().expect("start deeb shell");
            let writer = std::fs::File::from(master.try_clone().expect("dup"));
            let mut reader = std::fs::File::from(master);
            let screen = Arc::new(Mutex::new(Vec::new()));
            let filled = Arc::clone(&screen);
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                // Ends with EIO once the shell has exited.
                while let Ok(n @ 1..) = reader.read(&mut buffer) {
                    filled.lock().expect("screen").extend_from_slice(&buffer[..n]);
                }
            });
            Terminal { child, writer, screen, prompts: 0 }
        }

        pub fn send(&mut self, keys: &str) {
            self.writer.write_all(keys.as_bytes()).expect("type");
        }

        /// Everything the terminal has shown so far.
        pub fn screen(&self) -> String {
            String::from_utf8_lossy(&self.screen.lock().expect("screen")).into_owned()
        }

        /// Waits (at most 20 s) for the shell's next prompt: rustyline drops
        /// what is typed before it prepares one. Each prompt starts with
        /// the bracketed-paste switch (`ESC [?2004h`), so they are counted.
        pub fn wait_prompt(&mut self) {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let shown = self.screen().matches("\x1b[?2004h").count();
                if shown > self.prompts {
                    self.prompts = shown;
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "waited for prompt {}; screen:\n{}",
                    self.prompts + 1,
                    self.screen()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        /// Waits (at most 20 s) until the screen shows `text` `times` times.
        pub fn wait_for(&self, text: &str, times: usize) {
            let deadline = Instant::now() + Duration::from_secs(20);
            while self.screen().matches(text).count() < times {
                assert!(Instant::now() < deadline, "waited for {text:?} x{times}; screen:\n{}", self.screen());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    impl Drop for Terminal {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The shell on a terminal: a multi-line trigger is created whole, the up
/// arrow recalls it (one history entry, kept in the history file), Ctrl-C
/// cancels a runaway query without leaving the shell, `.mode csv` prints
/// exactly, Ctrl-D leaves with 0.
#[tokio::test]
async fn terminal_session() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_leader(&[1, 2, 3]).await;
    let history = cluster.dir.path().join("history");
    let addr = cluster.addr(leader);
    let history_file = history.clone();
    let screen = tokio::task::spawn_blocking(move || {
        let mut terminal = pty::Terminal::start(&addr, &history_file);
        terminal.wait_prompt();
        terminal.send("CREATE TABLE t (x);\r");
        terminal.wait_for("0 rows affected", 1);
        terminal.wait_prompt();
        terminal.send("CREATE TRIGGER tr AFTER INSERT ON t BEGIN\r");
        terminal.wait_for("...> ", 1);
        terminal.wait_prompt();
        terminal.send("  DELETE FROM t;\r");
        terminal.wait_for("...> ", 2);
        terminal.wait_prompt();
        terminal.send("END;\r");
        terminal.wait_for("0 rows affected", 2);
        // Up arrow: the whole trigger comes back as one entry; run again,
        // it fails because it exists (so it was recalled whole).
        terminal.wait_prompt();
        terminal.send("\x1b[A\r");
        terminal.wait_for("trigger tr already exists", 1);
        // Ctrl-C while typing drops the input.
        terminal.wait_prompt();
        terminal.send("SELECT 'never sent'");
        terminal.send("\x03");
        terminal.wait_prompt();
        terminal.send("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c;\r");
        std::thread::sleep(std::time::Duration::from_millis(700));
        terminal.send("\x03");
        terminal.wait_for("error: interrupted", 1);
        terminal.wait_prompt();
        terminal.send(".mode csv\r");
        terminal.wait_prompt();
        terminal.send("SELECT 1 AS a, 'x,y' AS b, NULL AS c;\r");
        terminal.wait_for("a,b,c\r\n1,\"x,y\",\r\n", 1);
        terminal.wait_prompt();
        terminal.send("\x04");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some(status) = terminal.child.try_wait().expect("wait") {
                break status;
            }
            assert!(std::time::Instant::now() < deadline, "Ctrl-D did not end the shell");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(status.success(), "{status:?}");
        terminal.screen()
    })
    .await
    .expect("join");
    // Echoed once as typed; run, it would show again as header and value.
    assert_eq!(screen.matches("never sent").count(), 1, "{screen}");
    let schema = cluster.query(leader, "SELECT sql FROM sqlite_schema WHERE name = 'tr'").await.expect("schema");
    let expected = "CREATE TRIGGER tr AFTER INSERT ON t BEGIN\n  DELETE FROM t;\nEND";
    assert_eq!(common::cells(&schema), [[expected]], "the trigger was created whole");
    let saved = std::fs::read_to_string(&history).expect("history file");
    assert!(saved.contains("DELETE FROM t;"), "history: {saved}");
}
