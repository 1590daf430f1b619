//! The `deeb` binary: a thin wrapper over the `deeb_server` library.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use clap::Parser as _;
use deeb_core::disk::FsDisk;
mod cli;

use cli::args::{Cli, Command, ServeArgs};
use cli::output::{self, Printer};
use cli::{bench, commands, shell};
use tracing_subscriber::EnvFilter;

#[cfg(not(madsim))]
fn main() -> ExitCode {
    let cli = parse_and_log();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return report(Err(anyhow::anyhow!("could not start the async runtime: {error}"))),
    };
    let result = runtime.block_on(run(cli));
    // The node has stopped; a query still finishing on a blocking thread
    // (it was told to stop) must not hold the process.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    report(result)
}

/// Under the simulator the binary is only built, never run.
#[cfg(madsim)]
#[tokio::main]
async fn main() -> ExitCode {
    report(run(parse_and_log()).await)
}

fn parse_and_log() -> Cli {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    cli
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Bound on waiting for blocking threads when the process ends.
#[cfg(not(madsim))]
const RUNTIME_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(&args).await,
        Command::Shell(args) => {
            let mut shell = shell::Shell::new(
                commands::connect(&args.client).map_err(anyhow::Error::msg)?,
                args.format,
                args.keep_going,
            );
            match shell.run().await? {
                true => Ok(()),
                // Each failure was printed as it happened.
                false => std::process::exit(1),
            }
        }
        Command::Exec { client, sql, format } => {
            let response = commands::execute(&commands::connect(&client).map_err(anyhow::Error::msg)?, &sql)
                .await
                .map_err(status_error)?;
            emit(&commands::format_execute_as(&response, format))
        }
        Command::Query { client, sql, consistency, max_staleness, timeout, format } => {
            let client = commands::connect(&client).map_err(anyhow::Error::msg)?;
            let mut printer = None;
            let mut failed = None;
            let queried = commands::query_chunks(&client, &sql, consistency, max_staleness, timeout, |chunk| {
                let printer = printer.get_or_insert_with(|| {
                    let out = std::io::BufWriter::new(std::io::stdout());
                    Printer::new(out, format, true, "NULL", commands::column_names(&chunk))
                });
                let written = chunk.rows.iter().try_for_each(|row| printer.row(row));
                failed = written.err();
                failed.is_none()
            })
            .await;
            let finished = match (failed, printer) {
                (Some(error), _) => Err(error),
                (None, Some(printer)) if queried.is_ok() => printer.finish().map(drop),
                (None, _) => Ok(()),
            };
            queried.map_err(status_error)?;
            output_result(finished)
        }
        Command::Status(client) => {
            let status = commands::status(&commands::connect(&client).map_err(anyhow::Error::msg)?)
                .await
                .map_err(status_error)?;
            emit(&format!("{}{}", commands::format_status(&status), commands::format_members(&status)))
        }
        Command::Nodes { client, action } => {
            let text = commands::nodes(&commands::connect(&client).map_err(anyhow::Error::msg)?, &action)
                .await
                .map_err(status_error)?;
            emit(&format!("{text}\n"))
        }
        #[cfg(not(madsim))]
        Command::Dev(args) => cli::dev::run(&args, &cli.log_level).await.map_err(anyhow::Error::msg),
        #[cfg(madsim)]
        Command::Dev(_) => anyhow::bail!("`deeb dev` starts real processes; it is not available in simulation"),
        Command::Bench(args) => emit(&bench::run(&args).await.map_err(anyhow::Error::msg)?),
        Command::BenchBaseline { file, listen } => {
            bench::baseline::serve(&file, listen, cli::shutdown_signal()).await.map_err(anyhow::Error::msg)
        }
        #[cfg(not(madsim))]
        Command::Watch { client, from, tables, before, format } => {
            cli::watch::run(&client, (from, tables, before), format).await.map_err(anyhow::Error::msg)
        }
        #[cfg(madsim)]
        Command::Watch { .. } => {
            anyhow::bail!("`deeb watch` prints the HTTP API's JSON, which simulation does not build")
        }
        Command::Backup { client, out, format, consistency, compress } => {
            let line =
                cli::backup::run(&client, &out, (format, consistency, compress)).await.map_err(anyhow::Error::msg)?;
            emit(&format!("{line}\n"))
        }
        Command::Restore { client, file, bootstrap, id, peers, as_sql, statements_per_request } => {
            let line = match (bootstrap, id, peers) {
                (Some(data_dir), Some(id), Some(peers)) => cli::restore::bootstrap(&data_dir, &file, id, &peers.0),
                _ => cli::restore::online(&client, &file, statements_per_request as usize, as_sql).await,
            };
            emit(&format!("{}\n", line.map_err(anyhow::Error::msg)?))
        }
        Command::Health { http, path } => {
            let (healthy, answer) = cli::health::check(&http, &path).map_err(anyhow::Error::msg)?;
            emit(&format!("{answer}\n"))?;
            match healthy {
                true => Ok(()),
                false => Err(anyhow::anyhow!("{path} on {http} is not healthy")),
            }
        }
        Command::Passwd { token } => cli::secrets::passwd(token).map_err(anyhow::Error::msg),
        Command::Certs(args) => emit(&cli::secrets::certs(&args).map_err(anyhow::Error::msg)?),
    }
}

/// Runs a node until SIGTERM or Ctrl-C.
async fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let config = args.to_config()?;
    #[cfg(not(madsim))]
    cli::secrets::raise_descriptor_limit(config.security.limits.max_connections);
    std::fs::create_dir_all(&config.data_dir)?;
    let disk = FsDisk::open(&config.data_dir.join("log"))?;
    deeb_server::run_node(config, disk, cli::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Writes `text` to stdout; a closed pipe (`deeb query ... | head -1`) is
/// not an error: the reader has what it wanted.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    output_result(out.write_all(text.as_bytes()).and_then(|()| out.flush()))
}

fn output_result(result: std::io::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(error) if !output::is_closed_pipe(&error) => Err(anyhow::anyhow!("writing the output: {error}")),
        _ => Ok(()),
    }
}

fn status_error(error: commands::Error) -> anyhow::Error {
    anyhow::anyhow!("{}", commands::describe_error(&error))
}
