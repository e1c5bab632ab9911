"""Optimizers and learning-rate schedules from `config.train`.

Defaults follow Keras so the recipe's settings mean the same here:
RMSprop(rho=0.9, epsilon=1e-7 outside the square root), Adam(epsilon=1e-7).
Schedules count optimizer steps; 'one_cycle' is fastai's `fit_one_cycle`
(warm up for a quarter of the run from lr/25, cosine down to lr/1e5),
'step' multiplies the rate by `decay_factor` every `decay_epochs` epochs.
Every optimizer applies the learning rate last, so scaling the updates
scales the rate (reduce-on-plateau, members of different rates).
"""
from __future__ import annotations

import optax


def schedule(train_config, steps_per_epoch: int) -> optax.Schedule:
  lr = train_config.learning_rate
  total = max(1, train_config.epochs * steps_per_epoch)
  if train_config.schedule == 'cosine':
    return optax.cosine_decay_schedule(lr, total)
  if train_config.schedule == 'warmup_cosine':
    warmup = train_config.warmup_epochs * steps_per_epoch
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total, warmup + 1))
  if train_config.schedule == 'one_cycle':
    return optax.cosine_onecycle_schedule(total, lr, pct_start=0.25, div_factor=25.0,
                                          final_div_factor=1e5)
  if train_config.schedule == 'step':
    return optax.exponential_decay(lr, train_config.decay_epochs * steps_per_epoch,
                                   train_config.decay_factor, staircase=True)
  return optax.constant_schedule(lr)


def optimizer(train_config, lr: optax.ScalarOrSchedule) -> optax.GradientTransformation:
  name = train_config.optimizer
  if name == 'rmsprop':
    return optax.rmsprop(lr, decay=0.9, eps=1e-7, eps_in_sqrt=False)
  if name == 'adam':
    return optax.adam(lr, eps=1e-7)
  if name == 'adamw':
    return optax.adamw(lr, eps=1e-7, weight_decay=train_config.weight_decay)
  if name == 'sgd':
    return optax.sgd(lr, momentum=train_config.momentum or None)
  raise ValueError(f'unknown optimizer {name!r}')


def make(train_config, steps_per_epoch: int) -> optax.GradientTransformation:
  return optimizer(train_config, schedule(train_config, steps_per_epoch))
