//! Data-directory identities and the cluster id: a node refuses peers
//! whose data directory is not the one it knew, and peers of another
//! cluster.
//!
//! A node id must never come back on a wiped disk: such a node has lost its
//! log and its votes, and could vote twice in one term or count towards a
//! quorum for entries it no longer holds. Each data directory gets an
//! identity when it is created (`node-identity`); every raft batch and
//! snapshot carries its sender's. A node remembers, durably
//! (`peer-identities`), the identity it first heard from each peer, and
//! refuses messages and snapshots from a peer whose identity changed: the
//! cluster keeps its quorum without it, and the operator removes the old id
//! and adds the node again. Once a node applies a peer's removal it
//! forgets that peer's identity, so the id may come back on a new disk
//! after it is added again (as a StatefulSet pod keeps its ordinal).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// This node's data directory's identity, created with the directory: a
/// hash of its path and the time of its creation, so a wiped and recreated
/// directory gets another. (Not drawn from a random generator: under the
/// simulator that would move every later draw.)
///
/// # Errors
/// The file cannot be read, parsed or written durably.
pub fn load_or_create(data_dir: &Path) -> std::io::Result<u64> {
    let path = data_dir.join(IDENTITY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => return parse_hex(&path, text.trim()),
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        Err(_) => {}
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut hasher);
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    since_epoch.as_nanos().hash(&mut hasher);
    // Zero means "not given" on the wire.
    let identity = hasher.finish().max(1);
    write_durably(data_dir, IDENTITY_FILE, &format!("{identity:016x}\n"))?;
    Ok(identity)
}

/// The identities this node first heard from its peers, kept durably.
#[derive(Clone, Debug)]
pub struct PeerIdentities(Arc<Mutex<Known>>);

#[derive(Debug)]
struct Known {
    data_dir: PathBuf,
    identities: BTreeMap<u64, u64>,
    /// The members of this node's applied configuration, once it has one:
    /// only theirs are recorded (a removed node still running must not
    /// claim its id before the node that replaces it is added).
    members: Option<BTreeSet<u64>>,
    /// (peer, identity) pairs already refused in the log, to say it once.
    refused: BTreeSet<(u64, u64)>,
}

impl PeerIdentities {
    /// The identities recorded in `data_dir`.
    ///
    /// # Errors
    /// The file exists but cannot be read or parsed.
    pub fn load(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join(PEERS_FILE);
        let mut identities = BTreeMap::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for line in text.lines().filter(|line| !line.trim().is_empty()) {
                    let bad = || {
                        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {line:?}", path.display()))
                    };
                    let (id, identity) = line.split_once(' ').ok_or_else(bad)?;
                    identities.insert(id.trim().parse().map_err(|_| bad())?, parse_hex(&path, identity.trim())?);
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        let known = Known { data_dir: data_dir.to_owned(), identities, members: None, refused: BTreeSet::new() };
        Ok(Self(Arc::new(Mutex::new(known))))
    }

    /// The peers whose identities are recorded.
    pub fn known(&self) -> Vec<u64> {
        self.0.lock().expect("peer identities lock").identities.keys().copied().collect()
    }

    /// Whether node `from`, whose data directory is `identity`, may speak to
    /// this node: yes the first time (recorded durably) and while its
    /// identity stays the same; an identity of 0 (a sender that gives none)
    /// says nothing.
    ///
    /// # Errors
    /// Why it is refused, for the sender.
    pub fn admit(&self, from: u64, identity: u64) -> Result<(), String> {
        if identity == 0 {
            return Ok(());
        }
        let mut known = self.0.lock().expect("peer identities lock");
        match known.identities.get(&from) {
            Some(&first) if first == identity => Ok(()),
            Some(&first) => {
                let message = format!(
                    "node {from}'s data directory is not the one this node knew (identity {identity:016x}, was \
                     {first:016x}): a node id never comes back on a wiped disk while it is a member; remove node \
                     {from}, then add it again (or the node under a new id)"
                );
                if known.refused.insert((from, identity)) {
                    tracing::error!(peer = from, "refusing a peer: {message}");
                }
                Err(message)
            }
            // Not a member: heard (raft ignores what it need not hear), not recorded.
            None if known.members.as_ref().is_some_and(|members| !members.contains(&from)) => Ok(()),
            None if known.identities.len() >= PEERS_MAX => Err(format!("too many peers known ({PEERS_MAX})")),
            None => {
                known.identities.insert(from, identity);
                let text: String =
                    known.identities.iter().map(|(id, identity)| format!("{id} {identity:016x}\n")).collect();
                write_durably(&known.data_dir, PEERS_FILE, &text).map_err(|error| {
                    known.identities.remove(&from);
                    format!("cannot record node {from}'s identity: {error}")
                })
            }
        }
    }
}

impl PeerIdentities {
    /// The members of this node's applied configuration: from now on only
    /// theirs are recorded.
    pub fn set_members(&self, members: impl IntoIterator<Item = u64>) {
        self.0.lock().expect("peer identities lock").members = Some(members.into_iter().collect());
    }

