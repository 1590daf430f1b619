//! The `deeb` command line: `serve`, the client commands, `dev` and `bench`.

pub mod args;
pub mod backup;
pub mod bench;
pub mod commands;
#[cfg(not(madsim))]
pub mod dev;
pub mod health;
pub mod output;
pub mod pod;
pub mod restore;
pub mod secrets;
pub mod shell;
pub mod table;
#[cfg(not(madsim))]
pub mod watch;

/// Resolves on Ctrl-C or (on Unix, real mode) SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(all(unix, not(madsim)))]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => drop(signal.recv().await),
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = ctrl_c => {}
            () = terminate => {}
        }
    }
    #[cfg(not(all(unix, not(madsim))))]
    ctrl_c.await;
}
