"""Augmentation: exact identity and flips, Keras/scipy agreement, determinism."""

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from fsv import augment
from fsv.augment import AugmentConfig
from fsv.config import FILL_MODES

KEY = jax.random.PRNGKey(0)
FULL = AugmentConfig(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2,
                     shear_range=20, zoom_range=0.2, horizontal_flip=True)


@pytest.fixture(scope='module')
def images():
  return np.random.default_rng(0).integers(0, 256, (4, 12, 17, 3), dtype=np.uint8)


@pytest.mark.parametrize('fill_mode', ['nearest', 'reflect', 'wrap', 'constant'])
def test_all_ranges_zero_is_exact_identity(images, fill_mode):
  config = AugmentConfig(fill_mode=fill_mode)
  out = augment.random_transform(images, KEY, config)
  assert out.dtype == jnp.float32 and out.shape == images.shape
  np.testing.assert_array_equal(np.asarray(out), images.astype(np.float32))


@pytest.mark.parametrize('fill_mode', ['nearest', 'reflect', 'wrap', 'constant'])
def test_warp_with_identity_matrix_is_exact(images, fill_mode):
  # The interpolation path itself must not blur when nothing moves.
  a = jnp.broadcast_to(jnp.eye(2), (len(images), 2, 2))
  out = augment._warp(jnp.asarray(images), a, jnp.zeros((len(images), 2)),
                      AugmentConfig(fill_mode=fill_mode))
  np.testing.assert_array_equal(np.asarray(out), images.astype(np.float32))


def test_flips_are_exact_and_random_per_image(images):
  out = np.asarray(augment.random_transform(images, KEY, AugmentConfig(horizontal_flip=True)))
  flipped = [np.array_equal(o, im[:, ::-1]) for o, im in zip(out, images)]
  kept = [np.array_equal(o, im) for o, im in zip(out, images)]
  assert all(f or k for f, k in zip(flipped, kept))
  many = np.repeat(images[:1], 64, axis=0)
  out = np.asarray(augment.random_transform(many, KEY, AugmentConfig(vertical_flip=True)))
  n_flipped = sum(np.array_equal(o, many[0][::-1]) for o in out)
  assert 10 < n_flipped < 54  # about half, not all or none


def test_rescale_applies_to_train_and_eval_alike(images):
  config = AugmentConfig(rescale=1 / 255)
  train = augment.random_transform(images, KEY, config)
  np.testing.assert_allclose(train, images / 255, rtol=1e-6)
  np.testing.assert_array_equal(train, augment.preprocess(images, config.rescale))


def test_same_key_same_batch_different_key_different_batch(images):
  a = augment.random_transform(images, KEY, FULL)
  b = jax.jit(augment.random_transform, static_argnums=2)(images, KEY, FULL)
  c = augment.random_transform(images, jax.random.PRNGKey(1), FULL)
  np.testing.assert_allclose(a, b, atol=1e-3)
  assert not np.allclose(a, c)


def test_transform_of_an_image_does_not_depend_on_the_rest_of_the_batch(images):
  # Needed so that sharding a batch over devices cannot change augmentation.
  whole = augment.random_transform(images, KEY, FULL)
  other = images.copy()
  other[1:] = 0
  np.testing.assert_allclose(augment.random_transform(other, KEY, FULL)[0], whole[0])


@pytest.mark.parametrize('fill_mode,scipy_mode', [
    ('nearest', 'nearest'), ('reflect', 'reflect'), ('wrap', 'grid-wrap'),
    ('constant', 'grid-constant')])
def test_matches_scipy_affine_transform(fill_mode, scipy_mode):
  """Keras's apply_affine_transform is scipy.ndimage.affine_transform(order=1)."""
  rng = np.random.default_rng(1)
  image = rng.uniform(0, 255, (11, 14)).astype(np.float32)
  config = AugmentConfig(rotation_range=30, width_shift_range=0.3, height_shift_range=0.2,
                         shear_range=15, zoom_range=0.3, fill_mode=fill_mode, cval=7.0)
  a, b = augment._affine_matrices(KEY, 1, 11, 14, config)
  ours = np.asarray(augment._warp(jnp.asarray(image)[None, :, :, None], a, b, config))[0, ..., 0]
  # Ours maps (x, y) = (col, row); scipy maps (row, col): swap both axes.
  a_xy, b_xy = np.asarray(a[0], np.float64), np.asarray(b[0], np.float64)
  a_rc = a_xy[::-1, ::-1]
  centre = np.array([(11 - 1) / 2, (14 - 1) / 2])
  offset = centre - a_rc @ centre + b_xy[::-1]
  theirs = ndimage.affine_transform(image, a_rc, offset, order=1, mode=scipy_mode, cval=7.0)
  np.testing.assert_allclose(ours, theirs, atol=1e-3)


ANY_CONFIG = st.builds(
    AugmentConfig, rotation_range=st.floats(0, 360), width_shift_range=st.floats(0, 2),
    height_shift_range=st.floats(0, 2), shear_range=st.floats(0, 85),
    zoom_range=st.floats(0, 0.95), horizontal_flip=st.booleans(),
    vertical_flip=st.booleans(), fill_mode=st.sampled_from(FILL_MODES),
    cval=st.floats(-300, 300), rescale=st.floats(1e-3, 2))
# A few shapes, 1-pixel sides included: each new shape compiles every op again.
SHAPES = st.sampled_from([(2, 1, 7, 3), (2, 9, 1, 1), (1, 1, 1, 3), (3, 8, 11, 3)])


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(config=ANY_CONFIG, shape=SHAPES, seed=st.integers(0, 2**31 - 1))
def test_any_transform_stays_within_the_pixels_and_cval(config, shape, seed):
  images = np.random.default_rng(seed).integers(0, 256, shape, np.uint8)
  out = np.asarray(augment.random_transform(images, jax.random.PRNGKey(seed), config))
  assert out.shape == shape and np.isfinite(out).all()
  low, high = float(images.min()), float(images.max())
  if config.fill_mode == 'constant':
    low, high = min(low, config.cval), max(high, config.cval)
  # Bilinear weights sum to 1 only up to float32 rounding.
  slack = 1e-5 * max(abs(low), abs(high), 1.0) * config.rescale
  assert low * config.rescale - slack <= out.min()
  assert out.max() <= high * config.rescale + slack
