//! Data-parallel training on several devices (`devices: ["cpu:0", "cpu:1"]`): one replica of
//! the model per device, each on a thread of its own with its share of the compute threads.
//!
//! Each global batch is split into one contiguous shard per replica (the first replicas take
//! one sample more when it does not divide), and each replica reads only its shard, with a
//! read-ahead of its own. Every replica steps with the same gradient: its own, weighted by its
//! share of the batch's samples, summed over the replicas through burn's collective. The sum
//! is made alike on every replica and in replica order (each replica's gradients reach the
//! others by burn's `broadcast`; its `all_reduce` adds in an order that changes from run to
//! run), so the replicas keep identical weights and a run repeats bit for bit. The trainer's
//! own replica (0) writes everything a run writes: summaries, callbacks, checkpoints,
//! evaluations and saved models; the others send it their losses and scalars to be averaged.

use std::sync::mpsc::{Receiver, Sender, channel};

use burn::collective::{self, CollectiveConfig, PeerId};
use burn::tensor::{Tensor, TensorPrimitive};

use super::*;
use crate::Nest;
use crate::data::EpochBatch;
use crate::model::{GradientExchange, StepSettings};
use crate::runtime::DynDataset;

/// Replica `rank`'s shard of a global batch of `len` samples among `count`: the range of the
/// batch's positions it trains on.
pub(super) fn shard(len: usize, rank: usize, count: usize) -> std::ops::Range<usize> {
    let (base, extra) = (len / count, len % count);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// What one replica's step gives the trainer besides its gradients.
#[derive(Debug, Default, Clone)]
pub(super) struct ShardValues {
    /// The samples it trained on.
    pub samples: usize,
    /// Its total loss.
    pub loss: f64,
    /// Its loss keys.
    pub losses: BTreeMap<String, f64>,
    /// Its metrics' and summaries' scalars, on summary steps.
    pub scalars: BTreeMap<String, f64>,
}

impl ShardValues {
    /// The values of the whole batch: each replica's weighted by its samples.
    pub fn combine(shards: &[ShardValues]) -> ShardValues {
        let total: usize = shards.iter().map(|s| s.samples).sum();
        let weight = |s: &ShardValues| s.samples as f64 / total.max(1) as f64;
        let mean = |pick: &dyn Fn(&ShardValues) -> &BTreeMap<String, f64>| {
            let mut out: BTreeMap<String, f64> = BTreeMap::new();
            for s in shards {
                for (k, v) in pick(s) {
                    *out.entry(k.clone()).or_default() += v * weight(s);
                }
            }
            out
        };
        ShardValues {
            samples: total,
            loss: shards.iter().map(|s| s.loss * weight(s)).sum(),
            losses: mean(&|s| &s.losses),
            scalars: mean(&|s| &s.scalars),
        }
    }
}

/// What a replica reports to the trainer.
pub(super) enum Report<B: Backend> {
    /// Its values of a training step.
    Step(ShardValues),
    /// Its shard of an evaluation batch: the data, the evaluation model's outputs and their
    /// values.
    Eval {
        data: Nest<B>,
        outputs: BTreeMap<String, Option<Nest<B>>>,
        values: BTreeMap<String, f64>,
    },
}

type Reports<B> = Result<Report<B>, TrainError>;

/// What the trainer asks of a replica.
enum Order {
    /// Evaluate its shard of each of these global batches of the evaluation data.
    Evaluate(Vec<EpochBatch>),
    /// The global batches of the next epoch (or what is left of it).
    Epoch(Vec<EpochBatch>),
    /// The next step of the epoch.
    Step(StepOrder),
    /// The trainer stopped the epoch early: no more steps of it.
    Stop,
    /// The epoch is over.
    EpochEnd,
    /// The run is over.
    Finish,
}

/// One step's settings, the trainer's for every replica.
#[derive(Debug, Clone, Copy)]
pub(super) struct StepOrder {
    pub step: u64,
    pub lr: f64,
    pub summaries: bool,
    /// Mixed precision's loss scale (1 in f32).
    pub loss_scale: f64,
}

/// One replica's place in the exchange of gradients.
struct Peer {
    rank: usize,
    count: usize,
    /// This step's share of the global batch's samples.
    weight: f64,
}

impl Peer {
    /// Its shard of each global batch.
    fn shards(&self, batches: &[EpochBatch]) -> Vec<EpochBatch> {
        batches
            .iter()
            .map(|(e, b)| (*e, b[shard(b.len(), self.rank, self.count)].to_vec()))
            .collect()
    }

    /// A failure of its step, naming its device.
    fn failed(&self, e: impl std::fmt::Display) -> TrainError {
        TrainError::Step(format!("device {}: {e}", self.rank).into())
    }
}

impl<B: Backend> GradientExchange<B> for Peer {
    fn exchange(&mut self, flat: Tensor<B, 1>) -> Result<Tensor<B, 1>, BoxError> {
        let mine = flat.mul_scalar(self.weight);
        let mut sum: Option<Tensor<B, 1>> = None;
        for root in 0..self.count {
            let given = (root == self.rank).then(|| mine.clone().into_primitive().tensor());
            let got = collective::broadcast::<B>(PeerId(self.rank as u32), given)
                .map_err(|e| format!("exchanging the gradients between the devices: {e:?}"))?;
            let t = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(got));
            sum = Some(match sum {
                Some(s) => s + t,
                None => t,
            });
        }
        Ok(sum.expect("at least one replica"))
    }
}

