//! The injected bugs the simulator must catch, switched on at run time.

use deeb_core::Mutations;

use super::swarm::Scenario;

/// One deliberately injected bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutant {
    /// Linearizable reads served locally without ReadIndex (SIM-NOTES M1).
    ReadWithoutReadIndex,
    /// A read served once ReadIndex answers, before applying up to it (M2).
    ReadBeforeApply,
    /// The log is never fsynced: acknowledged writes die with power (M4).
    AckBeforeFsync,
    /// Votes and append responses sent before their sync (M5).
    SendBeforeSync,
    /// The vote is not persisted (M6).
    ForgetVote,
    /// A proposal answered when any entry at its index applies (M7).
    MatchIndexOnly,
    /// Statements replicated as text and re-executed (M11).
    ReplicateStatements,
    /// Log recovery skips record checksums: a garbled record is believed,
    /// an undecodable one ends the log like a torn tail (M17).
    AcceptTornRecords,
    /// Followers apply changesets with foreign keys on, so they run the
    /// cascades the changeset already carries (issue 9's first defect).
    FollowerForeignKeys,
    /// The leader ignores idempotency keys, so a client's retry of a write
    /// whose outcome it did not learn applies it again.
    IgnoreIdempotencyKeys,
    /// The hard state (with its commit index) is written before the
    /// entries inside one persist call.
    HardStateBeforeEntries,
    /// The applied index is recorded in its own transaction after the
    /// batch's, so a crash between them applies the batch twice.
    AppliedIndexOutsideBatch,
    /// A received snapshot is installed without syncing it before the log
    /// is compacted past it.
    SnapshotInstallUnsynced,
    /// The log compacted to a snapshot before the state machine (whose
    /// commits are not synced) is durable through it.
    CompactBeforeDurable,
    /// Bounded-stale reads bounded by the last leader contact instead of
    /// a read index the node applied (what the bound meant before).
    StaleBoundOnLeaderContact,
    /// A follower overwriting conflicting entries keeps the stale entries
    /// past the new ones (blind spot 4).
    KeepStaleSuffix,
    /// ReadIndex contexts without node id and incarnation (blind spot 5).
    BareReadContexts,
    /// A read arriving while a ReadIndex round is in flight joins it
    /// (issue 15's batched ReadIndex).
    ReadJoinsRoundInFlight,
    /// A lease read runs at once instead of once the committed index
    /// applied (issue 15's acknowledgement at commit).
    LeaseReadBeforeApply,
    /// A request ending the leader's transaction on top of batches in
    /// flight starts a new one and goes on without them (issue 15's
    /// pipelined group commit).
    PipelineOverLostTransaction,
    /// Not a code change: the lease's assumption broken on purpose (a
    /// node's clock far slower than the drift it allows), which lease
    /// reads must be seen to violate (`Swarm::breaking_the_lease`).
    LeaseBeyondClockBound,
    /// The client history flips one read result (M20): must always fail.
    Canary,
}

impl Mutant {
    /// The mutants `mutants` and `ci` require to be caught.
    pub const ALL: [Mutant; 22] = [
        Mutant::Canary,
        Mutant::ReadWithoutReadIndex,
        Mutant::ReadBeforeApply,
        Mutant::AckBeforeFsync,
        Mutant::SendBeforeSync,
        Mutant::ForgetVote,
        Mutant::MatchIndexOnly,
        Mutant::ReplicateStatements,
        Mutant::AcceptTornRecords,
        Mutant::FollowerForeignKeys,
        Mutant::IgnoreIdempotencyKeys,
        Mutant::HardStateBeforeEntries,
        Mutant::AppliedIndexOutsideBatch,
        Mutant::SnapshotInstallUnsynced,
        Mutant::CompactBeforeDurable,
        Mutant::StaleBoundOnLeaderContact,
        Mutant::KeepStaleSuffix,
        Mutant::LeaseBeyondClockBound,
        Mutant::BareReadContexts,
        Mutant::ReadJoinsRoundInFlight,
        Mutant::LeaseReadBeforeApply,
        Mutant::PipelineOverLostTransaction,
    ];

    /// Mutants the faults catch too rarely to require (`run --mutant` and
    /// `replay --mutant` take them): none now. bare-read-contexts was one
    /// until the read-index check and the deaf restarts.
    pub const NARROW: [Mutant; 0] = [];

