//! Property test: random log operations on a `MemDisk`, a crash at a random
//! point (sometimes in the middle of an operation, through an injected
//! fault), then recovery must give a state the store actually passed
//! through since its last durable point.

use deeb_core::disk::MemDisk;
use deeb_core::log::LogStore;
use proptest::prelude::*;
use raft::eraftpb::{ConfState, Entry, HardState, SnapshotMetadata};

/// Small, so that operations rotate segments often.
const SEGMENT_BYTES: u64 = 150;

#[derive(Clone, Debug)]
enum Operation {
    /// Append `count` entries, starting `back` entries before the end
    /// (clamped to the snapshot), so that some appends truncate a suffix.
    Append {
        back: u64,
        count: u64,
        new_term: bool,
    },
    SetHardState {
        vote: u64,
    },
    SetConfState {
        voters: u64,
    },
    Sync,
    /// Compact to `back` entries before the last (if there are entries).
    Compact {
        back: u64,
    },
    /// Apply a snapshot `ahead` entries past the last index.
    ApplySnapshot {
        ahead: u64,
    },
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        6 => (0..4u64, 1..5u64, any::<bool>()).prop_map(|(back, count, new_term)| Operation::Append { back, count, new_term }),
        2 => (0..4u64).prop_map(|vote| Operation::SetHardState { vote }),
        1 => (1..4u64).prop_map(|voters| Operation::SetConfState { voters }),
        3 => Just(Operation::Sync),
        1 => (0..3u64).prop_map(|back| Operation::Compact { back }),
        1 => (0..4u64).prop_map(|ahead| Operation::ApplySnapshot { ahead }),
    ]
}

/// What the store holds, as its public accessors show it.
#[derive(Clone, Debug, PartialEq)]
struct View {
    snapshot: SnapshotMetadata,
    hard_state: HardState,
    conf_state: ConfState,
    entries: Vec<Entry>,
}

impl View {
    fn of(store: &LogStore<MemDisk>) -> View {
        View {
            snapshot: store.snapshot_metadata().clone(),
            hard_state: store.hard_state().clone(),
            conf_state: store.conf_state().clone(),
            entries: store.in_memory_entries().to_vec(),
        }
    }

    fn last_index(&self) -> u64 {
        self.snapshot.index + self.entries.len() as u64
    }

    fn last_term(&self) -> u64 {
        self.entries.last().map_or(self.snapshot.term, |entry| entry.term)
    }

    fn assert_valid(&self) {
        for (offset, entry) in self.entries.iter().enumerate() {
            assert_eq!(entry.index, self.snapshot.index + 1 + offset as u64, "entries contiguous from snapshot + 1");
        }
    }
}

fn entry(index: u64, term: u64, salt: u64) -> Entry {
    Entry { index, term, data: format!("{index}/{term}/{salt}").into_bytes().into(), ..Default::default() }
}

fn metadata(index: u64, term: u64, conf_state: &ConfState) -> SnapshotMetadata {
    SnapshotMetadata {
        index,
        term,
        conf_state: protobuf::SingularPtrField::some(conf_state.clone()),
        ..Default::default()
    }
}

