//! Slot migration plans for `distribution = "slots"`: given what each server holds (keys and memory
//! from `INFO`, a sample of key slots from `RANDOMKEY`) and which servers stay, which slot ranges
//! move where so that every staying server holds about the same number of keys.
//!
//! Pure: the proxy's admin port measures the servers (`proxy_redis::migrate::server_load`) and
//! runs the plan's moves one after the other.

use super::slots::SLOT_COUNT;

/// What one server holds, as measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerFigures {
    /// Keys (every database).
    pub keys: u64,
    /// `used_memory` in bytes.
    pub memory: u64,
    /// Slots of randomly sampled keys.
    pub sampled_slots: Vec<u16>,
}

/// One range to move.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedMove {
    /// First slot.
    pub start: u16,
    /// Last slot (inclusive).
    pub end: u16,
    /// Old owner (server index).
    pub from: usize,
    /// New owner (server index).
    pub to: usize,
    /// Estimated keys in the range.
    pub keys: f64,
    /// Estimated bytes in the range.
    pub bytes: f64,
}

/// A plan and the estimated load of every server before and after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Ranges to move, in order.
    pub moves: Vec<PlannedMove>,
    /// Estimated keys per server now.
    pub keys_before: Vec<f64>,
    /// Estimated keys per server after the moves.
    pub keys_after: Vec<f64>,
    /// Slots per server after the moves.
    pub slots_after: Vec<usize>,
}

/// Why no plan can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The owner table is not 16384 entries naming known servers.
    #[error("the slot table must name one of the {servers} servers for each of the 16384 slots")]
    BadTable {
        /// Servers given.
        servers: usize,
    },
    /// Every server would be removed.
    #[error("no server would be left to hold the slots")]
    NoServerLeft,
}

/// Estimated keys and bytes of every slot: a server's keys and memory spread over the slots it owns
/// in proportion to the sampled keys in each (with half a sample added to every slot, so that a
/// slot no sample hit is not taken for empty).
pub fn slot_weights(owner: &[usize], figures: &[ServerFigures]) -> (Vec<f64>, Vec<f64>) {
    let mut keys = vec![0.0; owner.len()];
    let mut bytes = vec![0.0; owner.len()];
    let mut owned = vec![0usize; figures.len()];
    for &s in owner {
        if let Some(n) = owned.get_mut(s) {
            *n += 1;
        }
    }
    let mut hits = vec![0u32; owner.len()];
    let mut sampled = vec![0usize; figures.len()];
    for (s, f) in figures.iter().enumerate() {
        for &slot in &f.sampled_slots {
            // A sample from a slot the server does not own (a stale key) says nothing.
            if owner.get(usize::from(slot)) == Some(&s) {
                hits[usize::from(slot)] += 1;
                sampled[s] += 1;
            }
        }
    }
    const PRIOR: f64 = 0.5;
    for (slot, &s) in owner.iter().enumerate() {
        let Some(f) = figures.get(s) else { continue };
        let denom = sampled[s] as f64 + PRIOR * owned[s] as f64;
        if denom > 0.0 {
            let share = (f64::from(hits[slot]) + PRIOR) / denom;
            keys[slot] = f.keys as f64 * share;
            bytes[slot] = f.memory as f64 * share;
        }
    }
    (keys, bytes)
}

