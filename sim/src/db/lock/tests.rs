//! Lock manager tests: each engine's queueing, upgrades, savepoint marks, deadlock edges.
use super::*;
use crate::db::value::Value;

fn row(k: i64) -> LockTarget {
    LockTarget::Record {
        table: "t".into(),
        key: vec![Value::Int(k)],
    }
}

#[test]
fn upgrade_behind_a_queued_writer_deadlocks() {
    let mut locks = LockManager::default();
    assert_eq!(locks.request(1, &row(1), LockMode::Shared), Grant::Granted);
    assert_eq!(
        locks.request(2, &row(1), LockMode::Exclusive),
        Grant::Wait(vec![1])
    );
    // 1 upgrades: it waits behind 2's queued request, and 2 waits for 1.
    assert_eq!(
        locks.request(1, &row(1), LockMode::Exclusive),
        Grant::Wait(vec![2])
    );
    assert_eq!(locks.find_cycle(1), Some(vec![1, 2]));
    assert_eq!(locks.cancel_wait(2), vec![1]);
    assert!(locks.holds(1, &row(1), LockMode::Exclusive));
}

#[test]
fn postgres_grants_a_request_compatible_with_the_holders_past_queued_waiters() {
    let mut locks = LockManager::new(QueueRule::Postgres);
    assert_eq!(locks.request(1, &row(1), LockMode::Shared), Grant::Granted);
    assert_eq!(
        locks.request(2, &row(1), LockMode::Exclusive),
        Grant::Wait(vec![1])
    );
    // Compatible with the holder: no sleep, no queue (InnoDB would queue it behind 2).
    assert_eq!(locks.request(3, &row(1), LockMode::Shared), Grant::Granted);
    assert!(locks.release_all(1).is_empty(), "2 still waits for 3");
    assert_eq!(locks.waits_for(2), vec![3]);
    assert_eq!(locks.release_all(3), vec![2]);
}

#[test]
fn postgres_upgrade_waits_for_the_holders_only() {
    let mut locks = LockManager::new(QueueRule::Postgres);
    assert_eq!(locks.request(1, &row(1), LockMode::Shared), Grant::Granted);
    assert_eq!(locks.request(3, &row(1), LockMode::Shared), Grant::Granted);
    assert_eq!(
        locks.request(2, &row(1), LockMode::Exclusive),
        Grant::Wait(vec![1, 3])
    );
    // 1 upgrades: it waits for the other sharer, not behind 2, so there is no cycle.
    assert_eq!(
        locks.request(1, &row(1), LockMode::Exclusive),
        Grant::Wait(vec![3])
    );
    assert_eq!(locks.find_cycle(1), None);
    assert_eq!(locks.release_all(3), vec![1]);
    assert!(locks.holds(1, &row(1), LockMode::Exclusive));
    assert_eq!(locks.waits_for(2), vec![1]);
}

#[test]
fn postgres_sleepers_queue_first_come_first_served() {
    let mut locks = LockManager::new(QueueRule::Postgres);
    assert_eq!(
        locks.request(1, &row(1), LockMode::Exclusive),
        Grant::Granted
    );
    assert_eq!(
        locks.request(2, &row(1), LockMode::Exclusive),
        Grant::Wait(vec![1])
    );
    // 3 sleeps on the tuple lock that 2 holds.
    assert_eq!(
        locks.request(3, &row(1), LockMode::Exclusive),
        Grant::Wait(vec![2])
    );
    assert_eq!(locks.release_all(1), vec![2]);
    assert_eq!(locks.waits_for(3), vec![2]);
}

#[test]
fn rollback_to_a_mark_gives_back_later_grants_only() {
    let mut locks = LockManager::new(QueueRule::Postgres);
    assert_eq!(locks.request(1, &row(1), LockMode::Shared), Grant::Granted);
    let mark = locks.mark(1);
    assert_eq!(
        locks.request(1, &row(1), LockMode::Exclusive),
        Grant::Granted
    );
    assert_eq!(
        locks.request(1, &row(2), LockMode::Exclusive),
        Grant::Granted
    );
    assert!(matches!(
        locks.request(2, &row(2), LockMode::Shared),
        Grant::Wait(_)
    ));
    assert_eq!(locks.rollback_to(1, mark), vec![2]);
    assert!(locks.holds(1, &row(1), LockMode::Shared));
    assert!(!locks.holds(1, &row(1), LockMode::Exclusive));
    assert!(!locks.holds(1, &row(2), LockMode::Shared));
    assert_eq!(locks.mark(1), mark);
}