    /// Forgets `peer`'s identity: this node applied its removal, so the id
    /// may come back on another disk once it is added again (a StatefulSet
    /// pod whose volume was lost keeps its ordinal, and so its id).
    ///
    /// # Errors
    /// The shortened record cannot be written durably (then it is kept).
    pub fn forget(&self, peer: u64) -> std::io::Result<()> {
        let mut known = self.0.lock().expect("peer identities lock");
        let Some(identity) = known.identities.remove(&peer) else { return Ok(()) };
        let text: String = known.identities.iter().map(|(id, identity)| format!("{id} {identity:016x}\n")).collect();
        if let Err(error) = write_durably(&known.data_dir, PEERS_FILE, &text) {
            known.identities.insert(peer, identity);
            return Err(error);
        }
        known.refused.retain(|(id, _)| *id != peer);
        tracing::info!(peer, "removed from the cluster: its data directory's identity is forgotten");
        Ok(())
    }
}

/// The cluster a node belongs to: an id fixed when the cluster was founded,
/// carried by every raft batch and snapshot. A node refuses peers of another
/// cluster; a node that joined adopts the id from the first peer it hears.
#[derive(Clone, Debug)]
pub struct ClusterId(Arc<Mutex<ClusterIdState>>);

#[derive(Debug)]
struct ClusterIdState {
    data_dir: PathBuf,
    /// `None` until a joining node has heard from the cluster.
    id: Option<u64>,
    /// Foreign ids already refused in the log, to say it once.
    refused: BTreeSet<u64>,
}

impl ClusterId {
    /// The id in `data_dir`; else, for a node founding a cluster with the
    /// initial voters `peers`, the id derived from them and `token` (every
    /// founder derives the same one; the token keeps apart two clusters
    /// founded with the same peer list); else (a node joining) none yet.
    ///
    /// # Errors
    /// The file cannot be read, parsed or written durably.
    pub fn load(data_dir: &Path, peers: &[(deeb_core::NodeId, String)], token: &str) -> std::io::Result<Self> {
        let path = data_dir.join(CLUSTER_FILE);
        let id = match std::fs::read_to_string(&path) {
            Ok(text) => Some(parse_hex(&path, text.trim())?),
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            Err(_) if peers.is_empty() => None,
            Err(_) => {
                let mut founders: Vec<(u64, &str)> =
                    peers.iter().map(|(id, address)| (id.0, address.as_str())).collect();
                founders.sort_unstable();
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                ("deeb cluster", token, founders).hash(&mut hasher);
                let id = hasher.finish().max(1);
                write_durably(data_dir, CLUSTER_FILE, &format!("{id:016x}\n"))?;
                Some(id)
            }
        };
        let state = ClusterIdState { data_dir: data_dir.to_owned(), id, refused: BTreeSet::new() };
        Ok(Self(Arc::new(Mutex::new(state))))
    }

    /// This node's cluster id, 0 while a joining node has not heard it.
    pub fn get(&self) -> u64 {
        self.0.lock().expect("cluster id lock").id.unwrap_or(0)
    }

