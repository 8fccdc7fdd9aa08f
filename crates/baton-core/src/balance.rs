//! How new connections are shared among the serving slots of a group with per-slot
//! sockets, and when an overloaded worker should shed keep-alive connections. Pure: the
//! driver passes in the serving slots, the connection counts the workers report and the
//! time; it gets back the weights to steer with and the sheds to ask for.
//!
//! # The rules
//!
//! **Weights.** Each serving slot gets a share of [`BUCKETS`] buckets; the kernel picks a
//! bucket at random for every new connection (see `steer.rs`). A slot's load is the
//! connections its worker reports plus those waiting in its accept queue (the driver adds
//! them, `GroupSockets::with_queued`: a worker that falls behind accepts late, and its own
//! count alone would make it look idle). Its raw weight is its deficit against the fair
//! share (`total / serving`, never negative) plus a headroom of one fair share (at least
//! 1): a balanced group steers uniformly, and a slot that has just been refilled with an
//! empty worker takes the largest share (2 of 3 new connections of a 2-slot group) until
//! it has caught up. A slot whose worker reports no counts (not baton's runtime) counts as
//! holding the fair share of the slots that do. Every serving slot keeps at least one
//! bucket.
//!
//! **Why a whole fair share of headroom.** When clients open one connection per request,
//! the connections a slot holds follow its share within milliseconds, well inside one
//! report (100 ms). A deficit seen in one report is then answered by the share of the
//! next period, and the next report sees the opposite deficit: a loop whose gain must stay
//! below 1. With two slots a deficit `x` comes back as `x * fair / (x + 2 * headroom)`;
//! with an eighth of the fair share (the gain was up to 4) every small random imbalance
//! grew into counts swinging between about 56+8 and 8+56 every report, the emptied worker
//! idling while the other's queue was full. A headroom of one fair share halves a deficit
//! each report at worst (test `churn_converges`). Keep-alive clients, which do not
//! follow the share by themselves, are moved by the sheds below.
//!
//! **Shedding.** Keep-alive clients never move by themselves: after a stop-first reload
//! every connection sits on the workers that were serving while the others were down. So
//! when every slot of the group is serving and every worker reports counts, and a worker
//! holds more than the fair share plus a tolerance (a quarter of the fair share, at least
//! 2) or less than the fair share minus it, every worker above the fair share is asked
//! to shed its excess: its runtime answers that many further requests (on distinct
//! connections) with `Connection: close`, the clients reconnect, and the weights send
//! most of them to the slots in deficit. Sheds are at least [`SHED_COOLDOWN`] apart
//! per group, so counts can catch up; a shed held back by the cooldown is due again when
//! it ends ([`Balancer::recheck_at`]), since stable counts bring no new report.

use std::time::{Duration, Instant};

/// Buckets shared among the serving slots (the resolution of the weights).
pub const BUCKETS: u32 = 64;

/// Least time between two sheds of one group.
pub const SHED_COOLDOWN: Duration = Duration::from_millis(1000);

/// One serving slot and the open connections its worker last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotLoad {
    /// Slot id.
    pub slot: u32,
    /// Open connections, when the worker reports them.
    pub connections: Option<u32>,
}

/// Ask the worker of `slot` to close `connections` keep-alive connections gracefully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shed {
    /// Slot id.
    pub slot: u32,
    /// How many connections to shed.
    pub connections: u32,
}

/// The balance state of one group.
#[derive(Debug, Clone, Default)]
pub struct Balancer {
    last_shed: Option<Instant>,
    recheck_at: Option<Instant>,
}

impl Balancer {
    /// A group with no shed yet.
    pub fn new() -> Balancer {
        Balancer::default()
    }

    /// The sheds to ask for now. `loads` are the serving slots; `count` is the group's
    /// slot count (nothing is shed while a slot is not serving).
    pub fn sheds(&mut self, now: Instant, count: u32, loads: &[SlotLoad]) -> Vec<Shed> {
        self.recheck_at = None;
        if loads.len() < 2 || loads.len() as u32 != count {
            return Vec::new();
        }
        let Some(counts) = loads
            .iter()
            .map(|l| l.connections)
            .collect::<Option<Vec<u32>>>()
        else {
            return Vec::new();
        };
        let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
        let n = counts.len() as u64;
        // Integer fair share, rounded up, so a shed never leaves a worker below it.
        let fair = total.div_ceil(n);
        let tolerance = (fair / 4).max(2);
        let lopsided = counts
            .iter()
            .any(|&c| u64::from(c) > fair + tolerance || u64::from(c) + tolerance < total / n);
        if !lopsided {
            return Vec::new();
        }
        let sheds: Vec<Shed> = loads
            .iter()
            .zip(&counts)
            .filter(|(_, &c)| u64::from(c) > fair)
            .map(|(l, &c)| Shed {
                slot: l.slot,
                connections: (u64::from(c) - fair) as u32,
            })
            .collect();
        if sheds.is_empty() {
            return sheds;
        }
        if let Some(ready) = self.last_shed.map(|at| at + SHED_COOLDOWN) {
            if now < ready {
                self.recheck_at = Some(ready);
                return Vec::new();
            }
        }
        self.last_shed = Some(now);
        sheds
    }