#[test]
fn gap_locks_only_block_inserts() {
    let mut locks = LockManager::default();
    let gap = LockTarget::Gap {
        table: "t".into(),
        index: None,
        before: None,
    };
    assert_eq!(locks.request(1, &gap, LockMode::Gap), Grant::Granted);
    assert_eq!(locks.request(2, &gap, LockMode::Gap), Grant::Granted);
    assert_eq!(
        locks.request(3, &gap, LockMode::InsertIntention),
        Grant::Wait(vec![1, 2])
    );
    assert!(locks.release_all(1).is_empty());
    assert_eq!(locks.release_all(2), vec![3]);
    assert!(locks.waiting_target(3).is_none());
}

#[test]
fn shared_locks_are_granted_together_in_queue_order() {
    let mut locks = LockManager::default();
    assert_eq!(
        locks.request(1, &row(1), LockMode::Exclusive),
        Grant::Granted
    );
    assert!(matches!(
        locks.request(2, &row(1), LockMode::Shared),
        Grant::Wait(_)
    ));
    assert!(matches!(
        locks.request(3, &row(1), LockMode::Shared),
        Grant::Wait(_)
    ));
    assert!(matches!(
        locks.request(4, &row(1), LockMode::Exclusive),
        Grant::Wait(_)
    ));
    assert_eq!(locks.release_all(1), vec![2, 3]);
    assert!(locks.release_all(2).is_empty());
    assert_eq!(locks.release_all(3), vec![4]);
}

fn gap_before(k: i64) -> LockTarget {
    LockTarget::Gap {
        table: "t".into(),
        index: None,
        before: Some(vec![Value::Int(k)]),
    }
}

#[test]
fn a_held_next_key_lock_covers_its_record_and_gap_until_given_back() {
    let mut locks = LockManager::default();
    // 1 takes an exclusive next-key lock on record 5: the record and the gap before it.
    assert_eq!(
        locks.request(1, &row(5), LockMode::Exclusive),
        Grant::Granted
    );
    locks.note_struct(1, &row(5), true, RecordLockKind::NextKey);
    assert_eq!(
        locks.request(1, &gap_before(5), LockMode::Gap),
        Grant::Granted
    );
    locks.note_next_key_gap(1, &gap_before(5), true);
    let weight = locks.weight(1);
    let covered = |l: &LockManager, t: &LockTarget, x: bool, k| l.record_lock_covered(1, t, x, k);
    assert!(covered(&locks, &row(5), true, RecordLockKind::RecordOnly));
    assert!(covered(&locks, &row(5), false, RecordLockKind::NextKey));
    assert!(covered(
        &locks,
        &gap_before(5),
        true,
        RecordLockKind::GapOnly
    ));
    // Another record, and another transaction, are not covered.
    assert!(!covered(&locks, &row(6), false, RecordLockKind::RecordOnly));
    assert!(!locks.record_lock_covered(2, &row(5), false, RecordLockKind::RecordOnly));
    // A shared record-only lock covers neither an exclusive request nor the gap.
    assert_eq!(locks.request(2, &row(7), LockMode::Shared), Grant::Granted);
    locks.note_struct(2, &row(7), false, RecordLockKind::RecordOnly);
    assert!(locks.record_lock_covered(2, &row(7), false, RecordLockKind::RecordOnly));
    assert!(!locks.record_lock_covered(2, &row(7), true, RecordLockKind::RecordOnly));
    assert!(!locks.record_lock_covered(2, &row(7), false, RecordLockKind::NextKey));
    assert_eq!(locks.weight(1), weight, "asking covers nothing new");
    // Given back (read committed releases a row that did not match): it covers nothing.
    locks.release(1, &row(5));
    assert!(!covered(&locks, &row(5), false, RecordLockKind::RecordOnly));
    assert!(covered(
        &locks,
        &gap_before(5),
        true,
        RecordLockKind::GapOnly
    ));
    locks.release_all(1);
    assert!(!covered(
        &locks,
        &gap_before(5),
        false,
        RecordLockKind::GapOnly
    ));
}

