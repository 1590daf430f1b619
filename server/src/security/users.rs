//! Users and permissions: the `--auth` users file, checking a password or
//! token against its argon2 hash, and what each user may do.
//!
//! The file is a JSON list, one entry per user:
//!
//! ```json
//! [
//!   {"username": "admin", "password_hash": "$argon2id$v=19$...", "perms": ["all"]},
//!   {"username": "reader", "password_hash": "$argon2id$v=19$...", "perms": ["query", "status"]},
//!   {"username": "*", "perms": ["status", "ready"]}
//! ]
//! ```
//!
//! `*` is anyone who gives no credentials. A user may also have a
//! `token_hash` (a bearer token, `deeb passwd --token`). Plaintext passwords
//! are refused when the file is read.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::Mutex;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use serde::Deserialize;

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Read-only queries.
    Query,
    /// Writes.
    Execute,
    /// Node and cluster status.
    Status,
    /// Readiness probes.
    Ready,
    /// Backups and restores.
    Backup,
    /// Adding, removing and promoting members; moving leadership.
    Membership,
    /// Everything above.
    All,
}

impl Permission {
    /// The name used in the users file and in errors.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Query => "query",
            Permission::Execute => "execute",
            Permission::Status => "status",
            Permission::Ready => "ready",
            Permission::Backup => "backup",
            Permission::Membership => "membership",
            Permission::All => "all",
        }
    }
}

/// The name of the anonymous user's entry.
pub const ANONYMOUS: &str = "*";

/// One line of the users file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    username: String,
    #[serde(default)]
    password_hash: Option<String>,
    #[serde(default)]
    token_hash: Option<String>,
    /// Present only to refuse it with a clear message.
    #[serde(default)]
    password: Option<serde::de::IgnoredAny>,
    perms: Vec<Permission>,
}

struct User {
    password_hash: Option<String>,
    token_hash: Option<String>,
    perms: BTreeSet<Permission>,
}

/// The users file, read once (and again on SIGHUP).
pub struct Users {
    users: HashMap<String, User>,
    /// Keyed hashes of (user, secret) pairs already checked against argon2,
    /// so a client's every call does not pay for the slow hash again. The
    /// key is random per process and never leaves it.
    verified: Mutex<HashSet<u64>>,
    keys: RandomState,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.users.keys().collect();
        names.sort();
        formatter.debug_struct("Users").field("names", &names).finish_non_exhaustive()
    }
}

/// Who is asking, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal(pub String);

impl Principal {
    /// The anonymous principal (the `*` entry).
    pub fn anonymous() -> Principal {
        Principal(ANONYMOUS.to_owned())
    }
}

/// How a caller claims to be someone.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Nothing given: the `*` entry.
    None,
    /// HTTP Basic (gRPC `authorization: Basic ...`).
    Password { user: String, password: String },
    /// `authorization: Bearer USER:TOKEN`.
    Token { user: String, token: String },
    /// A verified client certificate's common name.
    Certificate(String),
    /// A user another node authenticated, heard over the peer link.
    Forwarded(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret, whatever the log level.
        match self {
            Credentials::None => write!(formatter, "None"),
            Credentials::Password { user, .. } => write!(formatter, "Password({user:?})"),
            Credentials::Token { user, .. } => write!(formatter, "Token({user:?})"),
            Credentials::Certificate(name) => write!(formatter, "Certificate({name:?})"),
            Credentials::Forwarded(name) => write!(formatter, "Forwarded({name:?})"),
        }
    }
}

/// Why a caller was turned away.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown user, wrong password or token, or no credentials where
    /// anonymous access is not configured.
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but not allowed to do this.
    #[error("user {user:?} lacks the {permission:?} permission")]
    Denied { user: String, permission: &'static str },
}

