//! `deeb watch`: the change stream on standard output, one JSON line per
//! change, flushed as it comes (a pipe's reader sees each at once).

use std::io::Write as _;

use deeb_proto::WatchRequest;

use super::args::{ClientArgs, WatchFormat};
use super::commands;

/// Prints changes until the stream ends (the node stopped: an error) or
/// standard output closes (a clean end).
///
/// # Errors
/// The node refused (`compacted`: the message names the first index the
/// log holds) or the stream broke.
pub async fn run(
    client: &ClientArgs,
    (from_index, tables, before): (u64, Vec<String>, bool),
    format: WatchFormat,
) -> Result<(), String> {
    let connected = commands::connect(client)?;
    let request = WatchRequest { from_index, tables, include_before_images: before };
    let mut changes = connected.watch(request).await.map_err(|error| commands::describe_error(&error))?;
    loop {
        let change = changes.message().await.map_err(|status| commands::describe_error(&status.into()))?;
        let Some(change) = change else {
            return Err("the node ended the change stream".into());
        };
        let line = match format {
            WatchFormat::Native => deeb_server::http::change_line(change),
            WatchFormat::Debezium => deeb_server::http::debezium_line(&change),
        };
        let mut out = std::io::stdout().lock();
        if out.write_all(&line).and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
    }
}
