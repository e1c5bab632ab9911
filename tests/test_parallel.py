"""Data parallelism and gradient accumulation on 8 simulated CPU devices.

The measurements run once, in one subprocess started with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (the rest of the suite
keeps one device): it trains on a 1-device mesh and on the 8-device mesh in
the same process and writes what differs to a JSON file that the tests read.
Run this file as a script to see the numbers:

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/test_parallel.py out.json

On 8 devices the cross-device sums of the gradients and metrics add in
another order than on one, so the float32 results may differ in the last
bits. The random draws do not differ: the augmented batches are the same
up to the rounding of the bilinear warp (XLA vectorises a shard of 2 images
and a batch of 16 differently on some CPUs), and so are the dropout masks
(the convnet runs with dropout 0.5; a different mask would change its
parameters by far more than the tolerance).
"""
import json
import os
import re
import subprocess
import sys

import pytest

DEVICES = 8
# Max abs difference allowed between the 1- and 8-device runs (and between an
# accumulated and a whole-batch step): float32 rounding of sums taken in
# another order, after 2 steps. Measured on the development VM: convnet
# params 1.5e-8, VGG16 params 4.0e-6 (the head's kernel, |w| <= 0.1, whose
# gradients are large on random VGG features), accumulation 3.0e-8; metrics
# (losses, accuracies) at most 1.8e-7.
PARAMS_ATOL = {'convnet': 1e-6, 'vgg16_finetune': 1e-4, 'accumulation': 1e-6}
METRICS_ATOL = 1e-5
# Max abs difference, in 0..255 pixels, between the augmented batches of 1 and
# 8 devices: bit-equal on an Intel Xeon (AVX-512), 7.3e-4 on an AMD EPYC
# (AVX2), where XLA's codegen for a shard of 2 images rounds the warp's
# coordinates differently from the batch of 16. A different random draw (an
# image warped by another angle or shift) moves pixels by tens.
AUGMENT_ATOL = 1e-2


@pytest.fixture(scope='module')
def measured(tmp_path_factory):
  out = tmp_path_factory.mktemp('parallel') / 'measured.json'
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={DEVICES}',
             JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), str(out)], cwd=root,
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-5000:]
  return json.loads(out.read_text())


@pytest.mark.parametrize('run', ['convnet', 'vgg16_finetune'])
def test_an_epoch_on_8_devices_equals_1_device(measured, run):
  result = measured[run]
  assert result['devices'] == [1, DEVICES]
  assert result['params_max_abs_diff'] <= PARAMS_ATOL[run], result
  assert result['metrics_max_abs_diff'] <= METRICS_ATOL, result
  assert result['params_changed']  # the comparison is not between two initial states


def test_frozen_vgg_blocks_stay_frozen_on_8_devices(measured):
  assert measured['vgg16_finetune']['frozen_unchanged']


def test_the_8_device_step_splits_the_batch(measured):
  # Each device takes its 2 of the 16 images, never the whole batch, and the
  # gradients are summed across devices.
  hlo = measured['convnet']['step_hlo']
  assert hlo == {'per_device_batch': True, 'whole_batch': False, 'all_reduce': True}


def test_augmentation_is_independent_of_the_device_count(measured):
  augmented = measured['augment']
  assert augmented['devices'] == [1, DEVICES] and augmented['sharded_over'] == DEVICES
  assert augmented['max_abs_diff'] <= AUGMENT_ATOL, augmented


def test_accumulated_step_equals_the_whole_batch_step(measured):
  for name in ('1 device, 4 micro-batches', '8 devices, 2 micro-batches'):
    result = measured['accumulation'][name]
    assert result['params_max_abs_diff'] <= PARAMS_ATOL['accumulation'], (name, result)
    assert result['metrics_max_abs_diff'] <= METRICS_ATOL, (name, result)


@pytest.mark.parametrize('case,match', [
    ('batch', r'^config\.train\.batch_size=12: the global batch must split evenly over '
              r'8 devices; make it a multiple of 8$'),
    ('micro-batches', r'^config\.train\.batch_size=16: .* over 8 devices in each of '
                      r'train\.accumulation_steps=4 micro-batches; make it a multiple of 32$'),
])
def test_batch_that_does_not_split_over_the_devices_is_an_error(measured, case, match):
  # Raised before the data is loaded: the configs point at a folder that does not exist.
  error = measured['errors'][case]
  assert error['type'] == 'ConfigError'
  assert re.search(match, error['message']), error['message']


def test_eval_batch_rounds_up_to_split_over_the_devices(measured):
  # Evaluation masks padded rows, so rounding up changes no result; the run
  # gets past the batch checks and stops only at the missing data folder.
  error = measured['errors']['eval batch']
  assert error['type'] == 'DataError', error
  assert measured['eval_batch_size'] == {'1': 50, str(DEVICES): 56}


