r"""Training steps per second of members alone and vmapped together.

  python -m bench.members [--members=16] [--pooling=,avg] [--seconds=10]

The head phase of `configs/bottleneck.py` (VGG16 at 150x150: 4x4x512
features, the blog's Dense 256 head, RMSprop, batch 16) on random features,
one member with the ordinary step against `--members` with the vmapped
step (`steps.make_train_step(members=True)`), without checkpoints or
validation: what vectorising buys the training itself. `--pooling=avg`
measures the same head on globally pooled features (512 values), whose
parameters are 16 times fewer. Prints member-steps per second and the
ratio; the step's parameter traffic explains it (BENCHMARKS.md).
"""
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from fsv import config_files
from fsv import config as config_lib
from fsv import models
from fsv import parallel
from fsv import partition
from fsv import steps as steps_lib
from fsv.augment import AugmentConfig

_MEMBERS = flags.DEFINE_integer('members', 16, 'Members trained together.')
_POOLING = flags.DEFINE_list('pooling', ['', 'avg'], "The head's pooling: '' (Flatten) or avg.")
_SECONDS = flags.DEFINE_float('seconds', 10.0, 'Time each variant at least this long.')


def _steps_per_second(step, state, make_args, count: int) -> float:
  state, metrics = step(state, *make_args(0))  # compile
  jax.block_until_ready(metrics)
  done, started = 0, time.perf_counter()
  while time.perf_counter() - started < _SECONDS.value:
    state, metrics = step(state, *make_args(done))
    float(np.asarray(metrics['loss']).ravel()[0])  # the loop reads every step's loss
    done += 1
  return done * count / (time.perf_counter() - started)


def main(argv):
  del argv
  mesh = parallel.make_mesh(jax.devices()[:1])
  for pooling in _POOLING.value:
    config = config_files.load('bottleneck')
    config.model.pooling = pooling
    config = config_lib.validate(config)
    tc = config.bottleneck
    model = models.build(config.model, 2, config.dtype)
    features = (1, 1, 512) if pooling else (4, 4, 512)
    head = models.head_of(config.model, model)
    params = head.init(jax.random.PRNGKey(0), jnp.zeros((1, *features)))['params']
    tx = partition.optimizer(config_lib.with_trainable(tc, ('.*',)), params, 125)
    # A function: the step donates (deletes) the state it is given.
    def state():
      fresh = jax.tree_util.tree_map(jnp.copy, params)
      return steps_lib.TrainState(step=jnp.zeros((), jnp.int32), params=fresh,
                                  opt_state=tx.init(fresh))
    rng = np.random.default_rng(0)
    pool = rng.random((64, tc.batch_size, *features), np.float32)
    labels = rng.integers(0, 2, (64, tc.batch_size)).astype(np.int32)
    key = jax.random.PRNGKey(1)
    alone = _steps_per_second(
        steps_lib.make_train_step(head, tx, AugmentConfig(), mesh), state(),
        lambda i: (pool[i % 64], labels[i % 64], jax.random.fold_in(key, i)), 1)
    count = _MEMBERS.value
    stacked = jax.tree_util.tree_map(lambda x: jnp.stack([x] * count), state())
    rows = [np.arange(i, i + count) % 64 for i in range(64)]
    together = _steps_per_second(
        steps_lib.make_train_step(head, tx, AugmentConfig(), mesh, members=True), stacked,
        lambda i: (pool[rows[i % 64]], labels[rows[i % 64]],
                   jax.random.split(jax.random.fold_in(key, i), count),
                   jnp.ones((count,), jnp.float32)), count)
    size = sum(x.size for x in jax.tree_util.tree_leaves(params))
    print(f'head on {"x".join(map(str, features))} features ({size:,} parameters): '
          f'alone {alone:.0f} steps/s, {count} together {together:.0f} member-steps/s, '
          f'{together / alone:.2f}x')


if __name__ == '__main__':
  app.run(main)