/// Joins the collective of `count` replicas as `rank` (waits for all of them).
fn register<B: Backend>(rank: usize, count: usize, device: &B::Device) -> Result<(), TrainError> {
    collective::register::<B>(
        PeerId(rank as u32),
        device.clone(),
        CollectiveConfig::default().with_num_devices(count),
    )
    .map_err(|e| TrainError::Step(format!("device {rank} cannot join the others: {e:?}").into()))
}

/// The device of replica `rank` on `B`: the one with the index of `plan.devices[rank]`.
fn device_of<D: burn::tensor::backend::DeviceOps>(first: &D, index: usize) -> D {
    let mut id = first.to_id();
    id.index_id = index as u16;
    D::from_id(id)
}

/// The other replicas, seen from the trainer's (replica 0).
pub(super) struct Replicas<B: Backend> {
    peer: Peer,
    orders: Vec<Sender<Order>>,
    values: Vec<Receiver<Reports<B>>>,
    finished: bool,
    _backend: std::marker::PhantomData<B>,
}

impl<B: Backend> GradientExchange<B> for Replicas<B> {
    fn exchange(&mut self, flat: Tensor<B, 1>) -> Result<Tensor<B, 1>, BoxError> {
        GradientExchange::<B>::exchange(&mut self.peer, flat)
    }
}