/// Runs one operation on the store and on the model. Returns the model
/// states a crash during the operation may leave, and whether the
/// operation makes everything durable when it succeeds.
fn run(store: &mut LogStore<MemDisk>, model: &mut View, operation: &Operation, salt: u64) -> (Vec<View>, bool, bool) {
    let mut states = Vec::new();
    let (result, durable) = match *operation {
        Operation::Append { back, count, new_term } => {
            let start = (model.last_index() + 1).saturating_sub(back).max(model.snapshot.index + 1);
            let term = model.last_term().max(model.hard_state.term) + u64::from(new_term);
            let batch: Vec<Entry> = (start..start + count).map(|index| entry(index, term, salt)).collect();
            for entry in &batch {
                let keep = (entry.index - model.snapshot.index - 1) as usize;
                model.entries.truncate(keep);
                model.entries.push(entry.clone());
                states.push(model.clone());
            }
            (store.append(&batch), false)
        }
        Operation::SetHardState { vote } => {
            let mut hard_state = model.hard_state.clone();
            hard_state.term = model.last_term().max(hard_state.term);
            hard_state.vote = vote;
            hard_state.commit = model.last_index().min(hard_state.commit + 2);
            model.hard_state = hard_state.clone();
            states.push(model.clone());
            (store.set_hard_state(&hard_state), false)
        }
        Operation::SetConfState { voters } => {
            let conf_state = ConfState { voters: (1..=voters).collect(), ..Default::default() };
            model.conf_state = conf_state.clone();
            states.push(model.clone());
            (store.set_conf_state(&conf_state), false)
        }
        Operation::Sync => (store.sync(), true),
        Operation::Compact { back } => {
            if model.entries.is_empty() {
                return (states, true, false);
            }
            let index = model.last_index().saturating_sub(back).max(model.snapshot.index + 1);
            let term = model.entries[(index - model.snapshot.index - 1) as usize].term;
            let point = metadata(index, term, &model.conf_state);
            model.entries.drain(..(index - model.snapshot.index) as usize);
            model.snapshot = point.clone();
            states.push(model.clone());
            (store.compact(&point), true)
        }
        Operation::ApplySnapshot { ahead } => {
            let point = metadata(model.last_index() + ahead, model.last_term() + 1, &model.conf_state);
            model.entries.clear();
            model.snapshot = point.clone();
            model.hard_state.commit = model.hard_state.commit.max(point.index);
            model.hard_state.term = model.hard_state.term.max(point.term);
            states.push(model.clone());
            (store.apply_snapshot(&point), true)
        }
    };
    (states, result.is_ok(), durable)
}

fn check_recovered(recovered: &View, history: &[View]) {
    recovered.assert_valid();
    assert!(
        history.iter().any(|state| state == recovered),
        "recovered state is not one the store passed through since its last durable point:\n{recovered:#?}\nlast durable: {:#?}",
        history.first()
    );
}

fn scenario(operations: &[Operation], crash_after: usize, fault: Option<(usize, u64)>, seed: u64) {
    let disk = MemDisk::new();
    let (mut store, _) = LogStore::open(disk.clone(), SEGMENT_BYTES).expect("open empty");
    let mut model = View::of(&store);
    let mut history = vec![model.clone()];
    for (step, operation) in operations.iter().take(crash_after).enumerate() {
        if let Some((_, budget)) = fault.filter(|(at, _)| *at == step) {
            disk.fail_after_operations(budget);
        }
        let (states, succeeded, durable) = run(&mut store, &mut model, operation, step as u64);
        if !succeeded {
            history.extend(states);
            break;
        }
        assert_eq!(View::of(&store), model, "store diverged from the model after {operation:?}");
        if durable {
            history = vec![model.clone()];
        } else {
            history.extend(states);
        }
    }
    drop(store);
    disk.crash(seed);
    let (mut recovered, _) = LogStore::open(disk.clone(), SEGMENT_BYTES).expect("recovery after crash");
    let view = View::of(&recovered);
    check_recovered(&view, &history);
    // The recovered store keeps working, and what it writes survives.
    let next = entry(view.last_index() + 1, view.last_term().max(view.hard_state.term) + 1, 999);
    recovered.append(&[next]).expect("append after recovery");
    recovered.sync().expect("sync after recovery");
    let expected = View::of(&recovered);
    disk.crash(seed + 1);
    let (reopened, recovery) = LogStore::open(disk, SEGMENT_BYTES).expect("reopen after recovery");
    assert_eq!(View::of(&reopened), expected);
    assert_eq!(recovery.torn_bytes_cut, 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn crash_recovery_keeps_every_synced_entry(
        operations in proptest::collection::vec(operation(), 1..40),
        crash_fraction in 0.0..=1.0f64,
        fault in proptest::option::of((0..40usize, 0..12u64)),
        seed in any::<u64>(),
    ) {
        let crash_after = (operations.len() as f64 * crash_fraction) as usize;
        scenario(&operations, crash_after, fault, seed);
    }
}

#[test]
fn crash_without_any_sync_recovers_an_earlier_state() {
    let operations = vec![
        Operation::Append { back: 0, count: 3, new_term: true },
        Operation::SetHardState { vote: 1 },
        Operation::Append { back: 1, count: 2, new_term: true },
    ];
    for seed in 0..32 {
        scenario(&operations, operations.len(), None, seed);
    }
}
