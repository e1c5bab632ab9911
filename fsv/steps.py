"""The pure, jitted training step and what it is made of.

`make_train_step` builds one jitted function (state, images, labels, key) ->
(state, metrics) that augments the batch, differentiates the loss of the
parameters that train and updates them (fsv/partition.py decides which).
Models with BatchNorm carry its running statistics as `batch_stats` next to
the parameters; they change only in layers that `model.batch_norm='train'`
lets train (see `fsv.models.BATCH_NORM_MODES`); otherwise training steps pass
them through untouched.
Steps run data parallel on a mesh of devices (fsv/parallel.py): batches are
global and split over the devices, parameters replicated; the random draws
of a step do not depend on how many devices share it.
Inference (evaluation, predictions, features, Grad-CAM) is fsv/inference.py;
the losses are fsv/losses.py.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp
import optax

from fsv import augment as augment_lib
from fsv import losses
from fsv import parallel
from fsv import precision


class TrainState(struct.PyTreeNode):
  step: jnp.ndarray
  params: Any
  opt_state: Any
  # BatchNorm running statistics: not parameters (no gradient, no optimizer
  # state), but part of what a checkpoint must restore. {} without BatchNorm.
  batch_stats: Any = struct.field(default_factory=dict)
  loss_scale: Optional[precision.DynamicLossScale] = None  # float16 runs only
  # The exponential moving average of the parameters (`ema_decay` > 0): what
  # is validated, checkpointed as best and evaluated. None without.
  ema: Any = None
  # Multiplies every update, i.e. the learning rate (reduce-on-plateau
  # lowers it); in the state so that a resumed run continues at the same
  # rate. None when nothing changes it.
  lr_scale: Optional[jnp.ndarray] = None

  def variables(self) -> dict:
    """The variables to evaluate: the moving average's parameters if any."""
    return {'params': self.params if self.ema is None else self.ema,
            'batch_stats': self.batch_stats}


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    aug: augment_lib.Pipeline | augment_lib.AugmentConfig,
                    mesh: Optional[jax.sharding.Mesh] = None,
                    accumulation_steps: int = 1, members: bool = False,
                    objective: losses.Objective = losses.Objective(),
                    ema_decay: float = 0.0) -> Callable:
  """(state, images, labels, key) -> (state, metrics); jitted.

  `aug` (an `augment.Pipeline`, or the Keras transform alone as an
  `AugmentConfig`) turns the batch into inputs and targets; the loss is
  `objective`'s of the targets, or, when nothing mixes, smooths or weighs
  them, the plain cross-entropy of the labels that evaluation computes. A
  state with an `ema` keeps the debiased exponential moving average of the
  updated parameters (`ema_decay` per step; see the step's comment).

  With `members`, the step of several runs at once (fsv/members.py): every
  argument has a leading member axis, the step is vmapped over it, and a
  fifth argument scales each member's updates, which makes members that
  differ in learning rate one computation (every optimizer fsv builds
  applies the learning rate last, so the scale is the ratio of the rates).

  `images` and `labels` are the global batch, split over `mesh` (default:
  all devices) by `parallel.shard_rows`; the state is laid out as
  `parallel.state_shardings` says, and stays so. With `accumulation_steps`
  > 1 the batch is augmented whole, then its gradients are computed
  `accumulation_steps` micro-batches at a time and averaged before one
  update: the same augmentation and, without dropout, the same step as the
  whole batch at once. Dropout masks are drawn per micro-batch from the
  step's key (flax draws one mask per call), so with dropout the
  accumulated step is another draw of the same random step.

  Gradients of frozen parameters are never used (their updates are
  `set_to_zero`), so XLA drops their computation from the compiled step.
  BatchNorm statistics are updated only in the layers the model names in
  `batch_norm_training` (micro-batch after micro-batch when accumulating);
  otherwise they leave the step as they came in.

  A state with a `loss_scale` (float16) differentiates the scaled loss and
  skips the update of a step whose gradients overflowed (fsv/precision.py);
  metrics then include `skipped`. The loss reported is never scaled.
  """
  mesh = parallel.make_mesh() if mesh is None else mesh
  updates_batch_norm = bool(getattr(model, 'batch_norm_training', ()))
  pipeline = augment_lib.as_pipeline(aug)
  plain = objective.is_plain and not pipeline.mixes_labels

  def loss_fn(params, batch_stats, inputs, labels, dropout_key, scale):
    """`labels`: class indices if `plain`, else (n, classes) targets."""
    variables = {'params': params, 'batch_stats': batch_stats}
    rngs = {'dropout': dropout_key}
    if updates_batch_norm:
      logits, updated = model.apply(variables, inputs, train=True, rngs=rngs,
                                    mutable=['batch_stats'])
      batch_stats = updated['batch_stats']
    else:
      logits = model.apply(variables, inputs, train=True, rngs=rngs)
    if plain:
      loss, correct = losses.loss_and_correct(logits, labels)
      loss, accuracy = loss.mean(), correct.mean()
    else:
      loss, accuracy = objective.loss(logits, labels)
    return loss * scale, (loss, accuracy, batch_stats)

  def grad_fn(params, batch_stats, inputs, labels, dropout_key, scale):
    """((loss, accuracy, batch_stats), gradients of the scaled loss)."""
    (_, outputs), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch_stats, inputs, labels, dropout_key, scale)
    return outputs, grads

  def accumulated_grad_fn(params, batch_stats, inputs, labels, dropout_key, scale):
    def micro_batches(x):
      # Micro-batch m is rows m, m + k, m + 2k, ...: every device keeps the
      # rows it holds, and the split is the same on any number of devices.
      x = x.reshape(-1, accumulation_steps, *x.shape[1:]).swapaxes(0, 1)
      return jax.lax.with_sharding_constraint(
          x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
              None, parallel.DATA)))

    def add_micro_batch(carry, micro_batch):
      grads, batch_stats = carry
      inputs, labels, index = micro_batch
      (loss, accuracy, batch_stats), micro_grads = grad_fn(
          params, batch_stats, inputs, labels, jax.random.fold_in(dropout_key, index), scale)
      return (jax.tree_util.tree_map(jnp.add, grads, micro_grads), batch_stats), (loss, accuracy)

    (grads, batch_stats), (losses, accuracies) = jax.lax.scan(
        add_micro_batch, (jax.tree_util.tree_map(jnp.zeros_like, params), batch_stats),
        (micro_batches(inputs), micro_batches(labels), jnp.arange(accumulation_steps)))
    # Micro-batches of equal size: the mean of their means is the batch's mean.
    grads = jax.tree_util.tree_map(lambda g: g / accumulation_steps, grads)
    return (losses.mean(), accuracies.mean(), batch_stats), grads

  def member_step(state: TrainState, images, labels, key, update_scale=None):
    aug_key, dropout_key = jax.random.split(key)
    inputs, targets = augment_lib.apply(pipeline, images, labels, aug_key,
                                        objective.num_classes)
    loss_scale = state.loss_scale
    (loss, accuracy, batch_stats), grads = (
        grad_fn if accumulation_steps == 1 else accumulated_grad_fn)(
            state.params, state.batch_stats, inputs, labels if plain else targets,
            dropout_key, 1.0 if loss_scale is None else loss_scale.scale)
    if loss_scale is not None:
      grads = loss_scale.unscale(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    for scale in (update_scale, state.lr_scale):
      if scale is not None:
        updates = jax.tree_util.tree_map(lambda u, s=scale: u * s, updates)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema
    if ema is not None:
      # Debiased as optax.ema(debias=True) and Adam's moments: the average of
      # the parameters of steps 1..t weighted by decay ** age, rate
      # (1 - d) / (1 - d^t), so that it does not hold the random initial
      # weights for the first 1 / (1 - d) steps, i.e. validate at chance for
      # several epochs. e + r (p - e), not (1 - r) e + r p: a frozen
      # parameter's average stays exactly equal to it.
      rate = (1 - ema_decay) / -jnp.expm1((state.step + 1) * math.log(ema_decay))
      ema = jax.tree_util.tree_map(lambda e, p: e + rate * (p - e), ema, params)
    metrics = {'loss': loss, 'accuracy': accuracy}
    if loss_scale is not None:
      # The updates, not the gradients, are checked: reading the frozen
      # parameters' gradients would make XLA compute them. A non-finite
      # gradient of a trained parameter makes its update non-finite.
      finite = precision.all_finite(updates)
      params, opt_state, batch_stats, ema = precision.select(
          finite, (params, opt_state, batch_stats, ema),
          (state.params, state.opt_state, state.batch_stats, state.ema))
      loss_scale = loss_scale.adjust(finite)
      metrics['skipped'] = ~finite
    state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                          batch_stats=batch_stats, loss_scale=loss_scale, ema=ema)
    return state, metrics

  if members:
    return jax.jit(jax.vmap(member_step), donate_argnums=0)

  def train_step(state: TrainState, images, labels, key):
    state, metrics = member_step(state, images, labels, key)
    state = jax.lax.with_sharding_constraint(state, parallel.state_shardings(mesh, state))
    return state, metrics

  return jax.jit(train_step, donate_argnums=0)
