//! The real listeners (not built under the simulator, whose transport has
//! no sockets): accept TCP connections up to a cap, do the TLS handshake
//! off the accept loop, and drop connections that stay silent too long.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::ReceiverStream;

use super::tls::Reloadable;
use super::{ConnInfo, Side};
use crate::metrics::{ConnectionGauge, Metrics};

/// How one listener accepts connections.
#[derive(Clone)]
pub struct Settings {
    pub side: Side,
    /// The listener's name in the metrics.
    pub listener: &'static str,
    /// TLS, or plaintext if `None`.
    pub tls: Option<Arc<Reloadable<ServerConfig>>>,
    /// Connections served at once; more are answered with an error and closed.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed (HTTP/2
    /// pings the server sends keep a live client talking).
    pub idle_timeout: Duration,
    pub metrics: Metrics,
}

/// Connections accepted on `listener`, ready for tonic's
/// `serve_with_incoming`. Accepting stops when the stream is dropped.
pub fn incoming(listener: TcpListener, settings: Settings) -> ReceiverStream<io::Result<Conn>> {
    let (sender, receiver) = mpsc::channel(ACCEPTED_QUEUE_MAX);
    tokio::spawn(accept_loop(listener, settings, sender));
    ReceiverStream::new(receiver)
}

async fn accept_loop(listener: TcpListener, settings: Settings, sender: mpsc::Sender<io::Result<Conn>>) {
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    // Connections past the limit kept just long enough to be told so.
    let told = Arc::new(Semaphore::new(OVER_LIMIT_TOLD_MAX));
    let refused = Arc::new(AtomicU64::new(0));
    loop {
        let accepted = tokio::select! {
            () = sender.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, say: wait for some to close.
                tracing::warn!(side = settings.side.name(), %error, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => Permit::Served(permit),
            Err(_) => match told.clone().try_acquire_owned() {
                Ok(permit) => Permit::Told(permit),
                // Past the limit and past those being told: closed at once.
                Err(_) => Permit::None,
            },
        };
        if !matches!(permit, Permit::Served(_)) {
            settings.metrics.connection_refused(settings.listener);
            let count = refused.fetch_add(1, Ordering::Relaxed) + 1;
            if count.is_power_of_two() {
                tracing::warn!(
                    side = settings.side.name(),
                    limit = settings.max_connections,
                    refused = count,
                    "connection limit reached; refusing new connections"
                );
            }
        }
        if matches!(permit, Permit::None) {
            drop(tcp);
            continue;
        }
        tokio::spawn(handshake(tcp, remote, settings.clone(), permit, sender.clone()));
    }
}

/// What a connection holds of the listener's limits (the permits are held
/// for the connection's life, released when it is dropped).
#[allow(dead_code)]
enum Permit {
    /// One of the `max_connections`.
    Served(OwnedSemaphorePermit),
    /// Over the limit, answered with an error until a fixed deadline.
    Told(OwnedSemaphorePermit),
    None,
}

async fn handshake(
    tcp: TcpStream,
    remote: SocketAddr,
    settings: Settings,
    permit: Permit,
    sender: mpsc::Sender<io::Result<Conn>>,
) {
    let over_limit = !matches!(permit, Permit::Served(_));
    // Over the limit, the handshake and the one answer share a fixed deadline.
    let handshake_timeout = if over_limit { OVER_LIMIT_LINGER } else { HANDSHAKE_TIMEOUT };
    let mut info = ConnInfo { side: settings.side, remote: Some(remote), peer_cert: None, over_limit };
    let io = match &settings.tls {
        None => Io::Plain(tcp),
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config.current());
            match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let certs = stream.get_ref().1.peer_certificates();
                    info.peer_cert =
                        certs.and_then(|certs| certs.first()).map(|cert| Arc::new(cert.clone().into_owned()));
                    Io::Tls(Box::new(stream))
                }
                Ok(Err(error)) => {
                    tracing::info!(side = settings.side.name(), %remote, %error, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(side = settings.side.name(), %remote, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    // Over the limit: long enough to answer a call with the error, and
    // no longer whatever the caller sends.
    let (idle_timeout, resets) = if over_limit { (OVER_LIMIT_LINGER, false) } else { (settings.idle_timeout, true) };
    let idle = Box::pin(tokio::time::sleep(idle_timeout));
    let counted = settings.metrics.connection_opened(settings.listener);
    let conn = Conn { io, info, idle_timeout, resets, idle, _permit: (permit, counted) };
    let _ = sender.send(Ok(conn)).await;
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// One accepted connection: its stream, what is known of the other side,
/// and its idle deadline.
pub struct Conn {
    io: Io,
    info: ConnInfo,
    idle_timeout: Duration,
    /// False past the connection limit: the deadline is fixed.
    resets: bool,
    idle: Pin<Box<Sleep>>,
    _permit: (Permit, ConnectionGauge),
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let read = match &mut this.io {
            Io::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        };
        match read {
            Poll::Ready(result) => {
                if this.resets && buf.filled().len() > before {
                    let deadline = Instant::now() + this.idle_timeout;
                    this.idle.as_mut().reset(deadline);
                }
                Poll::Ready(result)
            }
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle connection closed"))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Conn {
    /// What the connection sends counts as activity too: a stream the
    /// client only reads (a change stream) stays open while it moves.
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = match &mut this.io {
            Io::Plain(tcp) => Pin::new(tcp).poll_write(cx, data),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, data),
        };
        if this.resets && matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.idle.as_mut().reset(Instant::now() + this.idle_timeout);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Connections handed over but not yet taken up by the server.
const ACCEPTED_QUEUE_MAX: usize = 128;
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Bound on a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection over the limit is kept to tell its caller so.
const OVER_LIMIT_LINGER: Duration = Duration::from_secs(2);
/// Connections over the limit being told so at once; more are closed.
const OVER_LIMIT_TOLD_MAX: usize = 64;
