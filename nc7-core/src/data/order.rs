//! Which samples make each batch of an epoch: a seeded shuffle that depends only on the seed
//! and the epoch (so a resumed run draws the same batches), a smaller final batch, and a
//! position (epoch, batch) that checkpoints store.

use serde::{Deserialize, Serialize};

/// Where a run is in its data: the epoch (from 1) and the batches of it already taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DataPosition {
    /// The epoch, from 1.
    pub epoch: u64,
    /// Batches of that epoch already taken.
    pub batch: u64,
}

/// The batches of a data set of `len` samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOrder {
    /// Samples in the data set.
    pub len: usize,
    /// Samples per batch (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Whether each epoch visits the samples in a new seeded order.
    pub shuffle: bool,
    /// The seed of the shuffle.
    pub seed: u64,
}

impl BatchOrder {
    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> u64 {
        self.len.div_ceil(self.batch_size.max(1)) as u64
    }

    /// The order of the samples in `epoch` (from 1): the same for the same seed and epoch on
    /// every machine and in every run.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len).collect();
        if self.shuffle {
            let mut rng = SplitMix64(self.seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            // Fisher–Yates with an unbiased bounded draw.
            for i in (1..order.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                order.swap(i, j);
            }
        }
        order
    }

    /// The sample indices of each remaining batch of the epoch at `position`.
    pub fn batches_from(&self, position: DataPosition) -> impl Iterator<Item = Vec<usize>> {
        let order = self.epoch_order(position.epoch.max(1));
        let size = self.batch_size.max(1);
        let skip = (position.batch as usize)
            .saturating_mul(size)
            .min(order.len());
        let rest: Vec<usize> = order[skip..].to_vec();
        (0..rest.len().div_ceil(size))
            .map(move |b| rest[b * size..((b + 1) * size).min(rest.len())].to_vec())
    }
}

/// Which sample a data set is asked for and what its randomness derives from: the run's seed,
/// the data epoch and the sample's index. A data set that augments its samples draws from
/// [`SampleKey::sample_seed`], so that an augmented run repeats bit for bit, continues exactly
/// with `--continue`, and does not depend on which thread or device reads the sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SampleKey {
    /// The sample's index in the data set.
    pub index: usize,
    /// The data epoch it is read for, from 1; 0 for evaluation, inference and exports.
    pub epoch: u64,
    /// The run's random seed (`trainer_config.random_seed`).
    pub seed: u64,
}

impl SampleKey {
    /// Sample `index` read outside a training's epochs (by index alone, filtering at build,
    /// inference, a saved model's signature): epoch 0, seed 0.
    pub fn unkeyed(index: usize) -> SampleKey {
        SampleKey {
            index,
            epoch: 0,
            seed: 0,
        }
    }

    /// A seed of the sample's own, from the run's seed, the epoch and the index (SplitMix64
    /// over the three, so that neighbouring samples and epochs draw unrelated numbers).
    pub fn sample_seed(&self) -> u64 {
        let mut g = SplitMix64(self.seed);
        let a = g.next() ^ self.epoch;
        let mut g = SplitMix64(a);
        let b = g.next() ^ self.index as u64;
        SplitMix64(b).next()
    }
}

/// SplitMix64: a small generator with a fixed, documented output sequence, so that orders do
/// not change when a dependency's generator does.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform draw from `[0, 1)` (53 bits).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether something of probability `p` happens (one draw, whatever `p`).
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A uniform draw from `0..n` (Lemire's method with rejection).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        loop {
            let m = u128::from(self.next()) * u128::from(n);
            let low = m as u64;
            if low >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(shuffle: bool) -> BatchOrder {
        BatchOrder {
            len: 10,
            batch_size: 4,
            shuffle,
            seed: 7,
        }
    }

    #[test]
    fn each_sample_epoch_and_seed_draws_its_own_seed() {
        let key = |index, epoch, seed| SampleKey { index, epoch, seed }.sample_seed();
        let mut seen = std::collections::HashSet::new();
        for index in 0..50 {
            for epoch in 0..5 {
                for seed in 0..3 {
                    assert!(
                        seen.insert(key(index, epoch, seed)),
                        "{index} {epoch} {seed}"
                    );
                }
            }
        }
        // A function of the key alone.
        assert_eq!(key(3, 2, 7), key(3, 2, 7));
    }

    #[test]
    fn generator_is_splitmix64() {
        // The reference sequence for seed 1234567.
        let mut r = SplitMix64(1234567);
        assert_eq!(r.next(), 6457827717110365317);
        assert_eq!(r.next(), 3203168211198807973);
    }

    #[test]
    fn batches_cover_the_epoch_with_a_smaller_last_one() {
        let o = order(false);
        let batches: Vec<Vec<usize>> = o
            .batches_from(DataPosition { epoch: 1, batch: 0 })
            .collect();
        assert_eq!(batches, [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
        assert_eq!(o.batches_per_epoch(), 3);
    }

    #[test]
    fn shuffles_are_seeded_per_epoch_and_resume_exactly() {
        let o = order(true);
        let e1 = o.epoch_order(1);
        assert_eq!(e1, o.epoch_order(1), "same seed and epoch, same order");
        assert_ne!(e1, o.epoch_order(2), "a new order each epoch");
        assert_ne!(e1, BatchOrder { seed: 8, ..o }.epoch_order(1));
        let mut sorted = e1.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>(), "a permutation");
        // Taking one batch, stopping and resuming gives the batches of an uninterrupted epoch.
        let all: Vec<Vec<usize>> = o
            .batches_from(DataPosition { epoch: 2, batch: 0 })
            .collect();
        let resumed: Vec<Vec<usize>> = o
            .batches_from(DataPosition { epoch: 2, batch: 1 })
            .collect();
        assert_eq!(all[1..], resumed[..]);
        assert_eq!(
            o.batches_from(DataPosition { epoch: 2, batch: 3 }).count(),
            0
        );
    }

    #[test]
    fn every_position_is_uniformly_likely() {
        // Over many seeds, sample 0 lands in each of 4 places about equally often.
        let mut counts = [0u32; 4];
        for seed in 0..4000 {
            let o = BatchOrder {
                len: 4,
                batch_size: 4,
                shuffle: true,
                seed,
            };
            let place = o.epoch_order(1).iter().position(|&i| i == 0).unwrap();
            counts[place] += 1;
        }
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
    }
}