/// A users file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UsersFileError {
    #[error("reading {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Users {
    /// Reads the users file at `path`.
    ///
    /// # Errors
    /// An unreadable file, bad JSON, a plaintext password, a hash that is
    /// not an argon2 PHC string, a repeated user, or a user (other than
    /// `*`) with neither password nor token.
    pub fn load(path: &Path) -> Result<Users, UsersFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| UsersFileError::Read { path: path.display().to_string(), error })?;
        Users::parse(&text).map_err(|message| UsersFileError::Invalid { path: path.display().to_string(), message })
    }

    /// Parses the users file's text.
    ///
    /// # Errors
    /// See [`Users::load`].
    pub fn parse(text: &str) -> Result<Users, String> {
        let entries: Vec<Entry> = serde_json::from_str(text).map_err(|error| format!("not a users file: {error}"))?;
        let mut users = HashMap::new();
        for entry in entries {
            let name = entry.username;
            let printable = !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic());
            if name != ANONYMOUS && (!printable || name.starts_with('@') || name.contains(':')) {
                return Err(format!(
                    "user name {name:?}: use printable ASCII without ':' (HTTP Basic's separator), \
                     not starting with '@' (deeb's own)"
                ));
            }
            if entry.password.is_some() {
                return Err(format!(
                    "user {name:?} has a plaintext \"password\"; give \"password_hash\" (from `deeb passwd`) instead"
                ));
            }
            for hash in entry.password_hash.iter().chain(&entry.token_hash) {
                PasswordHash::new(hash)
                    .map_err(|_| format!("user {name:?}: not an argon2 hash (use `deeb passwd`)"))?;
            }
            if name != ANONYMOUS && entry.password_hash.is_none() && entry.token_hash.is_none() {
                return Err(format!("user {name:?} has neither password_hash nor token_hash"));
            }
            let user = User {
                password_hash: entry.password_hash,
                token_hash: entry.token_hash,
                perms: entry.perms.into_iter().collect(),
            };
            if users.insert(name.clone(), user).is_some() {
                return Err(format!("user {name:?} appears twice"));
            }
        }
        Ok(Users { users, verified: Mutex::default(), keys: RandomState::new() })
    }

    /// Who `credentials` name.
    ///
    /// # Errors
    /// An unknown user, a wrong password or token, or no credentials while
    /// the file has no `*` entry.
    pub fn authenticate(&self, credentials: &Credentials) -> Result<Principal, AuthError> {
        let refused = || AuthError::Unauthenticated("wrong user name or password".into());
        match credentials {
            Credentials::None if self.users.contains_key(ANONYMOUS) => Ok(Principal::anonymous()),
            Credentials::None => Err(AuthError::Unauthenticated(
                "this node requires credentials (user and password, or a client certificate)".into(),
            )),
            Credentials::Password { user, password } => {
                let hash = self.users.get(user).and_then(|known| known.password_hash.as_deref());
                self.verify(user, password, hash).then(|| Principal(user.clone())).ok_or_else(refused)
            }
            Credentials::Token { user, token } => {
                let hash = self.users.get(user).and_then(|known| known.token_hash.as_deref());
                self.verify(user, token, hash).then(|| Principal(user.clone())).ok_or_else(refused)
            }
            Credentials::Certificate(name) | Credentials::Forwarded(name) => match self.users.get(name) {
                Some(_) => Ok(Principal(name.clone())),
                None => Err(AuthError::Unauthenticated(format!("no user {name:?} on this node"))),
            },
        }
    }

    /// Whether `principal` may do what `permission` covers.
    ///
    /// # Errors
    /// [`AuthError::Denied`].
    pub fn authorize(&self, principal: &Principal, permission: Permission) -> Result<(), AuthError> {
        let perms = self.users.get(&principal.0).map(|user| &user.perms);
        match perms {
            Some(perms) if perms.contains(&Permission::All) || perms.contains(&permission) => Ok(()),
            _ => Err(AuthError::Denied { user: principal.0.clone(), permission: permission.name() }),
        }
    }

    /// True if `credentials` need no slow check: not a password or token,
    /// or one already verified.
    pub fn is_verified(&self, credentials: &Credentials) -> bool {
        let (user, secret, hash) = match credentials {
            Credentials::Password { user, password } => {
                (user, password, self.users.get(user).and_then(|known| known.password_hash.as_deref()))
            }
            Credentials::Token { user, token } => {
                (user, token, self.users.get(user).and_then(|known| known.token_hash.as_deref()))
            }
            _ => return true,
        };
        hash.is_some_and(|hash| {
            self.verified.lock().expect("users cache lock").contains(&self.cache_key(user, secret, hash))
        })
    }

    fn cache_key(&self, user: &str, secret: &str, hash: &str) -> u64 {
        self.keys.hash_one((user, secret, hash))
    }

    fn verify(&self, user: &str, secret: &str, hash: Option<&str>) -> bool {
        let Some(hash) = hash else {
            // As slow as a real check, so that timing does not tell which
            // user names exist.
            if let Some(dummy) = dummy_hash() {
                let _ = Argon2::default().verify_password(secret.as_bytes(), &dummy);
            }
            return false;
        };
        let key = self.cache_key(user, secret, hash);
        if self.verified.lock().expect("users cache lock").contains(&key) {
            return true;
        }
        let Ok(parsed) = PasswordHash::new(hash) else { return false };
        if Argon2::default().verify_password(secret.as_bytes(), &parsed).is_err() {
            return false;
        }
        let mut verified = self.verified.lock().expect("users cache lock");
        if verified.len() >= VERIFIED_CACHE_MAX {
            verified.clear();
        }
        verified.insert(key);
        true
    }
}

