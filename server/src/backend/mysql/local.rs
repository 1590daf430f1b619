//! A MariaDB server of deeb's own on loopback, for `deeb dev --backend
//! mysql` and the tests: a data directory made with `mariadb-install-db`,
//! `mariadbd --no-defaults` on a port of 127.0.0.1, a database `deeb` and a
//! user with a random password. Stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};

/// How long a new server may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// One local MariaDB server.
pub struct LocalServer {
    dir: PathBuf,
    port: u16,
    password: String,
    child: Option<Child>,
}

/// Finds a program on PATH or in the system directories Debian puts
/// servers in (not on a normal user's PATH).
fn program(name: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin", "/usr/local/sbin", "/usr/libexec"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(format!("{name} not found: install MariaDB first (apt-get install mariadb-server)"))
}

/// Makes the child `command` starts get SIGKILL when the thread that
/// started it dies, however it dies, so that no child outlives its parent.
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl only, between fork and exec (async-signal-safe).
    unsafe {
        use std::os::unix::process::CommandExt as _;
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

impl LocalServer {
    /// Makes the data directory under `dir` if it is new, starts the server
    /// on `port`, and waits until it takes connections; creates database
    /// `deeb` and user `deeb` (password kept in `dir/password`).
    ///
    /// # Errors
    /// MariaDB is not installed, or the server does not come up (its error
    /// log is named).
    pub fn start(dir: &Path, port: u16) -> Result<LocalServer, String> {
        let data = dir.join("data");
        // A temporary directory of its own: a starting server deletes every
        // `#sql*` file in its tmpdir, another server's temporary tables too.
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|error| format!("{}: {error}", tmp.display()))?;
        // SAFETY: geteuid has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        if !data.join("mysql").is_dir() {
            let mut install = Command::new(program("mariadb-install-db")?);
            install.arg("--no-defaults").arg(format!("--datadir={}", data.display())).env("TMPDIR", &tmp);
            install.args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
            if as_root {
                install.arg("--user=root");
            }
            let output = install.output().map_err(|error| format!("mariadb-install-db: {error}"))?;
            if !output.status.success() {
                let log = dir.join("install.log");
                let _ = std::fs::write(&log, [&output.stdout[..], &output.stderr[..]].concat());
                let text = String::from_utf8_lossy(&output.stderr).into_owned();
                let errors: Vec<&str> = text.lines().filter(|line| line.contains("ERROR")).collect();
                return Err(format!(
                    "mariadb-install-db failed: {} (all of it in {})",
                    errors.join("; "),
                    log.display()
                ));
            }
        }
        let password_file = dir.join("password");
        let password = match std::fs::read_to_string(&password_file) {
            Ok(password) => password.trim().to_owned(),
            Err(_) => {
                let password = format!("{:032x}", rand::random::<u128>());
                std::fs::write(&password_file, &password).map_err(|error| format!("{}: {error}", dir.display()))?;
                password
            }
        };
        let mut server = LocalServer { dir: dir.to_path_buf(), port, password, child: None };
        server.spawn()?;
        server.create_database()?;
        Ok(server)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("mysqld.sock")
    }

    /// Starts `mariadbd` and waits until it answers.
    fn spawn(&mut self) -> Result<(), String> {
        let data = self.dir.join("data");
        let log = self.dir.join("error.log");
        let mut command = Command::new(program("mariadbd")?);
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", self.dir.join("mysqld.pid").display()))
            .arg(format!("--tmpdir={}", self.dir.join("tmp").display()))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--port={}", self.port))
            .args(["--bind-address=127.0.0.1", "--innodb-buffer-pool-size=64M", "--max-connections=200"])
            .args(["--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci"]);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            command.arg("--user=root");
        }
        // The server dies with the thread that started it (a test, `deeb
        // dev`), however that dies.
        die_with_parent(&mut command);
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("mariadbd: {error}"))?;
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < READY_WITHIN {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!("mariadbd exited ({status}); see {}", log.display()));
            }
            if self.root().is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("mariadbd on port {} not ready within {READY_WITHIN:?}; see {}", self.port, log.display()))
    }

    /// A root connection over the server's socket.
    fn root(&self) -> Result<Conn, mysql::Error> {
        let opts = OptsBuilder::new().socket(Some(self.socket().to_string_lossy().into_owned())).user(Some("root"));
        Conn::new(opts)
    }

    fn create_database(&self) -> Result<(), String> {
        let mut root = self.root().map_err(|error| format!("MariaDB on port {}: {error}", self.port))?;
        let statements = [
            "CREATE DATABASE IF NOT EXISTS deeb CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci".to_owned(),
            format!("CREATE USER IF NOT EXISTS 'deeb'@'127.0.0.1' IDENTIFIED BY '{}'", self.password),
            // deeb loads snapshots into a database of its own beside `deeb`.
            "GRANT ALL ON *.* TO 'deeb'@'127.0.0.1'".to_owned(),
        ];
        for statement in statements {
            root.query_drop(statement).map_err(|error| format!("MariaDB on port {}: {error}", self.port))?;
        }
        Ok(())
    }

    /// The `--mysql-url` of database `deeb` on this server.
    pub fn url(&self) -> String {
        self.url_of("deeb")
    }

    /// The URL of another database on this server.
    pub fn url_of(&self, database: &str) -> String {
        format!("mysql://deeb:{}@127.0.0.1:{}/{database}", self.password, self.port)
    }

    /// The password in [`Self::url`] (for checking logs never show it).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A root connection to database `deeb` (for tests that change data
    /// behind deeb's back).
    ///
    /// # Errors
    /// The server does not answer.
    pub fn connect_root(&self) -> Result<Conn, mysql::Error> {
        let opts = OptsBuilder::new()
            .socket(Some(self.socket().to_string_lossy().into_owned()))
            .user(Some("root"))
            .db_name(Some("deeb"));
        Conn::new(opts)
    }

    /// Stops the server (SIGKILL if `kill`, otherwise SIGTERM and a wait
    /// of at most 30 s).
    pub fn stop(&mut self, kill: bool) {
        let Some(mut child) = self.child.take() else { return };
        if !kill {
            // SAFETY: a signal to our own child, which has not been reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts it again after [`Self::stop`].
    ///
    /// # Errors
    /// As [`Self::start`].
    pub fn restart(&mut self) -> Result<(), String> {
        if self.child.is_none() {
            self.spawn()?;
        }
        Ok(())
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.stop(false);
    }
}