    /// Whether a peer that says it belongs to cluster `id` may speak to
    /// this node. A node that has no id yet adopts the first one it hears,
    /// durably; one that has refuses any other, and 0.
    ///
    /// # Errors
    /// Why it is refused, for the sender.
    pub fn admit(&self, from: u64, id: u64) -> Result<(), String> {
        let mut state = self.0.lock().expect("cluster id lock");
        match state.id {
            Some(mine) if mine == id => Ok(()),
            Some(mine) => {
                let message = format!(
                    "node {from} belongs to another cluster (id {id:016x}; this node's is {mine:016x}): \
                     check its --peers or --join"
                );
                if state.refused.insert(id) {
                    tracing::error!(peer = from, "refusing a peer: {message}");
                }
                Err(message)
            }
            None if id == 0 => Ok(()),
            None => {
                write_durably(&state.data_dir, CLUSTER_FILE, &format!("{id:016x}\n"))
                    .map_err(|error| format!("cannot record the cluster id: {error}"))?;
                tracing::info!(cluster = format!("{id:016x}"), via = from, "joined cluster");
                state.id = Some(id);
                Ok(())
            }
        }
    }
}

fn parse_hex(path: &Path, text: &str) -> std::io::Result<u64> {
    u64::from_str_radix(text, 16)
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {error}", path.display())))
}

/// Writes `name` in `dir` through a synced temporary file and a rename.
fn write_durably(dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    deeb_core::disk::replace_file_durably(dir, name, text.as_bytes())
}

const IDENTITY_FILE: &str = "node-identity";
const PEERS_FILE: &str = "peer-identities";
const CLUSTER_FILE: &str = "cluster-id";
/// Bound on the peers whose identities a node records.
const PEERS_MAX: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_survives_restarts_and_a_wiped_directory_gets_another() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = load_or_create(dir.path()).expect("created");
        assert_eq!(load_or_create(dir.path()).expect("read back"), first);
        std::fs::remove_file(dir.path().join(IDENTITY_FILE)).expect("wipe");
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_ne!(load_or_create(dir.path()).expect("created again"), first);
    }

    #[test]
    fn founders_derive_one_cluster_id_and_a_joiner_adopts_it() {
        let founders = |token: &str| {
            let peers = [(deeb_core::NodeId(2), "b:1".to_owned()), (deeb_core::NodeId(1), "a:1".to_owned())];
            let dir = tempfile::tempdir().expect("temp dir");
            (ClusterId::load(dir.path(), &peers, token).expect("founded").get(), dir)
        };
        let (first, _dir) = founders("");
        assert_eq!(founders("").0, first, "every founder derives the same id");
        assert_ne!(founders("other").0, first, "a token keeps two clusters apart");
        let dir = tempfile::tempdir().expect("temp dir");
        let joiner = ClusterId::load(dir.path(), &[], "").expect("joining");
        assert_eq!(joiner.get(), 0);
        assert_eq!(joiner.admit(1, first), Ok(()));
        let restarted = ClusterId::load(dir.path(), &[], "").expect("adopted id kept");
        assert_eq!(restarted.get(), first);
        let refused = restarted.admit(7, first ^ 1).expect_err("another cluster");
        assert!(refused.contains("another cluster"), "{refused}");
        assert!(restarted.admit(7, 0).is_err(), "a node that knows its cluster refuses peers that give none");
    }

    #[test]
    fn a_removed_peer_may_come_back_on_another_disk() {
        let dir = tempfile::tempdir().expect("dir");
        let peers = PeerIdentities::load(dir.path()).expect("none yet");
        peers.admit(2, 0xaa).expect("first heard");
        assert!(peers.admit(2, 0xbb).is_err(), "another disk while a member");
        peers.forget(2).expect("forget");
        let reloaded = PeerIdentities::load(dir.path()).expect("recorded");
        reloaded.admit(2, 0xbb).expect("a new disk after the removal");
        assert!(reloaded.admit(2, 0xaa).is_err(), "and now the old one is refused");
        reloaded.forget(7).expect("an unknown peer: nothing to do");
    }

    #[test]
    fn only_members_identities_are_recorded_once_there_is_a_configuration() {
        let dir = tempfile::tempdir().expect("dir");
        let peers = PeerIdentities::load(dir.path()).expect("none yet");
        peers.set_members([1, 3]);
        peers.admit(2, 0xaa).expect("heard");
        assert!(peers.known().is_empty(), "node 2 is no member: nothing recorded");
        peers.set_members([1, 2, 3]);
        peers.admit(2, 0xbb).expect("recorded now");
        assert!(peers.admit(2, 0xaa).is_err(), "the removed disk, still running, is refused");
    }

    #[test]
    fn a_peer_whose_identity_changed_is_refused_across_restarts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let peers = PeerIdentities::load(dir.path()).expect("none yet");
        assert_eq!(peers.admit(2, 0xaa), Ok(()));
        assert_eq!(peers.admit(2, 0xaa), Ok(()));
        assert_eq!(peers.admit(3, 0), Ok(()), "no identity given says nothing");
        let reloaded = PeerIdentities::load(dir.path()).expect("recorded");
        let refused = reloaded.admit(2, 0xbb).expect_err("node 2 came back on another directory");
        assert!(refused.contains("remove node 2"), "{refused}");
        assert_eq!(reloaded.admit(2, 0xaa), Ok(()));
    }
}
