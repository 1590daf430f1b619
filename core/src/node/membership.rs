//! Membership changes (joint consensus when more than one voter changes),
//! member addresses in replicated state, and leader transfer.

use std::collections::VecDeque;
use std::time::Duration;

use deeb_proto::MemberContext;
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, Entry, EntryType, HardState,
};
use raft::StateRole;

use super::output::{AdminError, ClientToken, Output};
use super::{Fatal, MemberStatus, Node, OpenError};
use crate::config::Config;
use crate::disk::Disk;
use crate::ids::{LogIndex, NodeId};
use crate::log::LogStore;
use crate::sql::{Applied, ApplyError};
use crate::state_machine::StateMachine;

/// One change to the cluster's membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// Add a voter, or promote a learner (its address may then be empty).
    AddVoter { id: NodeId, address: String },
    /// Add a non-voting learner (a read replica that catches up).
    AddLearner { id: NodeId, address: String },
    /// Promote a node that is a learner now; refused if it is not (a
    /// joiner removed while it caught up must not come back as a voter).
    Promote { id: NodeId },
    /// Remove a voter or learner.
    Remove { id: NodeId },
}

/// Admin requests in progress.
#[derive(Default)]
pub(super) struct Admin {
    changes: Vec<PendingChange>,
    transfer: Option<PendingTransfer>,
}

struct PendingChange {
    index: u64,
    term: u64,
    token: ClientToken,
}

struct PendingTransfer {
    token: ClientToken,
    target: NodeId,
    deadline_tick: u64,
}

impl<D: Disk, S: StateMachine> Node<D, S> {
    /// Proposes a membership change; the answer comes as `Output::AdminDone`
    /// once the change is applied.
    ///
    /// # Errors
    /// Not the leader, another change pending, or an invalid change.
    pub fn change_membership(
        &mut self,
        now: Duration,
        token: ClientToken,
        changes: Vec<MemberChange>,
    ) -> Result<(), AdminError> {
        self.advance_clock(now);
        self.check_admin()?;
        if self.raw.raft.has_pending_conf() || self.conf_state().auto_leave {
            return Err(AdminError::ChangeInProgress);
        }
        let conf_change = self.build_conf_change(&changes)?;
        let context = Vec::new();
        if let Err(error) = self.raw.propose_conf_change(context, conf_change) {
            return Err(AdminError::Invalid(error.to_string()));
        }
        let index = self.raw.raft.raft_log.last_index();
        let term = self.raw.raft.term;
        self.admin.changes.push(PendingChange { index, term, token });
        self.drive();
        Ok(())
    }

    /// Asks the leader to hand leadership to `target`; the answer comes as
    /// `Output::AdminDone` when `target` leads.
    ///
    /// # Errors
    /// Not the leader, or `target` is not a voter.
    pub fn transfer_leader(&mut self, now: Duration, token: ClientToken, target: NodeId) -> Result<(), AdminError> {
        self.advance_clock(now);
        self.check_admin()?;
        if !self.conf_state().voters.contains(&target.0) {
            return Err(AdminError::Invalid(format!("node {target} is not a voter")));
        }
        if target == self.id {
            self.outputs.push_back(Output::AdminDone { token, result: Ok(()) });
            return Ok(());
        }
        let deadline_tick = self.ticks + 2 * self.config.election_ticks as u64;
        if let Some(previous) = self.admin.transfer.replace(PendingTransfer { token, target, deadline_tick }) {
            let result = Err(AdminError::Invalid(format!("superseded by a transfer to {target}")));
            self.outputs.push_back(Output::AdminDone { token: previous.token, result });
        }
        self.raw.transfer_leader(target.0);
        self.drive();
        Ok(())
    }

    fn check_admin(&self) -> Result<(), AdminError> {
        if self.fatal.is_some() {
            return Err(AdminError::Stopped);
        }
        if !self.in_configuration() {
            return Err(AdminError::NotMember { node: self.id });
        }
        if self.role != StateRole::Leader {
            return Err(AdminError::NotLeader { leader: self.leader() });
        }
        let max = self.config.limits.pending_admin_max;
        if self.admin.changes.len() >= max {
            return Err(AdminError::QueueFull { max });
        }
        Ok(())
    }