impl<B: Backend> Replicas<B> {
    /// Starts one replica per device of `plan` but the first, on threads of `scope`, each
    /// with the weights and optimizer state of `model` (the trainer's, fresh, loaded or
    /// continued).
    pub fn start<'s, 'p: 's, T: AutodiffBackend<InnerBackend = B>>(
        scope: &'s std::thread::Scope<'s, 'p>,
        plan: &'p TrainPlan,
        model: &TrainModel<T>,
        device: &T::Device,
        inner: &B::Device,
    ) -> Result<Self, TrainError> {
        let count = plan.devices.len();
        let weights = to_safetensors(model.tensors(), None)
            .map_err(failed("copying the weights to the other devices"))?;
        let optimizer = model
            .optimizer_states()
            .map_err(failed("copying the optimizer state to the other devices"))?;
        // A collective a failed run left behind is forgotten.
        collective::reset_collective::<B>();
        let mut orders = Vec::new();
        let mut values = Vec::new();
        for rank in 1..count {
            let (order_tx, order_rx) = channel();
            let (value_tx, value_rx) = channel();
            let index = plan.devices[rank].index();
            let (device, inner) = (device_of(device, index), device_of(inner, index));
            let (weights, optimizer) = (weights.clone(), optimizer.clone());
            std::thread::Builder::new()
                .name(format!("nc7-replica-{rank}"))
                .spawn_scoped(scope, move || {
                    let start = || -> Result<Worker<'p, T>, TrainError> {
                        Worker::new(plan, rank, &device, &inner, &weights, optimizer)
                    };
                    let threads =
                        match crate::threads::Threads::new(plan.replica_threads(), "replica") {
                            Ok(t) => t,
                            Err(e) => {
                                let _ = value_tx.send(Err(e.into()));
                                return;
                            }
                        };
                    threads.run(|| match start() {
                        Ok(worker) => worker.run(order_rx, value_tx),
                        Err(e) => {
                            collective::reset_collective::<B>();
                            let _ = value_tx.send(Err(e));
                        }
                    });
                })
                .map_err(failed("starting a thread for a device"))?;
            orders.push(order_tx);
            values.push(value_rx);
        }
        let mut replicas = Replicas {
            peer: Peer {
                rank: 0,
                count,
                weight: 1.0,
            },
            orders,
            values,
            finished: false,
            _backend: std::marker::PhantomData,
        };
        if let Err(e) = register::<B>(0, count, inner) {
            return Err(replicas.cause().unwrap_or(e));
        }
        Ok(replicas)
    }

    /// The first error a replica reported, waiting a moment for it (the trainer's own
    /// exchange fails when another replica failed).
    fn cause(&mut self) -> Option<TrainError> {
        let wait = std::time::Duration::from_secs(5);
        for v in &self.values {
            if let Ok(Err(e)) = v.recv_timeout(wait) {
                return Some(e);
            }
        }
        None
    }

    fn send(&self, order: impl Fn() -> Order) {
        for o in &self.orders {
            let _ = o.send(order());
        }
    }

    /// Starts an epoch of `batches` (global batches); the trainer's own shards of them.
    pub fn epoch(&mut self, batches: &[EpochBatch]) -> Vec<EpochBatch> {
        self.send(|| Order::Epoch(batches.to_vec()));
        self.peer.shards(batches)
    }

    /// The trainer's share of a global batch of `samples`.
    pub fn own_share(&self, samples: usize) -> usize {
        shard(samples, 0, self.peer.count).len()
    }

    /// Orders the next step, whose global batch holds `samples` samples.
    pub fn step(&mut self, order: StepOrder, samples: usize) {
        self.peer.weight = self.own_share(samples) as f64 / samples as f64;
        self.send(|| Order::Step(order));
    }

    /// The values of the whole batch after a step: the trainer's `own` with every other
    /// replica's; a replica's failure is the run's.
    pub fn gather(&mut self, own: ShardValues) -> Result<ShardValues, TrainError> {
        let mut all = vec![own];
        for rank in 1..self.peer.count {
            match self.report(rank)? {
                Report::Step(values) => all.push(values),
                Report::Eval { .. } => return Err(out_of_step()),
            }
        }
        Ok(ShardValues::combine(&all))
    }

    /// Replica `rank`'s next report; its failure is the run's.
    fn report(&mut self, rank: usize) -> Result<Report<B>, TrainError> {
        match self.values[rank - 1].recv() {
            Ok(report) => report,
            Err(_) => Err(TrainError::Step(
                "a device's replica stopped without saying why".into(),
            )),
        }
    }

    /// Starts an evaluation of `batches` (global batches of the evaluation data); the
    /// trainer's own shards of them.
    pub fn evaluate(&mut self, batches: &[EpochBatch]) -> Vec<EpochBatch> {
        self.send(|| Order::Evaluate(batches.to_vec()));
        self.peer.shards(batches)
    }

    /// The other replicas' shards of an evaluation batch of `samples`, in replica order:
    /// data, outputs, values and samples of each that has any.
    #[allow(clippy::type_complexity)]
    pub fn evaluated(
        &mut self,
        samples: usize,
    ) -> Result<
        Vec<(
            Nest<B>,
            BTreeMap<String, Option<Nest<B>>>,
            BTreeMap<String, f64>,
            usize,
        )>,
        TrainError,
    > {
        let mut out = Vec::new();
        for rank in 1..self.peer.count {
            let n = shard(samples, rank, self.peer.count).len();
            if n == 0 {
                continue;
            }
            match self.report(rank)? {
                Report::Eval {
                    data,
                    outputs,
                    values,
                } => out.push((data, outputs, values, n)),
                Report::Step(_) => return Err(out_of_step()),
            }
        }
        Ok(out)
    }

    /// The trainer's step failed; when another replica's failure made it fail, that one.
    pub fn failure(&mut self, e: TrainError) -> TrainError {
        collective::reset_collective::<B>();
        self.finished = true;
        self.cause().unwrap_or(e)
    }

    /// Ends the epoch; `early` when the trainer stopped before its last step.
    pub fn end_epoch(&mut self, early: bool) {
        if early {
            self.send(|| Order::Stop);
        }
        self.send(|| Order::EpochEnd);
    }
}

impl<B: Backend> Drop for Replicas<B> {
    fn drop(&mut self) {
        self.send(|| Order::Finish);
        if self.finished {
            return;
        }
        // The others leave the collective as they finish; a run that ends in an error
        // releases whoever still waits for an exchange.
        if std::thread::panicking() || collective::finish_collective::<B>(PeerId(0)).is_err() {
            collective::reset_collective::<B>();
        }
    }
}

fn out_of_step() -> TrainError {
    TrainError::Step("a device's replica lost step with the trainer".into())
}