# --- The subprocess ----------------------------------------------------------


def _measure(out_path):
  import jax
  import numpy as np

  import fsv
  from fsv import augment
  from fsv import config as config_lib
  from fsv import parallel
  from fsv import partition
  from fsv import steps
  from fsv.data.decode import Dataset, Split, SplitReport

  assert jax.device_count() == DEVICES
  meshes = {1: parallel.make_mesh(jax.devices()[:1]), DEVICES: parallel.make_mesh()}

  def dataset(size, per_class, validation=4):
    rng = np.random.default_rng(0)

    def split(n):
      labels = np.repeat([0, 1], n).astype(np.int32)
      images = rng.integers(0, 60, (len(labels), size, size, 3)).astype(np.uint8)
      images[labels == 1, :, :, 0] += 180
      return Split(images=images, labels=labels, files=tuple(map(str, range(len(labels)))))

    splits = {'train': split(per_class), 'validation': split(validation),
              'test': split(validation)}
    return Dataset(class_names=('a', 'b'), splits=splits,
                   report={k: SplitReport(len(v.labels), (), 0) for k, v in splits.items()})

  def flat(tree):
    return {jax.tree_util.keystr(p): np.asarray(v)
            for p, v in jax.tree_util.tree_leaves_with_path(tree)}

  def metrics(result):
    values = [v for h in result.history for k, v in sorted(h.items())
              if k not in ('phase', 'epoch', 'seconds', 'start')]
    return np.array(values + [result.results[k] for k in
                              ('val_loss', 'val_accuracy', 'test_loss', 'test_accuracy')])

  def compare(a, b):
    pa, pb = flat(a.params), flat(b.params)
    return {'params_max_abs_diff': max(float(np.abs(pa[k] - pb[k]).max()) for k in pa),
            'metrics_max_abs_diff': float(np.abs(metrics(a) - metrics(b)).max()),
            'bit_identical': all(np.array_equal(pa[k], pb[k]) for k in pa)
                             and np.array_equal(metrics(a), metrics(b)),
            'metrics': [metrics(a).tolist(), metrics(b).tolist()]}

  def on_both(config, data, **kw):
    return {n: fsv.fit(config, dataset=data, mesh=mesh, **kw) for n, mesh in meshes.items()}

  measured = {}
  augmentation = dict(rotation_range=30.0, width_shift_range=0.2, height_shift_range=0.2,
                      shear_range=10.0, zoom_range=0.2, horizontal_flip=True,
                      fill_mode='reflect')

  # The small convnet from scratch, with augmentation and dropout: one epoch
  # of 2 steps of 16 images, evaluated in padded batches of 16 (8 real).
  convnet = fsv.base_config()
  convnet.data.dir = 'unused'
  convnet.data.image_size = (24, 24)
  convnet.model.update(conv_features=(8, 8), dense_units=16, flatten_dropout=0.5)
  convnet.augment.update(augmentation)
  convnet.train.update(epochs=1, batch_size=16, optimizer='adam', learning_rate=3e-3)
  data = dataset(24, per_class=12)
  runs = on_both(convnet, data)
  init = fsv.fit(dict(convnet.to_dict(), train=dict(convnet.train.to_dict(), epochs=0)),
                 dataset=data, mesh=meshes[1])
  measured['convnet'] = dict(
      compare(runs[1], runs[DEVICES]), devices=list(meshes),
      params_changed=not np.array_equal(flat(init.params)["['dense']['kernel']"],
                                        flat(runs[DEVICES].params)["['dense']['kernel']"]))

  # What XLA made of the 8-device step: per-device batches and an all-reduce.
  model = fsv.build_model(convnet.model, 2)
  tx = partition.optimizer(fsv.validate_config(convnet).train, init.params, 2)
  mesh = meshes[DEVICES]
  step = steps.make_train_step(model, tx, augment.AugmentConfig(), mesh)
  state = parallel.put_state(mesh, steps.TrainState(
      step=np.zeros((), np.int32), params=init.params, opt_state=tx.init(init.params)))
  rows = np.arange(16)
  hlo = step.lower(state, parallel.shard_rows(mesh, data.splits['train'].images, rows),
                   parallel.shard_rows(mesh, data.splits['train'].labels, rows),
                   jax.random.PRNGKey(0)).compile().as_text()
  measured['convnet']['step_hlo'] = {
      'per_device_batch': 'u8[2,24,24,3]' in hlo,
      'whole_batch': any(f'{t}[16,24,24,3]' in hlo for t in ('u8', 'f32')),
      'all_reduce': 'all-reduce' in hlo}

  # VGG16 as configs/finetune.py: the head on bottleneck features (extracted
  # on the mesh, the last batch padded), then block5 + head end to end with
  # augmentation; random weights, 32x32 images, one step of 8 per phase.
  vgg = fsv.base_config('vgg16')
  vgg.data.dir = 'unused'
  vgg.data.image_size = (32, 32)
  vgg.model.update(weights='', head_units=16)
  vgg.augment.update(augmentation)
  vgg.bottleneck.update(epochs=1, batch_size=8, learning_rate=1e-3)
  # The last epoch's parameters: the best could be the train phase's start.
  vgg.train.update(epochs=1, batch_size=8, trainable=('block5_.*', 'head/.*'),
                   optimizer='sgd', learning_rate=1e-3, momentum=0.9, evaluate_with='last')
  data = dataset(32, per_class=4, validation=3)
  runs = {}
  for n, mesh in meshes.items():
    vgg.model.cache_dir = os.path.join(os.path.dirname(out_path), f'cache{n}')
    runs[n] = fsv.fit(vgg, dataset=data, mesh=mesh)
  vgg.train.epochs = 0
  vgg.bottleneck.epochs = 0
  init = fsv.fit(vgg, dataset=data, mesh=meshes[1])
  first, last = flat(init.params), flat(runs[DEVICES].params)
  measured['vgg16_finetune'] = dict(
      compare(runs[1], runs[DEVICES]), devices=list(meshes),
      params_changed=not np.array_equal(first["['block5_conv3']['kernel']"],
                                        last["['block5_conv3']['kernel']"]),
      frozen_unchanged=all(np.array_equal(first[k], last[k]) for k in first
                           if k.startswith("['block4")))

  # Augmentation alone: the same key, the same batch, 1 or 8 devices.
  images = np.random.default_rng(1).integers(0, 255, (16, 24, 24, 3), np.uint8)
  config = augment.AugmentConfig(**augmentation, vertical_flip=True)
  transform = jax.jit(augment.random_transform, static_argnums=2)
  out = {n: transform(parallel.shard_rows(mesh, images, np.arange(16)),
                      jax.random.PRNGKey(7), config) for n, mesh in meshes.items()}
  measured['augment'] = {
      'devices': list(meshes),
      'sharded_over': len(out[DEVICES].sharding.device_set),
      'max_abs_diff': float(np.abs(np.asarray(out[1]) - np.asarray(out[DEVICES])).max())}

  # Gradient accumulation: without dropout (flax draws one mask per call, so
  # masks differ per micro-batch), with augmentation, RMSprop, 2 steps of 16.
  convnet.model.flatten_dropout = 0.0
  convnet.train.optimizer = 'rmsprop'
  data = dataset(24, per_class=12)
  whole = fsv.fit(convnet, dataset=data, mesh=meshes[1])
  measured['accumulation'] = {}
  for name, (n, micro_batches) in {'1 device, 4 micro-batches': (1, 4),
                                   '8 devices, 2 micro-batches': (DEVICES, 2)}.items():
    convnet.train.accumulation_steps = micro_batches
    measured['accumulation'][name] = compare(
        whole, fsv.fit(convnet, dataset=data, mesh=meshes[n]))

  # Batches that do not split over 8 devices, refused before the data is read.
  measured['errors'] = {}
  bad = fsv.base_config('vgg16')
  bad.data.dir = 'does-not-exist'
  cases = {'batch': dict(train=dict(batch_size=12)),
           'micro-batches': dict(train=dict(batch_size=16, accumulation_steps=4)),
           'eval batch': dict(bottleneck=dict(epochs=1, batch_size=16, eval_batch_size=50),
                              train=dict(batch_size=16))}
  for case, groups in cases.items():
    config = bad.copy_and_resolve_references()
    for group, values in groups.items():
      config[group].update(values)
    try:
      fsv.fit(config, mesh=meshes[DEVICES])
      measured['errors'][case] = {'type': None, 'message': ''}
    except Exception as e:  # noqa: BLE001  recorded for the test to judge
      measured['errors'][case] = {'type': type(e).__name__, 'message': str(e)}

  measured['eval_batch_size'] = {
      str(n): parallel.eval_batch_size(config_lib.validate(
          dict(data=dict(dir='x'), bottleneck=dict(batch_size=16, eval_batch_size=50))
      ).bottleneck, meshes[n])
      for n in (1, DEVICES)}

  with open(out_path, 'w') as f:
    json.dump(measured, f, indent=1)


if __name__ == '__main__':
  _measure(sys.argv[1])
