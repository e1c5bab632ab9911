"""The op list: parsing, identity when off, references (Keras, PIL, numpy), mixing, ranges.

Tiny images (12x17) and one jitted `apply` whose cache serves every test
that uses the same spec and shape: each new spec compiles once.
"""
import colorsys
import dataclasses
import importlib.util
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from PIL import ImageEnhance
from PIL import ImageOps
import pytest

import fsv
from fsv import augment
from fsv.augment import colour
from fsv.augment import keras as keras_op
from fsv.augment import policies
from fsv.errors import ConfigError

KEY = jax.random.PRNGKey(0)
APPLY = jax.jit(augment.apply, static_argnums=(0, 4))
RANDOM_TRANSFORM = jax.jit(augment.random_transform, static_argnums=2)
N, CLASSES = 6, 4
LABELS = np.array([0, 1, 2, 3, 2, 1], np.int32)  # partner (reversed) labels differ
KERAS_FULL = dict(rotation_range=30.0, width_shift_range=0.2, height_shift_range=0.2,
                  shear_range=15.0, zoom_range=0.2, horizontal_flip=True,
                  vertical_flip=True, brightness_range=(0.6, 1.4),
                  channel_shift_range=30.0)
IMAGE_OPS = {
    'keras': KERAS_FULL,
    'flip_lr|flip_ud(p=0.7)': {},
    'colour_jitter(brightness=0.4,contrast=0.4,saturation=0.4,hue=0.1)': {},
    'randaugment(num_ops=2,magnitude=9)': {},
    'trivialaugment': {},
    'random_erasing(p=0.5)': {},
}


@pytest.fixture(scope='module')
def images():
  return np.random.default_rng(0).integers(0, 256, (N, 12, 17, 3), dtype=np.uint8)


def _pipeline(ops, **keys):
  return augment.pipeline(dict(ops=ops, **keys))


def _one_hot(labels, classes=CLASSES):
  return np.eye(classes, dtype=np.float32)[labels]


# --- Off is exactly the identity ---------------------------------------------------


@pytest.mark.parametrize('ops', [
    '', 'keras', 'flip_lr(p=0)', 'flip_ud(p=0.0)', 'colour_jitter',
    'colour_jitter(brightness=0,contrast=0,saturation=0,hue=0)', 'randaugment(num_ops=0)',
    'random_erasing(p=0)', 'mixup(alpha=0)', 'cutmix(alpha=0)', 'mixup(alpha=0)|cutmix(alpha=0)',
    'keras|flip_lr(p=0)|colour_jitter|randaugment(num_ops=0)|random_erasing(p=0)|mixup(alpha=0)',
])
@pytest.mark.parametrize('dtype', [np.uint8, np.float32])
def test_ops_that_are_off_are_exactly_the_identity(images, ops, dtype):
  pixels = images.astype(dtype) + (0.25 if dtype == np.float32 else 0)
  inputs, targets = augment.apply(_pipeline(ops), pixels, LABELS, KEY, CLASSES)
  assert inputs.dtype == jnp.float32 and targets.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(inputs), pixels.astype(np.float32))
  np.testing.assert_array_equal(np.asarray(targets), _one_hot(LABELS))


def test_colour_functions_at_factor_one_are_exactly_the_identity(images):
  x = jnp.asarray(images, jnp.float32) * 0.99 + 0.5  # not integers, within 0..255
  ones = jnp.ones(N)
  for fn in (colour.brightness, colour.contrast, colour.saturation, colour.sharpness):
    np.testing.assert_array_equal(np.asarray(fn(x, ones)), np.asarray(x), err_msg=fn.__name__)
  np.testing.assert_array_equal(np.asarray(colour.posterize(x, 8 * ones)), np.asarray(x))
  np.testing.assert_array_equal(np.asarray(colour.solarize(x, 256 * ones)), np.asarray(x))


# --- The keras op --------------------------------------------------------------------


def test_keras_pipeline_is_bit_identical_to_random_transform(images):
  keys = dict(KERAS_FULL, fill_mode='constant', cval=9.0, rescale=0.5)
  config = fsv.base_config()
  config.augment.update(keys)
  config = fsv.validate_config(dict(config.to_dict(), data={'dir': 'x'}))
  pipeline = augment.pipeline(config.augment)
  assert pipeline.rescale == keys['rescale'] and not pipeline.mixes_labels
  inputs, targets = APPLY(pipeline, images, LABELS, KEY, CLASSES)
  expected = RANDOM_TRANSFORM(images, KEY, augment.AugmentConfig.from_config(config.augment))
  np.testing.assert_array_equal(np.asarray(inputs), np.asarray(expected))
  np.testing.assert_array_equal(np.asarray(targets), _one_hot(LABELS))