/// A replica other than the trainer's, on its own thread.
struct Worker<'p, B: AutodiffBackend> {
    plan: &'p TrainPlan,
    peer: Peer,
    model: TrainModel<B>,
    data: Box<dyn DynDataset<B::InnerBackend>>,
    eval_data: Box<dyn DynDataset<B::InnerBackend>>,
    device: B::Device,
    inner: burn::tensor::Device<B::InnerBackend>,
}

impl<'p, B: AutodiffBackend> Worker<'p, B> {
    fn new(
        plan: &'p TrainPlan,
        rank: usize,
        device: &B::Device,
        inner: &burn::tensor::Device<B::InnerBackend>,
        weights: &[u8],
        optimizer: Vec<(String, Vec<u8>)>,
    ) -> Result<Self, TrainError> {
        let mut model = build_model(plan, device)
            .map_err(failed(&format!("building the model on device {rank}")))?;
        let of = format!("device {rank}'s copy of the");
        load_state(&mut model, weights, optimizer, device, &of)?;
        let data = dataset::<B::InnerBackend>(&plan.train_data, "train", inner)?;
        let eval_data = dataset::<B::InnerBackend>(&plan.eval_data, "eval", inner)?;
        register::<B::InnerBackend>(rank, plan.devices.len(), inner)?;
        Ok(Worker {
            plan,
            peer: Peer {
                rank,
                count: plan.devices.len(),
                weight: 0.0,
            },
            model,
            data,
            eval_data,
            device: device.clone(),
            inner: inner.clone(),
        })
    }

    /// Follows the trainer's orders until the run ends or this replica fails.
    fn run(mut self, orders: Receiver<Order>, values: Sender<Reports<B::InnerBackend>>) {
        let rank = self.peer.rank;
        let panicked = |payload: Box<dyn std::any::Any + Send>| {
            Err(TrainError::Step(
                format!("device {rank}: {}", error::panic_message(payload.as_ref())).into(),
            ))
        };
        loop {
            let result = match orders.recv() {
                Ok(Order::Epoch(batches)) => {
                    let mut next = || orders.recv().unwrap_or(Order::Finish);
                    crate::failure::catch(|| self.epoch(batches, &mut next, &values))
                        .unwrap_or_else(panicked)
                }
                Ok(Order::Evaluate(batches)) => {
                    crate::failure::catch(|| self.evaluate(batches, &values))
                        .unwrap_or_else(panicked)
                }
                Ok(Order::Finish) | Err(_) => {
                    let _ = collective::finish_collective::<B::InnerBackend>(PeerId(rank as u32));
                    return;
                }
                // Orders of an epoch this replica already left (it failed).
                Ok(_) => Ok(()),
            };
            if let Err(e) = result {
                // The others stop waiting for this replica's gradients.
                collective::reset_collective::<B::InnerBackend>();
                let _ = values.send(Err(e));
                return;
            }
        }
    }