/// An argon2id hash (PHC string) of `secret` with a fresh random salt.
///
/// # Errors
/// The system's random source failed.
pub fn hash_secret(secret: &str) -> Result<String, String> {
    Argon2::default().hash_password(secret.as_bytes()).map(|hash| hash.to_string()).map_err(|error| error.to_string())
}

/// A hash of a secret no caller knows, checked against for unknown users
/// (`None` if the random source failed when it was made).
fn dummy_hash() -> Option<PasswordHash> {
    static DUMMY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let text = DUMMY.get_or_init(|| hash_secret("deeb: no such user").ok());
    text.as_deref().and_then(|text| PasswordHash::new(text).ok())
}

/// Verified (user, secret) pairs remembered; cleared when full.
const VERIFIED_CACHE_MAX: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Users {
        let reader = hash_secret("reader-pw").expect("hash");
        let admin = hash_secret("admin-pw").expect("hash");
        let token = hash_secret("t0ken").expect("hash");
        let text = format!(
            r#"[{{"username": "reader", "password_hash": "{reader}", "perms": ["query", "status"]}},
                {{"username": "admin", "password_hash": "{admin}", "token_hash": "{token}", "perms": ["all"]}},
                {{"username": "*", "perms": ["ready"]}}]"#
        );
        Users::parse(&text).expect("valid")
    }

    fn password(user: &str, password: &str) -> Credentials {
        Credentials::Password { user: user.into(), password: password.into() }
    }

    #[test]
    fn passwords_and_tokens_are_checked_against_their_hashes() {
        let users = users();
        assert_eq!(users.authenticate(&password("reader", "reader-pw")), Ok(Principal("reader".into())));
        // Twice: the second time from the cache, same answer.
        assert_eq!(users.authenticate(&password("reader", "reader-pw")), Ok(Principal("reader".into())));
        assert!(users.authenticate(&password("reader", "admin-pw")).is_err());
        assert!(users.authenticate(&password("nobody", "reader-pw")).is_err());
        let token = Credentials::Token { user: "admin".into(), token: "t0ken".into() };
        assert_eq!(users.authenticate(&token), Ok(Principal("admin".into())));
        // A token is not a password.
        assert!(users.authenticate(&password("admin", "t0ken")).is_err());
        assert_eq!(users.authenticate(&Credentials::None), Ok(Principal::anonymous()));
    }

    #[test]
    fn permissions_are_those_listed() {
        let users = users();
        let reader = Principal("reader".into());
        assert!(users.authorize(&reader, Permission::Query).is_ok());
        assert!(users.authorize(&reader, Permission::Execute).is_err());
        assert!(users.authorize(&reader, Permission::Membership).is_err());
        assert!(users.authorize(&Principal("admin".into()), Permission::Backup).is_ok());
        assert!(users.authorize(&Principal::anonymous(), Permission::Ready).is_ok());
        assert!(users.authorize(&Principal::anonymous(), Permission::Query).is_err());
    }

    #[test]
    fn without_a_star_entry_credentials_are_required() {
        let hash = hash_secret("x").expect("hash");
        let users = Users::parse(&format!(r#"[{{"username": "a", "password_hash": "{hash}", "perms": ["all"]}}]"#))
            .expect("valid");
        assert!(matches!(users.authenticate(&Credentials::None), Err(AuthError::Unauthenticated(_))));
    }

    #[test]
    fn bad_users_files_are_refused() {
        let plaintext = r#"[{"username": "a", "password": "secret1", "perms": ["all"]}]"#;
        assert!(Users::parse(plaintext).is_err_and(|message| message.contains("plaintext")));
        let not_a_hash = r#"[{"username": "a", "password_hash": "secret1", "perms": ["all"]}]"#;
        assert!(Users::parse(not_a_hash).is_err());
        let unknown_perm = r#"[{"username": "*", "perms": ["root"]}]"#;
        assert!(Users::parse(unknown_perm).is_err());
        let reserved = r#"[{"username": "@node", "perms": ["all"], "token_hash": "x"}]"#;
        assert!(Users::parse(reserved).is_err_and(|message| message.contains("'@'")));
        let twice = r#"[{"username": "*", "perms": []}, {"username": "*", "perms": []}]"#;
        assert!(Users::parse(twice).is_err());
        assert!(Users::parse(r#"[{"username": "a", "perms": ["all"]}]"#).is_err());
    }

    #[test]
    fn credentials_never_show_their_secret() {
        let shown = format!("{:?}", password("reader", "reader-pw"));
        assert!(!shown.contains("reader-pw"), "{shown}");
    }
}