    fn build_conf_change(&self, changes: &[MemberChange]) -> Result<ConfChangeV2, AdminError> {
        if changes.is_empty() {
            return Err(AdminError::Invalid("no membership change given".to_owned()));
        }
        let mut conf_change = ConfChangeV2::default();
        conf_change.set_transition(ConfChangeTransition::Auto);
        // Every add carries the whole address book, so a joining node that
        // applies it can reach every member (the initial members' addresses
        // are bootstrapped locally, not logged).
        let adds = changes.iter().any(|change| !matches!(change, MemberChange::Remove { .. }));
        let mut contexts: Vec<MemberContext> = if adds {
            let known = self.members.iter();
            known.map(|(id, address)| MemberContext { node_id: id.0, address: address.clone() }).collect()
        } else {
            Vec::new()
        };
        for change in changes {
            let (change_type, id, address) = self.resolve_change(change)?;
            let mut single = ConfChangeSingle::default();
            single.set_change_type(change_type);
            single.node_id = id.0;
            conf_change.mut_changes().push(single);
            if let Some(address) = address {
                contexts.push(MemberContext { node_id: id.0, address });
            }
        }
        conf_change.context = encode_contexts(&contexts).into();
        Ok(conf_change)
    }

    fn resolve_change(&self, change: &MemberChange) -> Result<(ConfChangeType, NodeId, Option<String>), AdminError> {
        let conf = self.conf_state();
        let known = |id: NodeId| conf.voters.contains(&id.0) || conf.learners.contains(&id.0);
        match change {
            MemberChange::AddVoter { id, address } | MemberChange::AddLearner { id, address } => {
                let address = match (address.is_empty(), self.address(*id)) {
                    (false, _) => address.clone(),
                    (true, Some(existing)) => existing.to_owned(),
                    (true, None) => return Err(AdminError::Invalid(format!("node {id} needs an address"))),
                };
                if id.0 == 0 {
                    return Err(AdminError::Invalid("node id 0 is reserved".to_owned()));
                }
                let change_type = match change {
                    MemberChange::AddVoter { .. } => ConfChangeType::AddNode,
                    _ => ConfChangeType::AddLearnerNode,
                };
                Ok((change_type, *id, Some(address)))
            }
            MemberChange::Promote { id } if conf.learners.contains(&id.0) => Ok((ConfChangeType::AddNode, *id, None)),
            MemberChange::Promote { id } => Err(AdminError::Invalid(format!("node {id} is not a learner"))),
            MemberChange::Remove { id } if known(*id) => Ok((ConfChangeType::RemoveNode, *id, None)),
            MemberChange::Remove { id } => Err(AdminError::Invalid(format!("node {id} is not a member"))),
        }
    }

    /// Applies a committed conf change: raft's configuration, the log's conf
    /// state, and the member addresses in the database.
    pub(super) fn apply_conf_change(&mut self, entry: &Entry, applied: Applied) -> Result<(), Fatal> {
        let conf_change =
            decode_conf_change(entry).map_err(|reason| ApplyError::Divergence { index: applied.index, reason })?;
        let conf_state = self.raw.apply_conf_change(&conf_change)?;
        let mut members: Vec<(u64, Option<String>)> = Vec::new();
        for context in decode_contexts(&conf_change.context) {
            members.push((context.node_id, Some(context.address)));
        }
        for change in conf_change.get_changes() {
            if change.get_change_type() == ConfChangeType::RemoveNode {
                members.push((change.node_id, None));
            }
        }
        let conf_bytes = conf_state.write_to_bytes().expect("conf state encodes");
        self.sm_mut()?.apply_membership(applied, &conf_bytes, &members)?;
        self.raw.mut_store().set_conf_state(&conf_state)?;
        self.reload_members()?;
        tracing::info!(node = self.id.0, index = applied.index, ?conf_state, "membership changed");
        self.admin.on_applied(applied, &mut self.outputs);
        self.step_down_if_removed(&conf_state);
        Ok(())
    }

    /// raft-rs leaves a leader that removed itself in charge (a TODO in its
    /// `post_conf_change`), and the remaining voters keep following a node
    /// outside the configuration: nobody is ever elected. Note it here; the
    /// node steps down once the current ready is done (raft-rs forbids a
    /// term change between `ready` and `advance`).
    fn step_down_if_removed(&mut self, conf_state: &raft::eraftpb::ConfState) {
        let me = self.id.0;
        let still_voting = conf_state.voters.contains(&me) || conf_state.voters_outgoing.contains(&me);
        self.step_down_pending |= self.role == StateRole::Leader && !still_voting;
    }