    /// When [`Balancer::sheds`] should be asked again: set while a needed shed waits for
    /// the cooldown to end.
    pub fn recheck_at(&self) -> Option<Instant> {
        self.recheck_at
    }
}

/// The buckets of each serving slot, in slot order, summing to [`BUCKETS`] (empty when no
/// slot serves).
pub fn weights(loads: &[SlotLoad]) -> Vec<(u32, u32)> {
    if loads.is_empty() {
        return Vec::new();
    }
    let known: Vec<u32> = loads.iter().filter_map(|l| l.connections).collect();
    let known_avg = if known.is_empty() {
        0.0
    } else {
        known.iter().map(|&c| f64::from(c)).sum::<f64>() / known.len() as f64
    };
    let counts: Vec<f64> = loads
        .iter()
        .map(|l| l.connections.map_or(known_avg, f64::from))
        .collect();
    let fair = counts.iter().sum::<f64>() / counts.len() as f64;
    let headroom = fair.max(1.0);
    let raw: Vec<f64> = counts
        .iter()
        .map(|c| (fair - c).max(0.0) + headroom)
        .collect();
    apportion(&raw, BUCKETS)
        .into_iter()
        .zip(loads)
        .map(|(b, l)| (l.slot, b))
        .collect()
}

/// Split `total` buckets in proportion to `raw` (largest remainder), each share >= 1.
fn apportion(raw: &[f64], total: u32) -> Vec<u32> {
    let n = raw.len() as u32;
    if n == 0 {
        return Vec::new();
    }
    if n >= total {
        return vec![1; raw.len()];
    }
    // Everyone gets 1; the rest goes by weight.
    let spare = total - n;
    let sum: f64 = raw.iter().sum();
    let exact: Vec<f64> = raw
        .iter()
        .map(|r| f64::from(spare) * r / sum.max(f64::MIN_POSITIVE))
        .collect();
    let mut shares: Vec<u32> = exact.iter().map(|e| e.floor() as u32).collect();
    let mut left = spare - shares.iter().sum::<u32>();
    let mut order: Vec<usize> = (0..raw.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    for i in order {
        if left == 0 {
            break;
        }
        shares[i] += 1;
        left -= 1;
    }
    shares.iter().map(|s| s + 1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn loads(counts: &[Option<u32>]) -> Vec<SlotLoad> {
        counts
            .iter()
            .enumerate()
            .map(|(i, &connections)| SlotLoad {
                slot: i as u32,
                connections,
            })
            .collect()
    }

    #[test]
    fn a_balanced_group_is_steered_uniformly() {
        let w = weights(&loads(&[Some(32), Some(32)]));
        assert_eq!(w, vec![(0, 32), (1, 32)]);
        let w = weights(&loads(&[Some(0), Some(0), Some(0), Some(0)]));
        assert_eq!(w, vec![(0, 16), (1, 16), (2, 16), (3, 16)]);
    }

    #[test]
    fn an_empty_slot_takes_most_new_connections() {
        let w = weights(&loads(&[Some(0), Some(64)]));
        assert_eq!(w.len(), 2);
        assert!(w[0].1 >= 40 && w[1].1 >= 1, "{w:?}");
        assert_eq!(w[0].1 + w[1].1, BUCKETS);
    }

    #[test]
    fn unknown_counts_are_taken_as_average() {
        let w = weights(&loads(&[None, Some(10), Some(10)]));
        assert_eq!(w.iter().map(|x| x.1).collect::<Vec<_>>(), vec![22, 21, 21]);
        let w = weights(&loads(&[None, None]));
        assert_eq!(w, vec![(0, 32), (1, 32)]);
    }

    #[test]
    fn weights_keep_slot_ids() {
        let l = [
            SlotLoad {
                slot: 1,
                connections: Some(3),
            },
            SlotLoad {
                slot: 3,
                connections: Some(3),
            },
        ];
        assert_eq!(weights(&l), vec![(1, 32), (3, 32)]);
        assert!(weights(&[]).is_empty());
    }

    #[test]
    fn sheds_the_excess_once_every_slot_serves_then_waits() {
        let t0 = Instant::now();
        let mut b = Balancer::new();
        // A slot is not serving: nothing is shed (its connections are elsewhere on purpose).
        assert!(b.sheds(t0, 2, &loads(&[Some(64)])).is_empty());
        let s = b.sheds(t0, 2, &loads(&[Some(0), Some(64)]));
        assert_eq!(
            s,
            vec![Shed {
                slot: 1,
                connections: 32
            }]
        );
        assert_eq!(b.recheck_at(), None);
        // Cooldown; the shed is due again when it ends.
        assert!(b
            .sheds(t0 + ms(500), 2, &loads(&[Some(0), Some(64)]))
            .is_empty());
        assert_eq!(b.recheck_at(), Some(t0 + SHED_COOLDOWN));
        // Balanced meanwhile: nothing to recheck.
        assert!(b
            .sheds(t0 + ms(600), 2, &loads(&[Some(30), Some(34)]))
            .is_empty());
        assert_eq!(b.recheck_at(), None);
        assert_eq!(
            b.sheds(t0 + ms(1000), 2, &loads(&[Some(0), Some(64)]))
                .len(),
            1
        );
    }

    #[test]
    fn a_slot_far_below_its_share_makes_the_others_shed_their_excess() {
        // After a 4-worker stop-first reload: the last replaced worker got few.
        let mut b = Balancer::new();
        let s = b.sheds(
            Instant::now(),
            4,
            &loads(&[Some(20), Some(19), Some(18), Some(7)]),
        );
        let got: Vec<(u32, u32)> = s.iter().map(|s| (s.slot, s.connections)).collect();
        assert_eq!(got, vec![(0, 4), (1, 3), (2, 2)]);
        // And slot 3 gets the largest share of the new connections.
        let w = weights(&loads(&[Some(16), Some(16), Some(16), Some(7)]));
        assert!((0..3).all(|i| w[3].1 > w[i].1 + 4), "{w:?}");
    }

    /// One connection per request: the connections of each slot follow its share within
    /// one report period. The deficits must shrink from report to report, not swing.
    #[test]
    fn churn_converges() {
        for start in [
            vec![33u32, 31],
            vec![40, 24],
            vec![0, 64],
            vec![64, 0],
            vec![20, 16, 16, 12],
            vec![0, 22, 21, 21],
        ] {
            let total: u32 = start.iter().sum();
            let n = start.len() as u32;
            let fair = total / n;
            let dev = |c: &[u32]| c.iter().map(|&x| x.abs_diff(fair)).max().unwrap_or(0);
            let mut counts = start.clone();
            let mut worst = 0;
            for _ in 0..8 {
                let l: Vec<Option<u32>> = counts.iter().map(|&c| Some(c)).collect();
                let w = weights(&loads(&l));
                counts = w
                    .iter()
                    .map(|(_, b)| {
                        (f64::from(total) * f64::from(*b) / f64::from(BUCKETS)).round() as u32
                    })
                    .collect();
                worst = worst.max(dev(&counts));
            }
            // Never beyond where it started (plus rounding), and balanced at the end.
            assert!(
                worst <= dev(&start).max(4),
                "{start:?}: swung to {worst} off the fair share"
            );
            assert!(
                dev(&counts) <= 3,
                "{start:?}: still {counts:?} after 8 reports"
            );
        }
    }

    #[test]
    fn small_imbalances_and_unknown_counts_are_left_alone() {
        let t0 = Instant::now();
        let mut b = Balancer::new();
        assert!(b.sheds(t0, 2, &loads(&[Some(28), Some(36)])).is_empty());
        assert!(b.sheds(t0, 2, &loads(&[Some(0), Some(3)])).is_empty());
        assert!(b.sheds(t0, 2, &loads(&[None, Some(64)])).is_empty());
        assert!(b.sheds(t0, 1, &loads(&[Some(64)])).is_empty());
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    proptest! {
        /// Buckets always sum to BUCKETS, every serving slot keeps one, and a slot with
        /// fewer connections never gets fewer buckets than one with more.
        #[test]
        fn weights_are_a_monotone_partition(counts in prop::collection::vec(prop::option::weighted(0.9, 0u32..5000), 1..40)) {
            let l = loads(&counts);
            let w = weights(&l);
            prop_assert_eq!(w.len(), l.len());
            prop_assert_eq!(w.iter().map(|x| x.1).sum::<u32>(), BUCKETS.max(l.len() as u32));
            prop_assert!(w.iter().all(|x| x.1 >= 1));
            for (i, a) in counts.iter().enumerate() {
                for (j, b) in counts.iter().enumerate() {
                    if let (Some(a), Some(b)) = (a, b) {
                        if a < b {
                            // Largest-remainder rounding may differ by one bucket.
                            prop_assert!(w[i].1 + 1 >= w[j].1, "{:?} -> {:?}", counts, w);
                        }
                    }
                }
            }
        }

        /// A shed never takes a worker below the fair share, and only over-full workers shed.
        #[test]
        fn sheds_stop_at_the_fair_share(counts in prop::collection::vec(0u32..5000, 2..40)) {
            let l = loads(&counts.iter().map(|&c| Some(c)).collect::<Vec<_>>());
            let mut b = Balancer::new();
            let sheds = b.sheds(Instant::now(), counts.len() as u32, &l);
            let total: u32 = counts.iter().sum();
            let fair = total.div_ceil(counts.len() as u32);
            for s in sheds {
                let c = counts[s.slot as usize];
                prop_assert!(c > fair && s.connections == c - fair);
            }
        }
    }
}
