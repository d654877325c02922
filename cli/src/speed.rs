//! How fast the machine itself is at a moment, for the benchmark.
//!
//! A virtual machine's core is not always as fast as it was a minute ago:
//! a neighbour on the same host can take a share of the physical core or
//! of its caches and memory bandwidth without any of it showing as steal
//! time. When that happens every process of the system costs more CPU
//! time for the same work at once, and a paced phase misses its rate for
//! reasons that are not the system's. [`probe`] times a fixed amount of
//! work of each kind on one core; the benchmark runs it at the run's start
//! and with the system at rest before each paced phase, and reports each
//! as a share of the start's speed ([`MachineSpeed::relative_to`]).

use std::sync::OnceLock;
use std::time::Instant;

use serde::Serialize;

/// Tries of each kind of work; the fastest counts, so that a moment's
/// preemption by the system's own processes (at rest, still polling) does
/// not.
const TRIES: usize = 5;
/// Passes over the compute buffer in one try (about 17 ms on the 2.6 GHz
/// cores of the machine it was written on).
const COMPUTE_PASSES: usize = 2_500;
/// Words in the compute buffer: 32 KiB, within any core's first-level
/// cache.
const COMPUTE_WORDS: usize = 4_096;
/// Entries of the memory chase: 64 MiB of `u32`, more than the last-level
/// cache of the machines it runs on, so that each step is a load from
/// memory.
const CHASE_ENTRIES: usize = 16 * 1024 * 1024;
/// Steps of the chase in one try (about 30 ms there, 150 ns a load).
const CHASE_STEPS: usize = 200_000;

/// The milliseconds one core took for each kind of work.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MachineSpeed {
    /// Arithmetic within the first-level cache.
    pub compute_ms: f64,
    /// Dependent loads from memory, each a cache miss.
    pub memory_ms: f64,
}

/// Speeds as shares of a reference: 1.0 as fast, 0.5 half as fast.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RelativeSpeed {
    pub compute: f64,
    pub memory: f64,
}

impl MachineSpeed {
    /// How fast the machine was when `self` was measured, as a share of
    /// its speed when `reference` was.
    pub fn relative_to(&self, reference: &MachineSpeed) -> RelativeSpeed {
        let share = |now: f64, then: f64| if now > 0.0 { then / now } else { 0.0 };
        RelativeSpeed {
            compute: share(self.compute_ms, reference.compute_ms),
            memory: share(self.memory_ms, reference.memory_ms),
        }
    }
}

/// Times both kinds of work on the calling thread, which it keeps busy for
/// about a quarter of a second (the first call also lays out the 64 MiB
/// chase, before timing it).
pub fn probe() -> MachineSpeed {
    cycle();
    MachineSpeed {
        compute_ms: fastest(compute),
        memory_ms: fastest(chase),
    }
}

fn fastest(work: fn() -> u64) -> f64 {
    (0..TRIES)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(work());
            started.elapsed().as_secs_f64() * 1000.0
        })
        .fold(f64::INFINITY, f64::min)
}

/// A chain of xorshift steps folded into a buffer: each step depends on
/// the one before, so the work cannot be spread over vector lanes and
/// takes the same number of cycles on every run.
fn compute() -> u64 {
    let mut buffer = [0_u64; COMPUTE_WORDS];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..COMPUTE_PASSES {
        for word in &mut buffer {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *word = word.wrapping_add(x);
        }
        std::hint::black_box(&mut buffer);
    }
    buffer.iter().fold(0, |a, w| a ^ w)
}

/// Follows a single cycle through [`CHASE_ENTRIES`] entries in a random
/// order: each load's address is the previous load's value, so no
/// prefetcher can run ahead and each step waits for memory.
fn chase() -> u64 {
    let next = cycle();
    let mut at = 0_u32;
    for _ in 0..CHASE_STEPS {
        at = next[at as usize];
    }
    u64::from(at)
}

/// The chase's table, laid out once per process.
fn cycle() -> &'static [u32] {
    static CYCLE: OnceLock<Vec<u32>> = OnceLock::new();
    CYCLE.get_or_init(|| one_cycle(CHASE_ENTRIES))
}

/// A table of `entries` where following entry to entry from any one
/// visits them all, in a random order, before coming back: Sattolo's
/// shuffle, which draws each swap from the entries before the one
/// placed, makes a permutation that is a single cycle.
fn one_cycle(entries: usize) -> Vec<u32> {
    let count = u32::try_from(entries).expect("the chase fits u32 indices");
    let mut next: Vec<u32> = (0..count).collect();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in (1..next.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = usize::try_from(x % i as u64).expect("below the table's length");
        next.swap(i, j);
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chase_visits_every_entry_once_before_it_returns() {
        for entries in [2, 3, 1_000, 65_536] {
            let next = one_cycle(entries);
            let mut seen = vec![false; entries];
            let mut at = 0_u32;
            for _ in 0..entries {
                at = next[at as usize];
                assert!(!seen[at as usize], "{at} visited twice in {entries}");
                seen[at as usize] = true;
            }
            assert_eq!(at, 0, "back at the start after {entries} steps");
        }
    }

    #[test]
    fn a_slower_moment_is_a_share_below_one() {
        let start = MachineSpeed {
            compute_ms: 10.0,
            memory_ms: 20.0,
        };
        let later = MachineSpeed {
            compute_ms: 20.0,
            memory_ms: 16.0,
        };
        assert_eq!(
            later.relative_to(&start),
            RelativeSpeed {
                compute: 0.5,
                memory: 1.25
            }
        );
        assert_eq!(
            start.relative_to(&start),
            RelativeSpeed {
                compute: 1.0,
                memory: 1.0
            }
        );
    }
}