    /// Steps down into the next term if this leader removed itself.
    pub(super) fn step_down_if_pending(&mut self) {
        if std::mem::take(&mut self.step_down_pending) && self.raw.raft.state == StateRole::Leader {
            let term = self.raw.raft.term;
            tracing::info!(node = self.id.0, term, "removed from the configuration: stepping down");
            self.raw.raft.become_follower(term + 1, raft::INVALID_ID);
        }
    }

    pub(super) fn reload_members(&mut self) -> Result<(), Fatal> {
        self.members = self.sm_ref()?.members()?.into_iter().map(|(id, address)| (NodeId(id), address)).collect();
        Ok(())
    }

    pub(super) fn member_statuses(&self) -> Vec<MemberStatus> {
        let conf = self.conf_state();
        let leader = self.role == StateRole::Leader;
        let progress = self.raw.raft.prs();
        let member = |id: u64, learner: bool| MemberStatus {
            id: NodeId(id),
            address: self.address(NodeId(id)).unwrap_or_default().to_owned(),
            learner,
            matched: leader.then(|| progress.get(id).map(|p| LogIndex(p.matched))).flatten(),
        };
        let voters = conf.voters.iter().chain(&conf.voters_outgoing).map(|&id| member(id, false));
        let mut all: Vec<MemberStatus> = voters.chain(conf.learners.iter().map(|&id| member(id, true))).collect();
        all.sort_by_key(|m| m.id);
        all.dedup_by_key(|m| m.id);
        all
    }
}

impl Admin {
    fn on_applied(&mut self, applied: Applied, outputs: &mut VecDeque<Output>) {
        let (done, waiting): (Vec<_>, Vec<_>) = self.changes.drain(..).partition(|c| c.index <= applied.index);
        self.changes = waiting;
        for change in done {
            let result = if change.index == applied.index && change.term == applied.term {
                Ok(())
            } else {
                Err(AdminError::OutcomeUnknown)
            };
            outputs.push_back(Output::AdminDone { token: change.token, result });
        }
    }

    pub(super) fn on_tick(&mut self, ticks: u64, outputs: &mut VecDeque<Output>) {
        if let Some(transfer) = self.transfer.take_if(|t| ticks >= t.deadline_tick) {
            let result = Err(AdminError::TransferTimeout(transfer.target));
            outputs.push_back(Output::AdminDone { token: transfer.token, result });
        }
    }

    pub(super) fn on_leader_change(&mut self, leader: NodeId, outputs: &mut VecDeque<Output>) {
        if let Some(transfer) = self.transfer.take_if(|t| t.target == leader) {
            outputs.push_back(Output::AdminDone { token: transfer.token, result: Ok(()) });
        }
    }

    pub(super) fn on_leadership_lost(&mut self, outputs: &mut VecDeque<Output>) {
        for change in self.changes.drain(..) {
            outputs.push_back(Output::AdminDone { token: change.token, result: Err(AdminError::OutcomeUnknown) });
        }
    }
}

/// A brand-new node of a new cluster writes the initial membership as
/// committed log entries 1..=n, one `AddNode` per member (with its address),
/// byte-identical on every initial node (as etcd bootstraps). Keeping the
/// initial voters in the log, not only in local state, is what lets a node
/// that joins later learn them by replaying the log.
pub(super) fn bootstrap<D: Disk>(
    config: &Config,
    log: &mut LogStore<D>,
    sm: &impl StateMachine,
    initial_members: &[(NodeId, String)],
) -> Result<(), OpenError> {
    let fresh = log.is_empty() && sm.applied().index == 0;
    if !fresh || initial_members.is_empty() {
        return Ok(());
    }
    let members = initial_voters(config.id, initial_members)?;
    let entries: Vec<Entry> =
        members.iter().zip(1..).map(|((id, address), index)| bootstrap_entry(*id, address, index)).collect();
    log.append(&entries)?;
    let hard_state = HardState { term: BOOTSTRAP_TERM, commit: entries.len() as u64, ..Default::default() };
    log.set_hard_state(&hard_state)?;
    log.sync()?;
    Ok(())
}

