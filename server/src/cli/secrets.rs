//! `deeb passwd` and `deeb certs`: the secrets a secured cluster needs.

use std::io::{BufRead as _, IsTerminal as _, Read as _, Write as _};
use std::path::Path;

use deeb_server::security::certs::{write_pem, Authority};
use deeb_server::security::users::hash_secret;

use super::args::CertsArgs;

/// Prints the argon2 hash of a password read from stdin (without echo on a
/// terminal), or a new random token and its hash.
///
/// # Errors
/// No password given, or the random source failed.
pub fn passwd(token: bool) -> Result<(), String> {
    if token {
        let token = random_token()?;
        let hash = hash_secret(&token)?;
        println!("token: {token}");
        println!("token_hash: {hash}");
        println!("clients send `authorization: Bearer USER:{token}`");
        return Ok(());
    }
    let password = read_password()?;
    if password.is_empty() {
        return Err("empty password".into());
    }
    println!("{}", hash_secret(&password)?);
    Ok(())
}

fn read_password() -> Result<String, String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line).map_err(|error| error.to_string())?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    eprint!("password: ");
    let _ = std::io::stderr().flush();
    let _echo_off = EchoOff::new();
    let mut line = String::new();
    stdin.lock().read_line(&mut line).map_err(|error| error.to_string())?;
    eprintln!();
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Turns terminal echo off on stdin until dropped.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a zeroed, then filled, termios.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return EchoOff(None);
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &quiet);
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the settings read in `new`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, saved);
            }
        }
    }
}

/// 32 random bytes from the kernel, hex.
pub fn random_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(|error| format!("reading /dev/urandom: {error}"))?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Makes (or reuses) the CA in `args.dir` and the certificates asked for;
/// returns what was written.
///
/// # Errors
/// A bad `--node` value or a file that cannot be written.
pub fn certs(args: &CertsArgs) -> Result<String, String> {
    if args.nodes.is_empty() && args.users.is_empty() {
        return Err("nothing to make: give --node NAME=HOST[,HOST...] and/or --user USER".into());
    }
    let mut nodes = Vec::new();
    for node in &args.nodes {
        let (name, hosts) =
            node.split_once('=').ok_or_else(|| format!("--node {node:?}: expected NAME=HOST[,HOST]"))?;
        let hosts: Vec<String> = hosts.split(',').map(str::trim).filter(|h| !h.is_empty()).map(String::from).collect();
        if name.is_empty() || hosts.is_empty() {
            return Err(format!("--node {node:?}: expected NAME=HOST[,HOST]"));
        }
        nodes.push((name.to_owned(), hosts));
    }
    let mut report = String::new();
    if !nodes.is_empty() {
        let (ca, made) = authority(&args.dir, "ca", "deeb nodes CA")?;
        report += &made;
        for (name, hosts) in &nodes {
            let issued = ca.issue(name, hosts).map_err(|error| format!("{name}: {error}"))?;
            report += &write_pair(&args.dir, name, &issued.cert_pem, &issued.key_pem)?;
        }
    }
    if !args.users.is_empty() {
        // Another CA: a user's certificate must never pass as a node's.
        let (ca, made) = authority(&args.dir, "client-ca", "deeb clients CA")?;
        report += &made;
        for user in &args.users {
            let issued = ca.issue(user, &[]).map_err(|error| format!("{user}: {error}"))?;
            report += &write_pair(&args.dir, user, &issued.cert_pem, &issued.key_pem)?;
        }
    }
    Ok(report)
}

/// The CA `file` (`FILE.pem`, `FILE-key.pem`) in `dir`, made there if
/// absent with the common name `name`.
pub fn authority(dir: &Path, file: &str, name: &str) -> Result<(Authority, String), String> {
    let (cert, key) = (dir.join(format!("{file}.pem")), dir.join(format!("{file}-key.pem")));
    if cert.exists() {
        let read = |path: &Path| std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()));
        let ca = Authority::load(&read(&cert)?, &read(&key)?)?;
        return Ok((ca, format!("using the CA in {}\n", cert.display())));
    }
    std::fs::create_dir_all(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let ca = Authority::new(name).map_err(|error| error.to_string())?;
    let report = write_pair(dir, file, ca.cert_pem(), ca.key_pem())?;
    Ok((ca, report))
}

fn write_pair(dir: &Path, name: &str, cert_pem: &str, key_pem: &str) -> Result<String, String> {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    write_pem(&cert, cert_pem, false).map_err(|error| format!("{}: {error}", cert.display()))?;
    write_pem(&key, key_pem, true).map_err(|error| format!("{}: {error}", key.display()))?;
    Ok(format!("wrote {} and {}\n", cert.display(), key.display()))
}

/// Raises this process's open-file limit toward what `max_connections`
/// needs (a flood reaches one listener; the other's are few) (never above the hard limit), and warns if it
/// stays short.
#[cfg(not(madsim))]
pub fn raise_descriptor_limit(max_connections: usize) {
    let wanted = u64::try_from(max_connections).unwrap_or(u64::MAX).saturating_add(1024);
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < wanted {
            let raised = libc::rlimit { rlim_cur: wanted.min(limit.rlim_max), rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = raised.rlim_cur;
            }
        }
        if limit.rlim_cur < wanted {
            tracing::warn!(
                open_files = limit.rlim_cur,
                max_connections,
                "the open-file limit is below what --max-connections needs; connections past it fail to be accepted"
            );
        }
    }
}