/// Plans moves so that the servers with `keep[i]` set end with about equal keys (equal slot counts
/// when no server holds a key), and the others with none. Slots move in contiguous ranges, taken
/// from the top of each overloaded server's slots.
pub fn plan(owner: &[usize], figures: &[ServerFigures], keep: &[bool]) -> Result<Plan, PlanError> {
    let n = figures.len();
    if owner.len() != SLOT_COUNT || keep.len() != n || owner.iter().any(|&s| s >= n) {
        return Err(PlanError::BadTable { servers: n });
    }
    let kept: Vec<usize> = (0..n).filter(|&i| keep[i]).collect();
    if kept.is_empty() {
        return Err(PlanError::NoServerLeft);
    }
    let (keys, bytes) = slot_weights(owner, figures);
    let total_keys: f64 = keys.iter().sum();
    // What is balanced: estimated keys, or slot counts for an empty group.
    let measure: Vec<f64> = if total_keys > 0.0 {
        keys.clone()
    } else {
        vec![1.0; SLOT_COUNT]
    };
    let total: f64 = measure.iter().sum();
    let target = total / kept.len() as f64;
    let mut load = vec![0.0; n];
    let mut keys_before = vec![0.0; n];
    for (slot, &s) in owner.iter().enumerate() {
        load[s] += measure[slot];
        keys_before[s] += keys[slot];
    }
    let mut new_owner = owner.to_vec();
    // The receiver being filled: one at a time, so that the moves are few contiguous ranges.
    let mut receiver: Option<usize> = None;
    for donor in 0..n {
        let removed = !keep[donor];
        // The donor's slots, highest first.
        for slot in (0..SLOT_COUNT).rev() {
            if owner[slot] != donor {
                continue;
            }
            let m = measure[slot];
            if !removed && load[donor] - target < m / 2.0 {
                break;
            }
            let full = |r: usize, load: &[f64]| load[r] + m / 2.0 > target;
            if receiver.is_none_or(|r| r == donor || full(r, &load)) {
                // The least loaded staying server (ties: the lowest index).
                receiver = kept
                    .iter()
                    .copied()
                    .filter(|&k| k != donor)
                    .min_by(|&a, &b| load[a].total_cmp(&load[b]));
            }
            let Some(to) = receiver else { break };
            if !removed && full(to, &load) {
                continue;
            }
            new_owner[slot] = to;
            load[donor] -= m;
            load[to] += m;
        }
    }
    let mut moves: Vec<PlannedMove> = Vec::new();
    for slot in 0..SLOT_COUNT {
        let (from, to) = (owner[slot], new_owner[slot]);
        if from == to {
            continue;
        }
        match moves.last_mut() {
            Some(m) if m.from == from && m.to == to && usize::from(m.end) + 1 == slot => {
                m.end = slot as u16;
                m.keys += keys[slot];
                m.bytes += bytes[slot];
            }
            _ => moves.push(PlannedMove {
                start: slot as u16,
                end: slot as u16,
                from,
                to,
                keys: keys[slot],
                bytes: bytes[slot],
            }),
        }
    }
    let mut keys_after = vec![0.0; n];
    let mut slots_after = vec![0usize; n];
    for (slot, &s) in new_owner.iter().enumerate() {
        keys_after[s] += keys[slot];
        slots_after[s] += 1;
    }
    Ok(Plan {
        moves,
        keys_before,
        keys_after,
        slots_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner_of(ranges: &[(usize, usize, usize)]) -> Vec<usize> {
        let mut o = vec![0; SLOT_COUNT];
        for &(a, b, s) in ranges {
            for x in o.iter_mut().take(b + 1).skip(a) {
                *x = s;
            }
        }
        o
    }

    fn uniform(keys: u64, owner: &[usize], s: usize) -> ServerFigures {
        ServerFigures {
            keys,
            memory: keys * 100,
            sampled_slots: (0..SLOT_COUNT as u16)
                .filter(|&x| owner[usize::from(x)] == s)
                .step_by(4)
                .collect(),
        }
    }

    #[test]
    fn a_new_empty_server_gets_a_third_of_two_full_ones() {
        let owner = owner_of(&[(0, 8191, 0), (8192, 16383, 1)]);
        let figures = vec![
            uniform(6000, &owner, 0),
            uniform(6000, &owner, 1),
            ServerFigures::default(),
        ];
        let p = plan(&owner, &figures, &[true, true, true]).expect("plan");
        assert!(p.moves.iter().all(|m| m.to == 2), "{:?}", p.moves);
        // One contiguous range from the top of each full server.
        assert_eq!(p.moves.len(), 2, "{:?}", p.moves);
        assert_eq!(p.moves[0].end, 8191);
        assert_eq!(p.moves[1].end, 16383);
        for k in &p.keys_after {
            assert!((k - 4000.0).abs() < 200.0, "{:?}", p.keys_after);
        }
        let moved: f64 = p.moves.iter().map(|m| m.bytes).sum();
        assert!((moved - 400_000.0).abs() < 20_000.0, "{moved}");
    }

    #[test]
    fn added_servers_are_filled_one_after_the_other() {
        let owner = owner_of(&[(0, 16383, 0)]);
        let figures = vec![
            uniform(3000, &owner, 0),
            ServerFigures::default(),
            ServerFigures::default(),
        ];
        let p = plan(&owner, &figures, &[true, true, true]).expect("plan");
        assert_eq!(p.moves.len(), 2, "{:?}", p.moves);
        assert_eq!((p.moves[0].to, p.moves[1].to), (2, 1));
        for k in &p.keys_after {
            assert!((k - 1000.0).abs() < 60.0, "{:?}", p.keys_after);
        }
    }

    #[test]
    fn a_removed_server_gives_all_its_slots_away() {
        let owner = owner_of(&[(0, 5460, 0), (5461, 10922, 1), (10923, 16383, 2)]);
        let figures: Vec<_> = (0..3).map(|s| uniform(3000, &owner, s)).collect();
        let p = plan(&owner, &figures, &[true, false, true]).expect("plan");
        assert_eq!(p.slots_after[1], 0);
        assert!(p.moves.iter().all(|m| m.from == 1));
        assert!(
            (p.keys_after[0] - p.keys_after[2]).abs() < 300.0,
            "{:?}",
            p.keys_after
        );
        assert_eq!(p.moves.first().map(|m| m.start), Some(5461));
        assert_eq!(p.moves.last().map(|m| m.end), Some(10922));
    }

    #[test]
    fn skewed_keys_move_fewer_slots_from_the_hot_server() {
        // Server 0 holds 9000 keys in its 8192 slots, server 1 holds 1000.
        let owner = owner_of(&[(0, 8191, 0), (8192, 16383, 1)]);
        let figures = vec![uniform(9000, &owner, 0), uniform(1000, &owner, 1)];
        let p = plan(&owner, &figures, &[true, true]).expect("plan");
        assert!(p.moves.iter().all(|m| m.from == 0 && m.to == 1));
        assert!(
            (p.keys_after[0] - 5000.0).abs() < 100.0,
            "{:?}",
            p.keys_after
        );
        // About 4000 of 9000 keys' worth of slots: 3641 slots.
        let slots: usize = p
            .moves
            .iter()
            .map(|m| usize::from(m.end - m.start) + 1)
            .sum();
        assert!((3550..3750).contains(&slots), "{slots}");
    }

    #[test]
    fn empty_group_balances_slot_counts_and_a_balanced_one_stays() {
        let owner = owner_of(&[(0, 16383, 0)]);
        let figures = vec![ServerFigures::default(), ServerFigures::default()];
        let p = plan(&owner, &figures, &[true, true]).expect("plan");
        assert_eq!(p.slots_after, vec![8192, 8192]);
        let owner = owner_of(&[(0, 8191, 0), (8192, 16383, 1)]);
        let figures = vec![uniform(500, &owner, 0), uniform(500, &owner, 1)];
        assert!(
            plan(&owner, &figures, &[true, true])
                .expect("plan")
                .moves
                .is_empty()
        );
    }

    #[test]
    fn refusals() {
        let owner = owner_of(&[(0, 16383, 0)]);
        assert_eq!(
            plan(&owner, &[ServerFigures::default()], &[false]),
            Err(PlanError::NoServerLeft)
        );
        assert_eq!(
            plan(&owner[..10], &[ServerFigures::default()], &[true]),
            Err(PlanError::BadTable { servers: 1 })
        );
    }
}