    /// One epoch: this replica's shard of each global batch, read ahead and trained when the
    /// trainer orders its step.
    fn epoch(
        &mut self,
        batches: Vec<EpochBatch>,
        next: &mut dyn FnMut() -> Order,
        values: &Sender<Reports<B::InnerBackend>>,
    ) -> Result<(), TrainError> {
        let Worker {
            plan,
            peer,
            model,
            data,
            device,
            inner,
            ..
        } = self;
        let shards = peer.shards(&batches);
        let reading: Vec<EpochBatch> = shards.iter().filter(|s| !s.1.is_empty()).cloned().collect();
        let mut index = 0;
        let clip = plan.trainer.optimization_config.gradient_clip;
        let parts = plan.model.parts.clone();
        let mut step = |batch: Option<Nest<B::InnerBackend>>,
                        order: StepOrder,
                        peer: &mut Peer,
                        index: usize|
         -> Result<(), TrainError> {
            peer.weight = shards[index].1.len() as f64 / batches[index].1.len() as f64;
            // Random operations of this replica's step are seeded like the trainer's, apart
            // from them (burn's CPU backend has one generator for the process: there, models
            // with random operations differ from run to run on several devices).
            B::seed(
                device,
                step_seed(
                    plan.trainer.random_seed ^ ((peer.rank as u64) << 32),
                    order.step,
                ),
            );
            let settings = StepSettings {
                lr: order.lr,
                clip,
                want_norm: order.summaries,
                summaries: order.summaries,
                profiler: None,
                exchange: Some(peer as &mut dyn GradientExchange<B::InnerBackend>),
                half: plan.precision.half().map(|d| (d, order.loss_scale)),
            };
            let shard_values = match batch {
                Some(batch) => {
                    let r = model
                        .train_step(nest_from_inner::<B>(batch), settings)
                        .map_err(|e| peer.failed(e))?;
                    ShardValues {
                        samples: shards[index].1.len(),
                        loss: r.loss,
                        losses: r.losses,
                        scalars: if order.summaries {
                            metric_scalars(&parts, &r.outputs)
                        } else {
                            BTreeMap::new()
                        },
                    }
                }
                None => {
                    model
                        .step_without_samples(settings)
                        .map_err(|e| peer.failed(e))?;
                    ShardValues::default()
                }
            };
            let _ = values.send(Ok(Report::Step(shard_values)));
            Ok(())
        };
        for_each_batch::<B::InnerBackend, TrainError>(
            data.as_ref(),
            reading,
            plan.trainer.random_seed,
            plan.trainer.prefetch,
            inner,
            None,
            |batch| {
                let mut batch = Some(batch);
                loop {
                    match next() {
                        Order::Step(order) => {
                            let empty = shards[index].1.is_empty();
                            step(if empty { None } else { batch.take() }, order, peer, index)?;
                            index += 1;
                            if !empty {
                                return Ok(true);
                            }
                        }
                        Order::Stop => return Ok(false),
                        _ => return Err(out_of_step()),
                    }
                }
            },
        )?;
        // Steps whose shard is empty after this replica's last batch, until the epoch ends.
        loop {
            match next() {
                Order::Step(order) => {
                    step(None, order, peer, index)?;
                    index += 1;
                }
                Order::Stop => {}
                Order::EpochEnd => return Ok(()),
                _ => return Err(out_of_step()),
            }
        }
    }

    /// Evaluates this replica's shard of each global batch and reports each to the trainer.
    fn evaluate(
        &mut self,
        batches: Vec<EpochBatch>,
        reports: &Sender<Reports<B::InnerBackend>>,
    ) -> Result<(), TrainError> {
        let mut valid = self
            .model
            .valid(&self.inner)
            .map_err(failed("building the model to evaluate"))?;
        let mut shards = self.peer.shards(&batches);
        shards.retain(|s| !s.1.is_empty());
        let parts = self.plan.model.parts.clone();
        for_each_batch::<B::InnerBackend, TrainError>(
            self.eval_data.as_ref(),
            shards,
            self.plan.trainer.random_seed,
            self.plan.trainer.prefetch,
            &self.inner,
            None,
            |data| {
                let outputs = valid
                    .run(data.clone(), Mode::Eval)
                    .map_err(|e| TrainError::Step(e.to_string().into()))?
                    .into_map();
                let values = evaluate::values_of(&mut valid, &parts, &outputs);
                let report = Report::Eval {
                    data,
                    outputs,
                    values,
                };
                Ok(reports.send(Ok(report)).is_ok())
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_a_batch_contiguously_the_first_taking_the_rest() {
        for len in 0..20 {
            for count in 1..6 {
                let shards: Vec<_> = (0..count).map(|r| shard(len, r, count)).collect();
                // Contiguous, in order, covering the batch.
                assert_eq!(shards[0].start, 0);
                assert_eq!(shards[count - 1].end, len);
                for w in shards.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                // Sizes differ by one at most, the larger first.
                let sizes: Vec<usize> = shards.iter().map(|s| s.len()).collect();
                assert!(sizes.windows(2).all(|w| w[0] >= w[1] && w[0] - w[1] <= 1));
            }
        }
        assert_eq!(shard(5, 0, 2), 0..3);
        assert_eq!(shard(5, 1, 2), 3..5);
        assert_eq!(shard(1, 1, 2), 1..1, "a batch smaller than the devices");
    }

    #[test]
    fn the_whole_batch_values_weight_each_shard_by_its_samples() {
        let shard = |samples, loss: f64, metric: f64| ShardValues {
            samples,
            loss,
            losses: BTreeMap::from([("ce/loss".to_owned(), loss)]),
            scalars: BTreeMap::from([("acc/accuracy".to_owned(), metric)]),
        };
        let all =
            ShardValues::combine(&[shard(3, 1.0, 1.0), shard(1, 5.0, 0.0), shard(0, 0.0, 0.0)]);
        assert_eq!(all.samples, 4);
        assert_eq!(all.loss, 2.0);
        assert_eq!(all.losses["ce/loss"], 2.0);
        assert_eq!(all.scalars["acc/accuracy"], 0.75);
    }
}