#[test]
fn a_removed_record_passes_its_locks_to_the_next_gap_and_ends_its_waits() {
    let mut locks = LockManager::default();
    // 3 inserted record 1 (its lock made explicit); 1 waits for it, 2 holds the gap before it.
    assert_eq!(
        locks.request(3, &row(1), LockMode::Exclusive),
        Grant::Granted
    );
    assert_eq!(
        locks.request(2, &gap_before(1), LockMode::Gap),
        Grant::Granted
    );
    locks.note_struct(2, &gap_before(1), true, RecordLockKind::GapOnly);
    assert_eq!(
        locks.request(1, &row(1), LockMode::Exclusive),
        Grant::Wait(vec![3])
    );
    let weight = locks.weight(1);
    // 3's insert is rolled back: record 1 leaves, and its next record is 2.
    let ended = locks.remove_record(3, &row(1), &gap_before(1), &gap_before(2), |_, _| true);
    assert_eq!(ended, vec![1], "the waiting request is cancelled");
    assert!(locks.waiting_target(1).is_none());
    assert!(
        !locks.holds(1, &row(1), LockMode::Shared) && !locks.holds(3, &row(1), LockMode::Shared)
    );
    // Both the waiter and the gap's holder now lock the gap before record 2; the inserter's
    // own lock went with its record.
    assert!(locks.holds(1, &gap_before(2), LockMode::Gap));
    assert!(locks.holds(2, &gap_before(2), LockMode::Gap));
    assert!(!locks.holds(3, &gap_before(2), LockMode::Gap));
    // The cancelled request's struct stays, and the inherited gap lock is one more.
    // (The table lock counted while it waited is noted with the gap lock.)
    assert_eq!(
        locks.weight(1),
        weight + 1,
        "wait struct kept, gap struct added"
    );
    assert!(matches!(
        locks.request(4, &gap_before(2), LockMode::InsertIntention),
        Grant::Wait(_)
    ));
    // Read committed keeps no exclusive lock as a gap lock.
    let mut locks = LockManager::default();
    assert_eq!(
        locks.request(3, &row(1), LockMode::Exclusive),
        Grant::Granted
    );
    assert_eq!(
        locks.request(1, &row(1), LockMode::Exclusive),
        Grant::Wait(vec![3])
    );
    let ended = locks.remove_record(3, &row(1), &gap_before(1), &gap_before(2), |_, x| !x);
    assert_eq!(ended, vec![1]);
    assert!(!locks.holds(1, &gap_before(2), LockMode::Gap));
}

#[test]
fn a_lock_added_where_another_request_waits_is_a_struct_of_its_own() {
    let mut locks = LockManager::default();
    // 1 holds shared gap locks in one struct; 2 holds record 5, and 3 waits for it.
    assert_eq!(
        locks.request(1, &gap_before(3), LockMode::Gap),
        Grant::Granted
    );
    locks.note_struct(1, &gap_before(3), false, RecordLockKind::GapOnly);
    let one_struct = locks.weight(1);
    assert_eq!(
        locks.request(1, &gap_before(4), LockMode::Gap),
        Grant::Granted
    );
    locks.note_struct(1, &gap_before(4), false, RecordLockKind::GapOnly);
    assert_eq!(
        locks.weight(1),
        one_struct,
        "a similar struct takes the lock"
    );
    assert_eq!(
        locks.request(2, &row(5), LockMode::Exclusive),
        Grant::Granted
    );
    assert_eq!(
        locks.request(3, &row(5), LockMode::Shared),
        Grant::Wait(vec![2])
    );
    // The gap before record 5 is where 3 waits: the same lock type there is a new struct.
    assert_eq!(
        locks.request(1, &gap_before(5), LockMode::Gap),
        Grant::Granted
    );
    locks.note_struct(1, &gap_before(5), false, RecordLockKind::GapOnly);
    assert_eq!(locks.weight(1), one_struct + 1);
    // Past the waiting record, the similar struct takes locks again.
    assert_eq!(
        locks.request(1, &gap_before(6), LockMode::Gap),
        Grant::Granted
    );
    locks.note_struct(1, &gap_before(6), false, RecordLockKind::GapOnly);
    assert_eq!(locks.weight(1), one_struct + 1);
}