    pub fn name(self) -> &'static str {
        match self {
            Mutant::ReadWithoutReadIndex => "read-without-read-index",
            Mutant::ReadBeforeApply => "read-before-apply",
            Mutant::AckBeforeFsync => "ack-before-fsync",
            Mutant::SendBeforeSync => "send-before-sync",
            Mutant::ForgetVote => "forget-vote",
            Mutant::MatchIndexOnly => "match-index-only",
            Mutant::ReplicateStatements => "replicate-statements",
            Mutant::AcceptTornRecords => "accept-torn-records",
            Mutant::FollowerForeignKeys => "follower-foreign-keys",
            Mutant::IgnoreIdempotencyKeys => "ignore-idempotency-keys",
            Mutant::HardStateBeforeEntries => "hard-state-before-entries",
            Mutant::AppliedIndexOutsideBatch => "applied-index-outside-batch",
            Mutant::SnapshotInstallUnsynced => "snapshot-install-unsynced",
            Mutant::CompactBeforeDurable => "compact-before-durable",
            Mutant::StaleBoundOnLeaderContact => "stale-bound-on-leader-contact",
            Mutant::KeepStaleSuffix => "keep-stale-suffix",
            Mutant::BareReadContexts => "bare-read-contexts",
            Mutant::ReadJoinsRoundInFlight => "read-joins-round-in-flight",
            Mutant::LeaseReadBeforeApply => "lease-read-before-apply",
            Mutant::PipelineOverLostTransaction => "pipeline-over-lost-transaction",
            Mutant::LeaseBeyondClockBound => "lease-beyond-clock-bound",
            Mutant::Canary => "canary",
        }
    }

    /// The cluster size its seeds run with: a stale suffix needs a leader
    /// stranded with one follower while three others elect another.
    pub fn nodes(self) -> u64 {
        match self {
            Mutant::KeepStaleSuffix => 5,
            _ => 3,
        }
    }

    /// The scenario seed `seed` runs this mutant in: an unsynced snapshot
    /// install shows only where a kill follows the install on the SQLite
    /// files' crash model, so it runs among crashes; the others take every
    /// scenario in turn.
    pub fn scenario(self, seed: u64) -> Scenario {
        match self {
            Mutant::SnapshotInstallUnsynced => Scenario::Crashes,
            _ => Scenario::for_seed(seed),
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().chain(Self::NARROW).find(|mutant| mutant.name() == text)
    }

    /// The core switches this mutant turns on (none for the canary, which
    /// lives in the history recorder, nor for the broken lease assumption,
    /// which lives in the scenario).
    pub fn mutations(self) -> Mutations {
        let mut mutations = Mutations::default();
        match self {
            Mutant::ReadWithoutReadIndex => mutations.read_without_read_index = true,
            Mutant::ReadBeforeApply => mutations.read_before_apply = true,
            Mutant::AckBeforeFsync => mutations.skip_log_sync = true,
            Mutant::SendBeforeSync => mutations.send_before_sync = true,
            Mutant::ForgetVote => mutations.forget_vote = true,
            Mutant::MatchIndexOnly => mutations.match_index_only = true,
            Mutant::ReplicateStatements => mutations.replicate_statements = true,
            Mutant::AcceptTornRecords => mutations.skip_record_checksums = true,
            Mutant::FollowerForeignKeys => mutations.follower_foreign_keys = true,
            Mutant::IgnoreIdempotencyKeys => mutations.ignore_idempotency_keys = true,
            Mutant::HardStateBeforeEntries => mutations.hard_state_before_entries = true,
            Mutant::AppliedIndexOutsideBatch => mutations.applied_index_outside_batch = true,
            Mutant::SnapshotInstallUnsynced => mutations.snapshot_install_unsynced = true,
            Mutant::CompactBeforeDurable => mutations.compact_before_durable = true,
            Mutant::StaleBoundOnLeaderContact => mutations.stale_bound_on_leader_contact = true,
            Mutant::KeepStaleSuffix => mutations.keep_stale_suffix = true,
            Mutant::BareReadContexts => mutations.bare_read_contexts = true,
            Mutant::ReadJoinsRoundInFlight => mutations.read_joins_round_in_flight = true,
            Mutant::LeaseReadBeforeApply => mutations.lease_read_before_apply = true,
            Mutant::PipelineOverLostTransaction => mutations.pipeline_over_lost_transaction = true,
            Mutant::LeaseBeyondClockBound | Mutant::Canary => {}
        }
        mutations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_each_mutant_switches_something() {
        for mutant in Mutant::ALL.into_iter().chain(Mutant::NARROW) {
            assert_eq!(Mutant::parse(mutant.name()), Some(mutant));
            let in_the_code = !matches!(mutant, Mutant::Canary | Mutant::LeaseBeyondClockBound);
            assert_eq!(mutant.mutations().any(), in_the_code, "{mutant:?}");
        }
    }
}
