//! Per-connection `random()` and `randomblob(N)` for the leader's writer.
//!
//! SQLite's own PRNG is process-wide: anything else in the process that
//! draws from it (another node in a simulation, another test thread) changes
//! what the next batch gets. These replacements draw from a generator owned
//! by the state machine and reseeded per batch from (node seed, index), so a
//! run replays exactly whatever else the process does. (Replicas never run
//! them: followers apply the leader's row changes.)

use std::sync::{Arc, Mutex, PoisonError};

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use rusqlite::functions::FunctionFlags;
use rusqlite::Connection;

/// The generator behind one connection's `random()` and `randomblob()`.
#[derive(Clone)]
pub(crate) struct BatchRandom(Arc<Mutex<SmallRng>>);

impl BatchRandom {
    /// Registers the functions on `connection`, replacing SQLite's built-ins.
    pub(crate) fn install(connection: &Connection) -> rusqlite::Result<Self> {
        let random = Self(Arc::new(Mutex::new(SmallRng::seed_from_u64(0))));
        let flags = FunctionFlags::SQLITE_UTF8; // Not deterministic: never constant-folded.
        let generator = random.clone();
        connection.create_scalar_function("random", 0, flags, move |_| Ok(generator.with(|rng| rng.gen::<i64>())))?;
        let generator = random.clone();
        connection.create_scalar_function("randomblob", 1, flags, move |context| {
            let length = randomblob_length(context.get::<Option<i64>>(0)?)?;
            Ok(generator.with(|rng| {
                let mut blob = vec![0u8; length];
                rng.fill_bytes(&mut blob);
                blob
            }))
        })?;
        Ok(random)
    }

    /// Starts the sequence for one batch.
    pub(crate) fn reseed(&self, seed: u64) {
        self.with(|rng| *rng = SmallRng::seed_from_u64(seed));
    }

    fn with<T>(&self, draw: impl FnOnce(&mut SmallRng) -> T) -> T {
        // A panic while drawing cannot leave the generator inconsistent.
        let mut rng = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        draw(&mut rng)
    }
}

/// SQLite's rule: fewer than 1 byte (or NULL) gives 1 byte.
fn randomblob_length(requested: Option<i64>) -> rusqlite::Result<usize> {
    let length = requested.unwrap_or(1).max(1);
    if length > RANDOMBLOB_BYTES_MAX {
        return Err(rusqlite::Error::UserFunctionError(
            format!("randomblob({length}) is over the limit of {RANDOMBLOB_BYTES_MAX} bytes").into(),
        ));
    }
    Ok(usize::try_from(length).expect("bounded by RANDOMBLOB_BYTES_MAX"))
}

/// Larger than any single request may be anyway.
const RANDOMBLOB_BYTES_MAX: i64 = 64 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_whatever_else_draws() {
        let draw = |seed| {
            let connection = Connection::open_in_memory().expect("memory db");
            let random = BatchRandom::install(&connection).expect("install");
            random.reseed(seed);
            // Another connection drawing from SQLite's global PRNG meanwhile.
            let other = Connection::open_in_memory().expect("memory db");
            let _: i64 = other.query_row("SELECT random()", [], |row| row.get(0)).expect("other draws");
            connection
                .query_row("SELECT random(), hex(randomblob(8)), length(randomblob(0))", [], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?))
                })
                .expect("query")
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7).0, draw(8).0);
        assert_eq!(draw(7).2, 1, "randomblob(0) is one byte, as in SQLite");
    }

    #[test]
    fn huge_randomblob_is_an_error() {
        let connection = Connection::open_in_memory().expect("memory db");
        BatchRandom::install(&connection).expect("install");
        let result: rusqlite::Result<Vec<u8>> =
            connection.query_row("SELECT randomblob(1 << 40)", [], |row| row.get(0));
        assert!(result.unwrap_err().to_string().contains("over the limit"));
    }
}
