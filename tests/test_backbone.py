"""The backbone contract: what a new backbone must provide, shown by a stub
that trains like the built-in ones, and the one-line error for each piece it
can leave out."""
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import fsv
from fsv import models
from fsv.data.decode import Dataset, Split, SplitReport
from fsv.models import layers

SIZE = 12


class StubHead(nn.Module):
  num_outputs: int

  @nn.compact
  def __call__(self, features, train: bool = False):
    return nn.Dense(self.num_outputs, name='logits')(features.mean(axis=(1, 2)))


class Stub(nn.Module):
  """A conv 'base' with BatchNorm, a Grad-CAM tap and a separable `head`."""
  num_outputs: int
  batch_norm_training: tuple = ()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False, features_only: bool = False):
    x = nn.Conv(4, (3, 3), name='conv1')(images / 255.0)
    x = nn.BatchNorm(use_running_average=not (train and 'bn1' in self.batch_norm_training),
                     name='bn1')(x)
    x = layers.Tap(name='conv1_relu')(nn.relu(x))
    if features_only:
      return x
    return StubHead(self.num_outputs, name='head')(x, train=train)


def _stub(name='stub_net', **changes) -> models.Backbone:
  record = models.Backbone(
      name=name,
      default_config=lambda: ml_collections.ConfigDict(dict(
          name=name, num_classes=0, batch_norm='frozen')),
      validate_config=lambda config, error: None,
      build=lambda config, num_outputs, dtype: Stub(num_outputs, dtype=dtype),
      input_rescale=1.0, preprocessing='x / 255', default_input_size=(SIZE, SIZE),
      min_input_size=lambda config: 3,
      layer_groups=lambda config: {'base': ('conv1/.*', 'bn1/.*'),
                                   'top_block': ('conv1/.*', 'bn1/.*'),
                                   'head': ('head/.*',)},
      gradcam_layer='conv1_relu', has_batch_norm=True, head_of=lambda m: StubHead(m.num_outputs))
  return dataclasses.replace(record, **changes)


@pytest.fixture
def registry(monkeypatch):
  """The registry, restored after the test."""
  monkeypatch.setattr(models, '_REGISTRY', dict(models._REGISTRY))


def _dataset():
  rng = np.random.default_rng(0)

  def split(n):
    labels = np.repeat([0, 1], n).astype(np.int32)
    images = rng.integers(0, 60, (len(labels), SIZE, SIZE, 3)).astype(np.uint8)
    images[labels == 1, :, :, 0] += 190
    return Split(images=images, labels=labels, files=tuple(map(str, range(len(labels)))))

  splits = {'train': split(8), 'validation': split(4), 'test': split(4)}
  return Dataset(class_names=('a', 'b'), splits=splits,
                 report={k: SplitReport(loaded=len(v.labels), skipped=(), converted=0)
                         for k, v in splits.items()})


def test_a_registered_stub_trains_as_a_built_in_backbone_does(registry, tmp_path):
  models.register(_stub())
  assert 'stub_net' in models.names()
  config = fsv.base_config('stub_net')
  assert config.data.image_size == (SIZE, SIZE) and config.augment.rescale == 1.0
  config.data.dir = 'unused-when-a-dataset-is-passed'
  config.bottleneck.update(dict(epochs=2, batch_size=8, optimizer='adam', learning_rate=0.05))
  config.train.update(dict(epochs=1, batch_size=8, optimizer='adam', learning_rate=1e-3,
                           trainable=('@top_block', '@head')))
  config.model.batch_norm = 'train'
  workdir = str(tmp_path / 'w')
  fsv.fit(config, dataset=_dataset(), workdir=workdir)
  run = fsv.load_run(workdir)
  probabilities = run.probabilities(_dataset().splits['test'].images)
  assert probabilities.shape == (8, 2)
  # Both phases ran: the head on cached features, then the unfrozen top block.
  assert [h['phase'] for h in run.history][:1] == ['bottleneck']
  assert 'train' in {h['phase'] for h in run.history}


def test_a_name_is_registered_once(registry):
  with pytest.raises(models.BackboneError, match="'vgg16' is already registered"):
    models.register(dataclasses.replace(_stub('vgg16'), default_config=lambda: (
        ml_collections.ConfigDict(dict(name='vgg16', batch_norm='frozen')))))


class NoFeatures(nn.Module):
  num_outputs: int
  batch_norm_training: tuple = ()

  @nn.compact
  def __call__(self, images, train: bool = False):
    return nn.Dense(self.num_outputs, name='head')(images.mean(axis=(1, 2)))


class NoBatchNormField(nn.Module):
  num_outputs: int

  @nn.compact
  def __call__(self, images, train: bool = False, features_only: bool = False):
    return nn.Dense(self.num_outputs, name='head')(images.mean(axis=(1, 2)))


@pytest.mark.parametrize('changes, message', [
    (dict(name='stub-net'), 'name must be a non-empty identifier'),
    (dict(default_config=lambda: ml_collections.ConfigDict(dict(name='other'))),
     "default_config\\(\\).name is 'other'"),
    (dict(build=None), 'build must be callable'),
    (dict(input_rescale=0.0), 'input_rescale=0.0 must be > 0'),
    (dict(gradcam_layer=''), 'gradcam_layer must name the layers.Tap'),
    (dict(layer_groups=lambda config: {'base': ('conv1/.*',), 'head': ('head/.*',)}),
     r"layer_groups\(config\) lacks \['top_block'\]"),
    (dict(default_input_size=(2, 2)), 'default_input_size=\\(2, 2\\) is below'),
    (dict(build=lambda config, n, dtype: NoFeatures(n)),
     'has head_of, but its module does not take features_only=True'),
    (dict(build=lambda config, n, dtype: NoBatchNormField(n)),
     'has_batch_norm, but its module has no field batch_norm_training'),
    (dict(default_config=lambda: ml_collections.ConfigDict(dict(name='stub_net'))),
     "has_batch_norm, but default_config\\(\\) has no 'batch_norm' key"),
    (dict(weights=lambda config, variables: variables), 'weights must be None or an'),
])
def test_a_missing_piece_is_one_clear_error_at_registration(registry, changes, message):
  with pytest.raises(models.BackboneError, match=f"backbone '[-\\w]+': {message}"):
    models.register(_stub(**changes))
  assert 'stub_net' not in models.names()


@pytest.mark.parametrize('name', models.NAMES)
def test_every_backbone_taps_its_gradcam_layer_on_spatial_activations(name):
  """The contract cannot see inside a module without tracing it: this traces
  each built-in one (shapes only) for the Tap that Grad-CAM looks for."""
  config = models.default_config(name)
  model = models.get(name).build(config, 2, jnp.float32)
  size = max(32, models.min_input_size(config))
  taps = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, layers.Tap):
      taps[context.module.name] = out.shape
    return out

  with nn.intercept_methods(record):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
  gradcam_layer = models.gradcam_layer(name)
  assert gradcam_layer in taps, (gradcam_layer, sorted(taps))
  assert len(taps[gradcam_layer]) == 4  # (n, h, w, channels): a map to weight