# --- Colour ops against numpy, colorsys and PIL ------------------------------------------


def _grey(x):
  return (0.2989 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[..., None]


def test_brightness_and_saturation_match_numpy_and_pil(images):
  factors = np.array([0.0, 0.3, 0.8, 1.0, 1.3, 1.9], np.float32)
  x = images.astype(np.float32)
  per = factors[:, None, None, None]
  ours_b = np.asarray(colour.brightness(x, factors))
  ours_s = np.asarray(colour.saturation(x, factors))
  np.testing.assert_allclose(ours_b, np.clip(per * x, 0, 255), atol=1e-3)
  np.testing.assert_allclose(ours_s, np.clip(per * x + (1 - per) * _grey(x), 0, 255), atol=1e-3)
  for i, f in enumerate(factors):
    picture = Image.fromarray(images[i])
    pil_b = np.asarray(ImageEnhance.Brightness(picture).enhance(float(f)), np.float32)
    pil_s = np.asarray(ImageEnhance.Color(picture).enhance(float(f)), np.float32)
    assert np.abs(ours_b[i] - pil_b).max() <= 1  # PIL truncates to 8 bits
    assert np.abs(ours_s[i] - pil_s).max() <= 2  # ... and rounds its grey level


def test_contrast_and_hue_match_references(images):
  factors = np.array([0.0, 0.5, 1.5, 1.0, 0.2, 2.0], np.float32)
  x = images.astype(np.float32)
  mean = _grey(x).mean(axis=(1, 2, 3), keepdims=True)
  per = factors[:, None, None, None]
  np.testing.assert_allclose(np.asarray(colour.contrast(x, factors)),
                             np.clip(per * x + (1 - per) * mean, 0, 255), atol=1e-3)
  shifts = np.array([0.0, 0.1, -0.2, 0.5, -0.5, 0.33], np.float32)
  ours = np.asarray(colour.hue(x, shifts))
  for i, shift in enumerate(shifts):
    for pixel, out in zip(x[i].reshape(-1, 3) / 255, ours[i].reshape(-1, 3) / 255):
      h, s, v = colorsys.rgb_to_hsv(*pixel)
      np.testing.assert_allclose(out, colorsys.hsv_to_rgb((h + shift) % 1.0, s, v), atol=1e-4)


def _fit(out, base, offset):
  """f such that out = f * base + offset, on the pixels that were not clipped."""
  free = (out > 0) & (out < 255) & (np.abs(base) > 1)
  return np.sum((out - offset)[free] * base[free]) / np.sum(base[free] ** 2)


@pytest.mark.parametrize('ops,amount', [('colour_jitter(brightness=0.4)', 0.4),
                                        ('colour_jitter(saturation=0.9)', 0.9)])
def test_colour_jitter_draws_one_factor_per_image_in_range(images, ops, amount):
  x = images.astype(np.float32)
  grey = _grey(x) * np.ones_like(x)
  base, offset = (x, 0 * x) if 'brightness' in ops else (x - grey, grey)
  out = np.asarray(APPLY(_pipeline(ops), images, LABELS, KEY, CLASSES)[0])
  factors = np.array([_fit(out[i], base[i], offset[i]) for i in range(N)], np.float32)
  assert (factors >= 1 - amount - 1e-3).all() and (factors <= 1 + amount + 1e-3).all()
  assert len(np.unique(np.round(factors, 3))) == N  # drawn per image
  f = factors[:, None, None, None]
  np.testing.assert_allclose(out, np.clip(f * base + offset, 0, 255), atol=0.05)


def test_policy_colour_ops_match_pil(images):
  x = images.astype(np.float32)
  bits = np.array([1, 2, 4, 6, 7, 8])
  thresholds = np.array([0, 64, 128, 200, 255, 256], np.float32)
  ours = {'posterize': np.asarray(colour.posterize(x, bits)),
          'solarize': np.asarray(colour.solarize(x, thresholds)),
          'equalize': np.asarray(colour.equalize(x)),
          'autocontrast': np.asarray(colour.autocontrast(x)),
          'sharpness': np.asarray(colour.sharpness(x, np.full(N, 1.8)))}
  flat = images.copy()
  flat[0, ..., 1] = 77   # a flat channel: equalize and autocontrast keep it
  np.testing.assert_array_equal(np.asarray(colour.equalize(flat.astype(np.float32)))[0, ..., 1], 77)
  np.testing.assert_array_equal(np.asarray(colour.autocontrast(flat.astype(np.float32)))[0, ..., 1],
                                77)
  for i in range(N):
    picture = Image.fromarray(images[i])
    theirs = {'posterize': ImageOps.posterize(picture, int(bits[i])),
              'solarize': ImageOps.solarize(picture, float(thresholds[i])),
              'equalize': ImageOps.equalize(picture),
              'autocontrast': ImageOps.autocontrast(picture),
              'sharpness': ImageEnhance.Sharpness(picture).enhance(1.8)}
    for name, image in theirs.items():
      tolerance = {'autocontrast': 1, 'sharpness': 2}.get(name, 0)  # PIL truncates
      assert np.abs(ours[name][i] - np.asarray(image, np.float32)).max() <= tolerance, (name, i)


def test_policy_geometry_and_magnitudes(images):
  x = images.astype(np.float32)
  apply_ops = jax.jit(policies.apply_ops)
  op = lambda name: np.full(N, policies.OPS.index(name))
  m = np.full(N, 3.7, np.float32)
  shifted = np.asarray(apply_ops(x, op('translate_x'), m))
  # torchvision truncates to whole pixels and fills with 0.
  np.testing.assert_array_equal(shifted[:, :, 3:], x[:, :, :-3])
  np.testing.assert_array_equal(shifted[:, :, :3], 0)
  down = np.asarray(apply_ops(x, op('translate_y'), -m))
  np.testing.assert_array_equal(down[:, :-3], x[:, 3:])
  for name in ('identity', 'rotate', 'shear_x', 'shear_y'):
    np.testing.assert_array_equal(np.asarray(apply_ops(x, op(name), 0 * m)), x)
  # The same op table as torchvision (RandAugment, 31 bins; TrivialAugmentWide).
  table = policies.magnitudes('randaugment', 31, 12, 17)
  at = lambda name, b: table[policies.OPS.index(name), b]
  assert at('rotate', 9) == pytest.approx(9.0) and at('shear_x', 30) == pytest.approx(0.3)
  assert at('translate_x', 30) == pytest.approx(150 / 331 * 17)
  assert at('posterize', 9) == 7 and at('posterize', 30) == 4 and at('solarize', 0) == 255
  wide = policies.magnitudes('wide', 31, 12, 17)
  assert wide[policies.OPS.index('rotate'), 30] == pytest.approx(135.0)
  assert wide[policies.OPS.index('posterize'), 30] == 2


# --- random_erasing --------------------------------------------------------------------


def test_random_erasing_erases_one_rectangle_within_scale_and_ratio():
  n, height, width = 16, 40, 50
  images = np.random.default_rng(5).integers(1, 255, (n, height, width, 3), np.uint8)
  scale, ratio = (0.05, 0.2), (0.5, 2.0)
  pipeline = _pipeline(f'random_erasing(p=1,scale={scale},ratio={ratio},value=0)')
  out = np.asarray(APPLY(pipeline, images, np.zeros(n, np.int32), KEY, CLASSES)[0])
  for i in range(n):
    erased = (out[i] == 0).all(-1)
    rows, cols = np.nonzero(erased)
    assert len(rows), i
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    assert erased[top:bottom, left:right].all() and erased.sum() == (bottom - top) * (right - left)
    np.testing.assert_array_equal(out[i][~erased], images[i][~erased])
    h, w = bottom - top, right - left
    # h = round(sqrt(area * r)), w = round(sqrt(area / r)): bounds up to the rounding.
    assert (h - 0.5) * (w - 0.5) <= scale[1] * height * width
    assert (h + 0.5) * (w + 0.5) >= scale[0] * height * width
    assert (h - 0.5) / (w + 0.5) <= ratio[1] and (h + 0.5) / (w - 0.5) >= ratio[0]


# --- mixup and cutmix ------------------------------------------------------------------


def test_mixup_mixes_inputs_and_targets_with_the_reversed_batch(images):
  pipeline = _pipeline('mixup(alpha=0.4)', rescale=0.5)
  assert pipeline.mixes_labels
  lams = []
  for seed in range(3):
    inputs, targets = APPLY(pipeline, images, LABELS, jax.random.PRNGKey(seed), CLASSES)
    lam = float(targets[0, LABELS[0]])
    lams.append(lam)
    one_hot = _one_hot(LABELS)
    np.testing.assert_allclose(targets, lam * one_hot + (1 - lam) * one_hot[::-1], atol=1e-6)
    x = images.astype(np.float32)
    np.testing.assert_allclose(inputs, 0.5 * (lam * x + (1 - lam) * x[::-1]), atol=1e-3)
    assert 0 <= float(inputs.min()) and float(inputs.max()) <= 0.5 * 255
    np.testing.assert_array_equal(augment.dominant_label(targets),
                                  LABELS if lam > 0.5 else LABELS[::-1])
  assert len(set(lams)) == 3 and all(0 < lam < 1 for lam in lams)


def test_cutmix_target_weight_is_the_pasted_area():
  n, height, width = 6, 12, 17
  # Image i is one grey level, its own: every pixel tells whose it is.
  levels = np.arange(n) * 40 + 10
  images = np.broadcast_to(levels[:, None, None, None], (n, height, width, 3)).astype(np.uint8)
  labels = np.arange(n)
  pipeline = _pipeline('cutmix(alpha=1.0)')
  fractions = []
  for seed in range(6):
    inputs, targets = APPLY(pipeline, images, labels, jax.random.PRNGKey(seed), n)
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    pasted = inputs[..., 0] == levels[::-1][:, None, None]
    kept = inputs[..., 0] == levels[:, None, None]
    assert (pasted | kept).all()
    box = pasted[0]
    assert (pasted == box).all()  # one box for the whole batch
    fraction = box.mean()
    fractions.append(fraction)
    np.testing.assert_allclose(targets[np.arange(n), labels], 1 - fraction, atol=1e-6)
    np.testing.assert_allclose(targets[np.arange(n), labels[::-1]], fraction, atol=1e-6)
    if box.any():
      rows, cols = np.nonzero(box)
      assert box[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
  assert len(set(fractions)) > 2


def test_mixup_and_cutmix_together_choose_one_per_batch(images):
  pipeline = _pipeline('mixup(alpha=1.0)|cutmix(alpha=1.0)')
  x = images.astype(np.float32)
  kinds = []
  for seed in range(12):
    inputs, targets = APPLY(pipeline, images, LABELS, jax.random.PRNGKey(seed), CLASSES)
    inputs = np.asarray(inputs)
    whole = (inputs == x) | (inputs == x[::-1])  # every pixel one image's: a box pasted
    kinds.append('cutmix' if whole.all() else 'mixup')
    np.testing.assert_allclose(np.asarray(targets).sum(-1), 1, atol=1e-6)
  assert set(kinds) == {'cutmix', 'mixup'}


# --- What every image op shares -------------------------------------------------------


@pytest.mark.parametrize('ops', list(IMAGE_OPS))
def test_image_ops_are_per_image_deterministic_and_within_pixel_range(images, ops):
  pipeline = _pipeline(ops, **IMAGE_OPS[ops])
  whole, targets = APPLY(pipeline, images, LABELS, KEY, CLASSES)
  whole = np.asarray(whole)
  np.testing.assert_array_equal(np.asarray(targets), _one_hot(LABELS))
  assert whole.min() >= 0 and whole.max() <= 255 and np.isfinite(whole).all()
  assert not np.array_equal(whole, images.astype(np.float32))  # it does something
  # The i-th image depends on the key and i only, not on the other images.
  other = images.copy()
  other[1:] = 255 - other[1:]
  alone = np.asarray(APPLY(pipeline, other, LABELS, KEY, CLASSES)[0])
  np.testing.assert_array_equal(alone[0], whole[0])
  again = np.asarray(APPLY(pipeline, images, LABELS, KEY, CLASSES)[0])
  np.testing.assert_array_equal(again, whole)
  different = np.asarray(APPLY(pipeline, images, LABELS, jax.random.PRNGKey(1), CLASSES)[0])
  assert not np.array_equal(different, whole)


# --- The spec --------------------------------------------------------------------------


@pytest.mark.parametrize('ops,match', [
    ('colour_jiter', r"unknown op 'colour_jiter'; did you mean 'colour_jitter'\?"),
    ('keras|mixupp(alpha=0.2)', r"unknown op 'mixupp'; did you mean 'mixup'\?"),
    ('random_erasing(scales=(0.1,0.2))', r"random_erasing\(scales=\(0.1,0.2\)\): unknown "
                                         r"argument 'scales'; did you mean 'scale'\?"),
    ('colour_jitter(brightnes=0.4)', r"unknown argument 'brightnes'; did you mean 'brightness'"),
    ('mixup(alpha=-1)', r'mixup\(alpha=-1.0\): alpha must be >= 0'),
    ('mixup(alpha=lots)', r"mixup\(alpha='lots'\): alpha must be a number"),
    ('randaugment(num_ops=1.5)', r'randaugment\(num_ops=1.5\): num_ops must be an integer'),
    ('randaugment(magnitude=31)', r'magnitude must be < num_magnitude_bins=31'),
    ('colour_jitter(hue=0.7)', r'colour_jitter\(hue=0.7\): hue must be in \[0, 0.5\]'),
    ('random_erasing(p=1.5)', r'random_erasing\(p=1.5\): p must be in \[0, 1\]'),
    ('random_erasing(scale=(0.4,0.1))', r'scale must be \(low, high\) with low <= high'),
    ('random_erasing(value=noise)', r"value must be a number or one of \('random',\)"),
    ('random_erasing(value=300)', r'value must be in \[0, 255\]'),
    ('keras(rotation_range=3)', r'keras takes no arguments'),
    ('mixup|flip_lr', r"mixup mixes labels, so it must come after every image op, and "
                      r"'flip_lr' follows it"),
    ('keras|keras', r'keras is listed 2 times'),
    ('flip_lr(p=0.5', r"cannot read 'flip_lr\(p=0.5'"),
    ('flip_lr(0.5)', r'expected key=value'),
])
def test_bad_specs_fail_on_one_line_naming_op_and_argument(ops, match):
  with pytest.raises(ConfigError, match=r'^config\.augment\.ops: .*' + match) as error:
    augment.parse(ops)
  assert '\n' not in str(error.value)


def test_spec_parses_to_typed_hashable_records():
  ops = augment.parse(' keras | colour_jitter(brightness=1, hue=0.25) |random_erasing('
                      "scale=(0.1, 0.2), value='random')|mixup | cutmix(alpha=2)")
  names = [op.name for op in ops]
  assert names == ['keras', 'colour_jitter', 'random_erasing', 'mixup', 'cutmix']
  jitter, erasing = ops[1], ops[2]
  assert jitter.brightness == 1.0 and isinstance(jitter.brightness, float)
  assert erasing.scale == (0.1, 0.2) and erasing.value == 'random' and erasing.p == 0.25
  assert augment.parse(augment.parse('random_erasing(value=7,p=1)')[0].spec()) == (
      augment.parse('random_erasing(value=7.0,p=1.0)'))
  first, second = augment.pipeline({'ops': 'flip_lr|mixup'}), augment.pipeline(
      {'ops': 'flip_lr | mixup(alpha=0.2)'})
  assert first == second and hash(first) == hash(second)
  assert first.mixes_labels and not augment.pipeline({'ops': 'keras'}).mixes_labels
  assert first.spec == 'flip_lr|mixup'


def test_keras_keys_without_a_keras_op_are_refused():
  with pytest.raises(ConfigError, match=r"^config\.augment\.rotation_range=10\.0: only the "
                     r"keras op reads it, and config\.augment\.ops='randaugment' has none"):
    augment.pipeline({'ops': 'randaugment', 'rotation_range': 10.0})
  assert augment.pipeline({'ops': 'randaugment', 'rescale': 0.5}).rescale == 0.5


def test_validate_parses_the_ops():
  config = fsv.validate_config({'data': {'dir': 'x'},
                                'augment': {'ops': 'keras|cutmix', 'brightness_range': (0.5, 1.5)}})
  assert config.augment.ops == 'keras|cutmix'
  with pytest.raises(ConfigError, match="did you mean 'cutmix'"):
    fsv.validate_config({'data': {'dir': 'x'}, 'augment': {'ops': 'keras|cut_mix'}})


# --- Keras's own brightness and channel shift (last: its subprocess starts first) ---------

KERAS_SCRIPT = textwrap.dedent('''
    import sys
    import numpy as np
    from keras.src.legacy.preprocessing import image
    data = np.load(sys.argv[1])
    out = {}
    for name in ('rgb', 'grey', 'outside'):
      x, factors, shifts = data[name], data[name + '_factor'], data[name + '_shift']
      out[name + '_brightness'] = np.stack([
          image.apply_brightness_shift(xi, float(f), False) for xi, f in zip(x, factors)])
      out[name + '_channel_shift'] = np.stack([
          image.apply_channel_shift(xi, s, channel_axis=2) for xi, s in zip(x, shifts)])
    generator = image.ImageDataGenerator(channel_shift_range=30.0, brightness_range=(0.6, 1.4))
    out['transform'] = np.stack([
        generator.apply_transform(xi, {'channel_shift_intensity': s, 'brightness': float(f)})
        for xi, s, f in zip(data['rgb'], data['rgb_shift'], data['rgb_factor'])])
    np.savez(sys.argv[2], **out)
''')
KERAS_CONFIG = augment.AugmentConfig(channel_shift_range=30.0, brightness_range=(0.6, 1.4))


@pytest.fixture(scope='module', autouse=True)
def keras_reference(tmp_path_factory):
  """Keras's results, from a subprocess (Keras picks its backend at import),
  started with the module's first test so that it runs while the others compile."""
  if importlib.util.find_spec('keras') is None:
    yield None
    return
  rng = np.random.default_rng(3)
  pixels = rng.integers(0, 256, (4, 12, 17, 3)).astype(np.float32)
  batches = {
      'rgb': np.concatenate([pixels, rng.uniform(0, 255, (2, 12, 17, 3)).astype(np.float32)]),
      'grey': pixels[:3, ..., :1],
      # Pixels outside 0..255 (a cval out of range): Keras stretches and maps back.
      'outside': rng.uniform(-40, 300, (2, 12, 17, 3)).astype(np.float32)}
  data = {}
  for name, x in batches.items():
    shifts, factors = keras_op._colour_draws(KEY, len(x), KERAS_CONFIG)
    data.update({name: x, name + '_factor': np.asarray(factors),
                 name + '_shift': np.asarray(shifts)})
  folder = tmp_path_factory.mktemp('keras')
  np.savez(folder / 'in.npz', **data)
  process = subprocess.Popen(
      [sys.executable, '-c', KERAS_SCRIPT, folder / 'in.npz', folder / 'out.npz'],
      env=dict(os.environ, KERAS_BACKEND='jax', JAX_PLATFORMS='cpu'),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  yield process, folder / 'out.npz', data
  if process.poll() is None:
    process.kill()
  process.communicate()


def test_brightness_and_channel_shift_match_keras_legacy_functions(keras_reference):
  if keras_reference is None:
    pytest.skip('needs keras')
  process, out_path, data = keras_reference
  log, _ = process.communicate(timeout=300)
  assert process.returncode == 0, log
  theirs = np.load(out_path)
  ours = {}
  for name in ('rgb', 'grey', 'outside'):
    x, factors, shifts = data[name], data[name + '_factor'], data[name + '_shift']
    # Jitted, as in the train step.
    ours[name + '_brightness'] = jax.jit(augment.apply_brightness_shift)(x, factors)
    ours[name + '_channel_shift'] = jax.jit(augment.apply_channel_shift)(x, shifts)
  # The whole op in Keras's order: channel shift, (flips), brightness, with
  # the draws `_colour_draws` made for the rgb batch.
  ours['transform'] = RANDOM_TRANSFORM(data['rgb'], KEY, KERAS_CONFIG)
  assert sorted(theirs) == sorted(ours)
  for name, value in ours.items():
    if name == 'outside_brightness':
      # Keras's exact steps, but jitted XLA fuses the final rescale
      # (pixel / 255 * range + min) into fused multiply-adds: last-bit differences.
      np.testing.assert_allclose(np.asarray(value), theirs[name], rtol=0, atol=1e-3)
    else:
      np.testing.assert_array_equal(np.asarray(value), theirs[name], err_msg=name)
  drawn, shifts = data['rgb_factor'], data['rgb_shift']
  assert 0.6 <= drawn.min() and drawn.max() <= 1.4 and drawn.std() > 0.01
  assert np.abs(shifts).max() <= 30 and shifts.std() > 1
  # Turning the two on leaves the other draws alone: a factor of exactly 1
  # (Keras still truncates to 8 bits) moves no pixel of a rotated, flipped batch.
  moved = dataclasses.replace(KERAS_CONFIG, rotation_range=30.0, horizontal_flip=True,
                              channel_shift_range=0.0, brightness_range=())
  same = dataclasses.replace(moved, brightness_range=(1.0, 1.0))
  np.testing.assert_array_equal(RANDOM_TRANSFORM(data['rgb'], KEY, same),
                                np.floor(RANDOM_TRANSFORM(data['rgb'], KEY, moved)))
