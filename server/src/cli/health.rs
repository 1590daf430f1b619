//! `deeb health`: one plain HTTP GET of a node's `/livez` or `/readyz`, so
//! that an image with nothing but the `deeb` binary can have a HEALTHCHECK.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::Duration;

/// Bound on connecting, sending and reading the answer.
const TIMEOUT: Duration = Duration::from_secs(3);
/// The most of the answer read (health answers are a few lines).
const ANSWER_BYTES_MAX: u64 = 64 * 1024;

/// GETs `path` from `address`: whether it answered 200, and the answer's
/// body (or its status line).
///
/// # Errors
/// The node cannot be reached or sends something that is not HTTP.
pub fn check(address: &str, path: &str) -> Result<(bool, String), String> {
    let target = (address.to_socket_addrs().map_err(|error| format!("{address}: {error}"))?.next())
        .ok_or_else(|| format!("{address}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&target, TIMEOUT).map_err(|error| format!("{address}: {error}"))?;
    let io = |error: std::io::Error| format!("{address}: {error}");
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").map_err(io)?;
    let mut answer = Vec::new();
    stream.take(ANSWER_BYTES_MAX).read_to_end(&mut answer).map_err(io)?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status_line = head.lines().next().unwrap_or_default();
    let code = (status_line.strip_prefix("HTTP/1.1 ").or_else(|| status_line.strip_prefix("HTTP/1.0 ")))
        .and_then(|rest| rest.get(..3))
        .ok_or_else(|| format!("{address}: not an HTTP answer: {status_line:?}"))?;
    let body = body.trim();
    Ok((code == "200", if body.is_empty() { status_line.to_owned() } else { body.to_owned() }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Answers one connection with `answer`: reads the whole request
    /// first and the client's close last (closing with unread bytes would
    /// reset the connection before the answer arrives).
    fn serve_once(answer: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|read| read == 1) {
                request.push(byte[0]);
            }
            let _ = stream.write_all(answer.as_bytes());
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let _ = stream.read_to_end(&mut request);
        });
        address
    }

    #[test]
    fn a_200_is_healthy_and_anything_else_is_not() {
        let ok = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n[+]node ok\n");
        assert_eq!(check(&ok, "/livez"), Ok((true, "[+]node ok".to_owned())));
        let down = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n[-]leader does not exist");
        assert_eq!(check(&down, "/readyz"), Ok((false, "[-]leader does not exist".to_owned())));
        let garbage = serve_once("SSH-2.0-OpenSSH\r\n");
        assert!(check(&garbage, "/livez").is_err());
    }

    #[test]
    fn nothing_listening_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        drop(listener);
        assert!(check(&address, "/livez").is_err());
    }
}
