//! A node's identity and peers from where a Kubernetes StatefulSet puts it:
//! pods are named `NAME-ORDINAL`, and the headless service publishes each
//! as `NAME-ORDINAL.SERVICE.NAMESPACE.svc.cluster.local`. So `deeb serve`
//! needs no shell in the image to work out `--id` and `--peers`.

use deeb_core::NodeId;
use deeb_server::config::ConfigError;

/// The ordinal at the end of a StatefulSet pod's host name
/// (`deeb-2` -> (`deeb`, 2)).
///
/// # Errors
/// A name without a `-NUMBER` suffix.
pub fn ordinal(hostname: &str) -> Result<(&str, u64), ConfigError> {
    let hostname = hostname.trim();
    let bad = || {
        ConfigError::Invalid(format!(
            "--id-from-hostname: the host name {hostname:?} does not end in -ORDINAL (a StatefulSet pod's name)"
        ))
    };
    let (name, ordinal) = hostname.rsplit_once('-').ok_or_else(bad)?;
    let ordinal = match ordinal.bytes().all(|byte| byte.is_ascii_digit()) {
        true => ordinal.parse().map_err(|_| bad())?,
        false => return Err(bad()),
    };
    match name.is_empty() {
        true => Err(bad()),
        false => Ok((name, ordinal)),
    }
}

/// This machine's host name (a pod's is its name).
///
/// # Errors
/// The kernel's host name cannot be read.
pub fn hostname() -> Result<String, ConfigError> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .map_err(|error| ConfigError::Invalid(format!("--id-from-hostname: reading the host name: {error}")))
}

/// `--peers-from-dns NAME.SERVICE.NAMESPACE.svc.cluster.local:PORT,replicas=N`:
/// the cluster's first `replicas` pods are its founding voters; pod `i`
/// is node `i + 1` at `NAME-i.SERVICE...:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPeers {
    /// The StatefulSet's name (the first label).
    name: String,
    /// The rest of the host name: the headless service's domain.
    domain: String,
    port: u16,
    /// How many pods founded the cluster (fixed at install).
    replicas: u64,
}

impl PodPeers {
    /// Parses the flag's value.
    ///
    /// # Errors
    /// Not of the form `NAME.DOMAIN:PORT,replicas=N` with N ≥ 1.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| {
            ConfigError::Invalid(format!(
                "--peers-from-dns {text:?}: {why} (expected NAME.SERVICE.NAMESPACE.svc.cluster.local:PORT,replicas=N)"
            ))
        };
        let (address, replicas) = text.trim().split_once(',').ok_or_else(|| bad("no replicas=N"))?;
        let replicas = replicas.trim().strip_prefix("replicas=").ok_or_else(|| bad("no replicas=N"))?;
        let replicas: u64 = replicas.parse().map_err(|_| bad("replicas is not a number"))?;
        if replicas == 0 {
            return Err(bad("replicas must be at least 1"));
        }
        let (host, port) = address.rsplit_once(':').ok_or_else(|| bad("no :PORT"))?;
        let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
        let (name, domain) = host.split_once('.').ok_or_else(|| bad("no service domain after the name"))?;
        if name.is_empty() || domain.is_empty() {
            return Err(bad("empty name or domain"));
        }
        Ok(Self { name: name.to_owned(), domain: domain.to_owned(), port, replicas })
    }

    /// The StatefulSet's name: pods are called `NAME-ORDINAL`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Pod `ordinal`'s DNS name.
    pub fn host(&self, ordinal: u64) -> String {
        format!("{}-{ordinal}.{}", self.name, self.domain)
    }

    /// Pod `ordinal`'s peer address.
    pub fn address(&self, ordinal: u64) -> String {
        format!("{}:{}", self.host(ordinal), self.port)
    }

    /// True for a pod that founds the cluster (the others join it).
    pub fn founds(&self, ordinal: u64) -> bool {
        ordinal < self.replicas
    }

    /// The founding voters, as `--peers` would list them.
    pub fn founders(&self) -> Vec<(NodeId, String)> {
        (0..self.replicas).map(|ordinal| (node_id(ordinal), self.address(ordinal))).collect()
    }
}

/// Pod `ordinal` is node `ordinal + 1` (node ids are non-zero).
pub fn node_id(ordinal: u64) -> NodeId {
    NodeId(ordinal + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_come_from_the_end_of_the_name() {
        assert_eq!(ordinal("deeb-0").expect("pod"), ("deeb", 0));
        assert_eq!(ordinal("my-db-12\n").expect("pod"), ("my-db", 12));
        for bad in ["deeb", "deeb-", "-3", "deeb-x1", "deeb-+1", "deeb-99999999999999999999"] {
            assert!(ordinal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn peers_are_the_founding_pods_dns_names() {
        let peers = PodPeers::parse("deeb.deeb-headless.db.svc.cluster.local:7100,replicas=3").expect("valid");
        assert_eq!(peers.name(), "deeb");
        assert_eq!(peers.address(4), "deeb-4.deeb-headless.db.svc.cluster.local:7100");
        let founders = peers.founders();
        assert_eq!(founders.len(), 3);
        assert_eq!(founders[0], (NodeId(1), "deeb-0.deeb-headless.db.svc.cluster.local:7100".to_owned()));
        assert_eq!(founders[2].0, NodeId(3));
        assert!(peers.founds(2) && !peers.founds(3));
    }

    #[test]
    fn malformed_dns_peers_are_refused() {
        for bad in [
            "deeb.svc:7100",
            "deeb.svc:7100,replicas=0",
            "deeb.svc:7100,replicas=x",
            "deeb.svc,replicas=3",
            "deeb:7100,replicas=3",
            "deeb.svc:port,replicas=3",
            ".svc:7100,replicas=3",
            "deeb.svc:7100,nodes=3",
        ] {
            assert!(PodPeers::parse(bad).is_err(), "{bad}");
        }
    }
}