/// The initial members sorted by id, checked: distinct non-zero ids, `me`
/// among them.
fn initial_voters(me: NodeId, initial_members: &[(NodeId, String)]) -> Result<Vec<(NodeId, String)>, OpenError> {
    let mut members = initial_members.to_vec();
    members.sort();
    members.dedup_by_key(|(id, _)| *id);
    if members.len() != initial_members.len() || members.iter().any(|(id, _)| id.0 == 0) {
        return Err(OpenError::Invalid("initial members need distinct non-zero ids".to_owned()));
    }
    if !members.iter().any(|(id, _)| *id == me) {
        return Err(OpenError::Invalid(format!("node {me} is not among the initial members")));
    }
    Ok(members)
}

/// `deeb restore --bootstrap`: seeds the data directory of node `id` of a
/// new cluster with the SQLite database at `source` (see
/// [`crate::sql::seed`]), recorded as applied at index 1 of the bootstrap
/// term with the initial members as voters. Done with the same file and
/// members on every initial node, they start equal; opening the directory
/// records a snapshot at that index (`reconcile`) in place of the bootstrap
/// entries, so the log starts after it and a node that joins later is sent
/// a snapshot. `data_dir` must be new or empty.
///
/// # Errors
/// Bad members, a data directory in use, or a file deeb cannot replicate.
pub fn seed_data_dir(
    id: NodeId,
    data_dir: &std::path::Path,
    source: &std::path::Path,
    initial_members: &[(NodeId, String)],
) -> Result<crate::sql::seed::Seeded, OpenError> {
    let members = initial_voters(id, initial_members)?;
    if std::fs::read_dir(data_dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(OpenError::Invalid(format!(
            "{} is not empty: seed only a new node's data directory",
            data_dir.display()
        )));
    }
    std::fs::create_dir_all(data_dir)?;
    let voters = members.iter().map(|(id, _)| id.0).collect();
    let conf_state = raft::eraftpb::ConfState { voters, ..Default::default() };
    let conf_bytes = conf_state.write_to_bytes().expect("conf state encodes");
    let members: Vec<(u64, String)> = members.into_iter().map(|(id, address)| (id.0, address)).collect();
    let applied = Applied { index: SEEDED_INDEX, term: BOOTSTRAP_TERM };
    Ok(crate::sql::seed::seed(source, &data_dir.join("state.db"), applied, &conf_bytes, &members)?)
}

/// The index a seeded database is recorded as applied at.
const SEEDED_INDEX: u64 = 1;

fn bootstrap_entry(id: NodeId, address: &str, index: u64) -> Entry {
    let mut conf_change = ConfChange::default();
    conf_change.set_change_type(ConfChangeType::AddNode);
    conf_change.node_id = id.0;
    conf_change.context = encode_contexts(&[MemberContext { node_id: id.0, address: address.to_owned() }]).into();
    let mut entry = Entry::default();
    entry.set_entry_type(EntryType::EntryConfChange);
    entry.term = BOOTSTRAP_TERM;
    entry.index = index;
    entry.data = conf_change.write_to_bytes().expect("conf changes encode").into();
    entry
}

/// The term of the bootstrap entries; the first election is for term 2.
const BOOTSTRAP_TERM: u64 = 1;

fn decode_conf_change(entry: &Entry) -> Result<ConfChangeV2, String> {
    match entry.get_entry_type() {
        EntryType::EntryConfChange => {
            let v1 = ConfChange::parse_from_bytes(&entry.data).map_err(|e| format!("bad conf change: {e}"))?;
            // The same conversion raft-rs's `ConfChangeI::into_v2` does.
            let mut single = ConfChangeSingle::default();
            single.set_change_type(v1.get_change_type());
            single.node_id = v1.node_id;
            let mut v2 = ConfChangeV2::default();
            v2.mut_changes().push(single);
            v2.context = v1.context;
            Ok(v2)
        }
        _ => ConfChangeV2::parse_from_bytes(&entry.data).map_err(|e| format!("bad conf change: {e}")),
    }
}

fn encode_contexts(contexts: &[MemberContext]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for context in contexts {
        context.encode_length_delimited(&mut bytes).expect("a Vec grows as needed");
    }
    bytes
}

fn decode_contexts(mut bytes: &[u8]) -> Vec<MemberContext> {
    let mut contexts = Vec::new();
    while !bytes.is_empty() {
        match MemberContext::decode_length_delimited(&mut bytes) {
            Ok(context) => contexts.push(context),
            Err(_) => break,
        }
    }
    contexts
}
