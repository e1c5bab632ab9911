"""fsv.data: folder and TFDS sources, decoding, the on-disk cache."""
import contextlib
import dataclasses
import io
import os
import pathlib
from unittest import mock

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from fsv import config as config_lib
from fsv import data
from fsv.data import cache
from fsv.data import decode
from fsv.data import tfds_source

SIZE = (12, 16)  # (height, width) the 20x24 test images are resized to


@pytest.fixture
def config(tmp_path):
  data_config = config_lib.base().data
  data_config.source = 'folder'
  data_config.image_size = SIZE
  data_config.cache_dir = str(tmp_path / 'cache')
  return data_config


def assert_colours_match_labels(split, colours):
  expected = np.broadcast_to(colours[split.labels][:, None, None], split.images.shape)
  np.testing.assert_array_equal(split.images, expected)


def test_binary_folder(make_image_folder, config, image_folder_colours):
  config.dir = str(make_image_folder({
      'train': {'dogs': 3, 'cats': 2},
      'validation': {'dogs': 1, 'cats': 1},
      'test': {'dogs': 1, 'cats': 2}}))
  dataset = data.load(config)

  assert dataset.class_names == ('cats', 'dogs') and dataset.num_classes == 2
  assert set(dataset.splits) == set(dataset.report) == {'train', 'validation', 'test'}
  train = dataset.splits['train']
  assert train.images.shape == (5, *SIZE, 3) and train.images.dtype == np.uint8
  assert train.labels.dtype == np.int32
  assert train.labels.tolist() == [0, 0, 1, 1, 1]
  assert train.files == ('train/cats/cats.0.png', 'train/cats/cats.1.png',
                         'train/dogs/dogs.0.png', 'train/dogs/dogs.1.png',
                         'train/dogs/dogs.2.png')
  assert dataset.splits['test'].labels.tolist() == [0, 0, 1]
  for split in dataset.splits.values():
    assert_colours_match_labels(split, image_folder_colours)
  assert dataset.report['train'] == data.SplitReport(
      loaded=5, skipped=(), converted=0, ignored=(), from_cache=False)


def test_three_classes_and_optional_splits_absent(make_image_folder, config,
                                                  image_folder_colours):
  config.dir = str(make_image_folder({'train': {'horse': 2, 'ant': 1, 'cow': 2}}))
  dataset = data.load(config)
  assert dataset.class_names == ('ant', 'cow', 'horse')
  assert list(dataset.splits) == ['train']
  assert dataset.splits['train'].labels.tolist() == [0, 1, 1, 2, 2]
  assert_colours_match_labels(dataset.splits['train'], image_folder_colours)


def _save(image: Image.Image, path: pathlib.Path, **kwargs) -> str:
  image.save(path, **kwargs)
  return str(path)


def _palette_with_transparency() -> Image.Image:
  image = Image.new('P', (24, 20), 0)
  image.putpalette([0, 128, 255] + [9, 9, 9] * 255)
  image.info['transparency'] = 0
  return image


def _sixteen_bit() -> Image.Image:
  values = np.full((20, 24), 65535, np.uint16)
  values[10:] = 32896
  return Image.fromarray(values)


@pytest.mark.parametrize('name,make,top,bottom', [
    ('l.png', lambda: Image.new('L', (24, 20), 77), (77,) * 3, (77,) * 3),
    ('la.png', lambda: Image.new('LA', (24, 20), (77, 0)), (77,) * 3, (77,) * 3),
    ('rgba.png', lambda: Image.new('RGBA', (24, 20), (10, 20, 30, 0)),
     (10, 20, 30), (10, 20, 30)),
    ('p.png', lambda: Image.new('RGB', (24, 20), (255, 0, 0)).convert('P'),
     (255, 0, 0), (255, 0, 0)),
    ('p_transparent.png', _palette_with_transparency, (0, 128, 255), (0, 128, 255)),
    ('cmyk.tif', lambda: Image.new('CMYK', (24, 20), (0, 255, 255, 0)),
     (255, 0, 0), (255, 0, 0)),
    ('bilevel.png', lambda: Image.new('1', (24, 20), 1), (255,) * 3, (255,) * 3),
    # 16 bits are scaled to 8, not clipped: 65535 -> 255 and 32896 -> 128.
    ('sixteen.png', _sixteen_bit, (255,) * 3, (128,) * 3),
    ('int32.tif', lambda: Image.fromarray(np.full((20, 24), 32896, np.int32)),
     (128,) * 3, (128,) * 3),
])
def test_decode_converts_to_rgb(tmp_path, name, make, top, bottom):
  image, converted = decode.decode_file(_save(make(), tmp_path / name), SIZE,
                                        'nearest')
  assert image.shape == (*SIZE, 3) and image.dtype == np.uint8
  assert converted
  assert tuple(image[0, 0]) == top and tuple(image[-1, -1]) == bottom


def test_sixteen_bit_png_is_read_as_sixteen_bit(tmp_path):
  # Guards the test above: the file must reach the decoder as 16-bit data.
  with Image.open(_save(_sixteen_bit(), tmp_path / 'x.png')) as image:
    assert image.mode.startswith('I')


def test_decode_rgb_is_not_counted_as_converted(tmp_path):
  path = _save(Image.new('RGB', (24, 20), (1, 2, 3)), tmp_path / 'x.png')
  image, converted = decode.decode_file(path, SIZE, 'bicubic')
  assert not converted and tuple(image[5, 5]) == (1, 2, 3)


def test_decode_applies_exif_orientation(tmp_path):
  upright = Image.new('RGB', (20, 24), (255, 0, 0))  # 24 high, 20 wide
  upright.paste((0, 0, 255), (0, 12, 20, 24))        # bottom half blue
  exif = Image.Exif()
  exif[0x0112] = 6  # shown rotated 90 degrees clockwise
  stored = upright.transpose(Image.Transpose.ROTATE_90)  # red left, blue right
  path = _save(stored, tmp_path / 'rotated.jpg', exif=exif, quality=95)

  image, _ = decode.decode_file(path, (24, 20), 'bilinear')
  np.testing.assert_allclose(image[3, 10], (255, 0, 0), atol=40)
  np.testing.assert_allclose(image[20, 10], (0, 0, 255), atol=40)


def _jpeg_bytes() -> bytes:
  noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(noise).save(buffer, 'JPEG')
  return buffer.getvalue()


BAD_FILES = {
    'zero.png': b'',
    'corrupt.jpg': b'\xff\xd8\xff\xe0' + bytes(range(256)) * 4,
    'truncated.jpg': _jpeg_bytes()[:1500],
    'text.png': b'just some text, not an image\n',
}


@pytest.mark.parametrize('name', sorted(BAD_FILES))
def test_decode_bad_file_raises_bad_image(tmp_path, name):
  path = tmp_path / name
  path.write_bytes(BAD_FILES[name])
  with pytest.raises(data.BadImage, match=name) as error:
    decode.decode_file(str(path), SIZE, 'bilinear')
  assert error.value.file == str(path) and error.value.reason


# Pillow modes each format of IMAGE_EXTENSIONS writes (and reads back).
FORMAT_MODES = {
    'PNG': ('1', 'L', 'LA', 'P', 'RGB', 'RGBA', 'I;16'),
    'JPEG': ('L', 'RGB', 'CMYK'),
    'GIF': ('L', 'P'),
    'BMP': ('1', 'L', 'P', 'RGB'),
    'TIFF': ('1', 'L', 'LA', 'P', 'RGB', 'RGBA', 'CMYK', 'YCbCr', 'I;16', 'I', 'F'),
    'WEBP': ('RGB', 'RGBA'),
}


@st.composite
def _encoded_images(draw) -> bytes:
  """A random image of any size from 1x1 (1xN included), mode and format."""
  image_format = draw(st.sampled_from(sorted(FORMAT_MODES)))
  mode = draw(st.sampled_from(FORMAT_MODES[image_format]))
  height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  if mode in ('I;16', 'I', 'F'):
    dtype = {'I;16': np.uint16, 'I': np.int32, 'F': np.float32}[mode]
    image = Image.fromarray(rng.integers(-70000, 70000, (height, width)).astype(dtype))
  else:
    rgba = rng.integers(0, 256, (height, width, 4), np.uint8)
    image = Image.fromarray(rgba, 'RGBA').convert(mode)
  buffer = io.BytesIO()
  image.save(buffer, image_format)
  return buffer.getvalue()


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(encoded=_encoded_images(), cut=st.none() | st.floats(0, 1),
       image_size=st.tuples(st.integers(1, 40), st.integers(1, 40)),
       interpolation=st.sampled_from(sorted(decode.INTERPOLATIONS)))
def test_decode_gives_the_size_asked_or_bad_image(tmp_path_factory, encoded, cut,
                                                  image_size, interpolation):
  # A whole image always decodes; one cut short decodes or is a BadImage.
  path = tmp_path_factory.mktemp('fuzz') / 'image'
  path.write_bytes(encoded if cut is None else encoded[:int(cut * len(encoded))])
  try:
    image, _ = decode.decode_file(str(path), image_size, interpolation)
  except data.BadImage:
    assert cut is not None
    return
  assert image.shape == (*image_size, 3) and image.dtype == np.uint8


def _add_bad_files(folder: pathlib.Path):
  for name, content in BAD_FILES.items():
    (folder / name).write_bytes(content)


def test_bad_files_skipped_and_counted(make_image_folder, config, image_folder_colours):
  root = make_image_folder({'train': {'cats': 2, 'dogs': 2}})
  _add_bad_files(root / 'train' / 'cats')
  config.dir = str(root)
  dataset = data.load(config)

  train, report = dataset.splits['train'], dataset.report['train']
  assert report.loaded == 4 and len(train.files) == 4
  assert sorted(file for file, _ in report.skipped) == sorted(
      f'train/cats/{name}' for name in BAD_FILES)
  assert dict(report.skipped)['train/cats/zero.png'] == 'empty file'
  assert train.labels.tolist() == [0, 0, 1, 1]
  assert_colours_match_labels(train, image_folder_colours)


def test_on_bad_image_error_names_the_file(make_image_folder, config):
  root = make_image_folder({'train': {'cats': 2, 'dogs': 2}})
  (root / 'train' / 'dogs' / 'corrupt.jpg').write_bytes(BAD_FILES['corrupt.jpg'])
  config.dir, config.on_bad_image = str(root), 'error'
  with pytest.raises(data.BadImage, match=r'dogs/corrupt\.jpg'):
    data.load(config)


def test_class_with_only_bad_images_is_an_error(make_image_folder, config):
  root = make_image_folder({'train': {'cats': 2}})
  (root / 'train' / 'dogs').mkdir()
  _add_bad_files(root / 'train' / 'dogs')
  config.dir = str(root)
  with pytest.raises(data.DataError, match=r"every image of class\(es\) \['dogs'\]"):
    data.load(config)


@pytest.mark.filterwarnings('ignore::PIL.Image.DecompressionBombWarning')
@pytest.mark.parametrize('max_pixels', [300, 100])  # 480 pixels: Pillow warns, errs
def test_decompression_bomb_is_a_bad_image(tmp_path, monkeypatch, max_pixels):
  path = _save(Image.new('RGB', (24, 20)), tmp_path / 'bomb.png')
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', max_pixels)
  with pytest.raises(data.BadImage, match='bomb.png'):
    decode.decode_file(path, SIZE, 'bilinear')


FUZZ_SIZE = (16, 16)  # (height, width) of the good images and of the decoded ones
GREYS = (60, 190)     # what stands for a class's colour in a colourless image


def _write_every_kind(folder: pathlib.Path, colour: tuple, grey: int) -> dict:
  """Writes one file of every kind into a class folder.

  Returns {good file (relative to `folder`): its decoded (top half, bottom
  half) colour}; good files carry the class's `colour`, or its `grey`.
  """
  height, width = FUZZ_SIZE
  solid = Image.new('RGB', (width, height), colour)
  upright = solid.copy()
  upright.paste((255, 255, 255), (0, height // 2, width, height))
  exif = Image.Exif()
  exif[0x0112] = 6  # shown rotated 90 degrees clockwise
  random_bytes = np.random.default_rng(grey).integers(0, 256, 600, np.uint8).tobytes()
  writers = {
      # good: loaded
      'rgb.png': lambda p: solid.save(p),
      'png_named.jpg': lambda p: solid.save(p, 'PNG'),
      'grey.png': lambda p: Image.new('L', (width, height), grey).save(p),
      'rgba.png': lambda p: Image.new('RGBA', (width, height), (*colour, 90)).save(p),
      'palette.gif': lambda p: solid.convert('P', palette=Image.Palette.ADAPTIVE).save(p),
      'cmyk.jpg': lambda p: solid.convert('CMYK').save(p, quality=95),
      'sixteen.png': lambda p: Image.fromarray(
          np.full((height, width), grey * 257, np.uint16)).save(p),
      'exif.jpg': lambda p: upright.transpose(Image.Transpose.ROTATE_90).save(
          p, exif=exif, quality=95, subsampling=0),
      'one_pixel.png': lambda p: Image.new('RGB', (1, 1), colour).save(p),
      'nested/deeper/inner.bmp': lambda p: solid.save(p),
      'chat_été_猫.jpg': lambda p: solid.save(p, quality=95),
      'link.png': lambda p: p.symlink_to('rgb.png'),
      # bad: skipped and reported (with BAD_FILES)
      'random.jpg': lambda p: p.write_bytes(random_bytes),
      'bomb.png': lambda p: Image.new('RGB', (64, 64), colour).save(p),
      'dangling.jpg': lambda p: p.symlink_to('missing.jpg'),
      # ignored and reported
      '.DS_Store': lambda p: p.write_bytes(b'\0\0\0\1Bud1'),
      '._rgb.jpg': lambda p: p.write_bytes(b'\0\5\26\7'),
      'notes.txt': lambda p: p.write_text('cats, mostly\n'),
      'alias_dir': lambda p: p.symlink_to('nested', target_is_directory=True),
  }
  for name, write in writers.items():
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    write(folder / name)
  _add_bad_files(folder)
  good = ['rgb.png', 'png_named.jpg', 'rgba.png', 'palette.gif', 'cmyk.jpg',
          'one_pixel.png', 'nested/deeper/inner.bmp', 'chat_été_猫.jpg', 'link.png']
  return {**{name: (colour, colour) for name in good},
          'grey.png': ((grey,) * 3,) * 2, 'sixteen.png': ((grey,) * 3,) * 2,
          'exif.jpg': (colour, (255, 255, 255))}


def test_every_kind_of_bad_file_beside_good_ones(tmp_path, config, monkeypatch,
                                                image_folder_colours):
  class_names = ('cats', 'dogs')
  expected = {}
  for split in ('train', 'validation'):
    for label, class_name in enumerate(class_names):
      written = _write_every_kind(tmp_path / 'data' / split / class_name,
                                  tuple(image_folder_colours[label].tolist()),
                                  GREYS[label])
      expected.update({f'{split}/{class_name}/{f}': v for f, v in written.items()})
  # bomb.png has 4,096 pixels: over twice the limit, which Pillow refuses outright.
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)
  config.dir, config.image_size = str(tmp_path / 'data'), FUZZ_SIZE
  dataset = data.load(config)
  again = data.load(config)  # from the cache

  assert dataset.class_names == class_names
  rows = FUZZ_SIZE[0] // 3  # away from the middle, where JPEG blurs the edge
  for split in ('train', 'validation'):
    images, labels, files = (dataset.splits[split].images, dataset.splits[split].labels,
                             dataset.splits[split].files)
    assert files == tuple(sorted(f for f in expected if f.startswith(f'{split}/')))
    for image, label, file in zip(images, labels, files):
      assert class_names[label] == file.split('/')[1], file
      top, bottom = expected[file]
      np.testing.assert_allclose(image[:rows], np.broadcast_to(top, image[:rows].shape),
                                 atol=12, err_msg=file)
      np.testing.assert_allclose(image[-rows:],
                                 np.broadcast_to(bottom, image[-rows:].shape),
                                 atol=12, err_msg=file)

    report = dataset.report[split]
    assert report.loaded == len(files) == 2 * 12
    assert report.converted == 2 * 5  # grey, RGBA, palette, CMYK and 16-bit images
    reasons = dict(report.skipped)
    assert sorted(reasons) == sorted(
        f'{split}/{c}/{name}' for c in class_names
        for name in ('random.jpg', 'bomb.png', 'dangling.jpg', *BAD_FILES))
    for class_name in class_names:
      reason = lambda name: reasons[f'{split}/{class_name}/{name}']
      assert reason('zero.png') == 'empty file'
      assert reason('dangling.jpg') == 'dangling symbolic link to missing.jpg'
      assert 'decompression bomb' in reason('bomb.png')
      assert reason('random.jpg').startswith('UnidentifiedImageError')
    assert report.ignored == tuple(sorted(
        f'{split}/{c}/{name}' for c in class_names
        for name in ('.DS_Store', '._rgb.jpg', 'alias_dir', 'notes.txt')))

    np.testing.assert_array_equal(again.splits[split].images, images)
    assert again.report[split] == dataclasses.replace(report, from_cache=True)


@pytest.mark.parametrize('layout,change,match', [
    (None, None, 'is not a directory'),
    ({'validation': {'cats': 1}}, None, 'no train/ folder'),
    ({'validation': {'cats': 1}}, lambda root: (root / 'train').mkdir(),
     'no class folders'),
    ({'train': {'cats': 1}}, lambda root: (root / 'train' / 'dogs').mkdir(),
     r'without image files: \[.*train/dogs'),
    ({'train': {'cats': 1, 'dogs': 1}, 'test': {'cats': 1}},
     lambda root: _write(root / 'test' / 'dogs' / 'notes.txt'),
     r'without image files: \[.*test/dogs'),
    ({'train': {'cats': 1, 'dogs': 1}, 'validation': {'cats': 1, 'cows': 1}}, None,
     r"validation: its classes differ .* missing \['dogs'\], extra \['cows'\]"),
])
def test_layout_errors_before_decoding(make_image_folder, config, monkeypatch, tmp_path,
                                       layout, change, match):
  root = make_image_folder(layout) if layout else tmp_path / 'missing'
  if change:
    change(root)
  monkeypatch.setattr(decode, 'decode_file', _must_not_decode)
  config.dir = str(root)
  with pytest.raises(data.DataError, match=match):
    data.load(config)


def _write(path: pathlib.Path):
  path.parent.mkdir(parents=True)
  path.write_text('not an image')


def _must_not_decode(*args):
  raise AssertionError(f'decoded {args[0]}')


def test_hidden_and_non_image_files_ignored(make_image_folder, config):
  root = make_image_folder({'train': {'cats': 1, 'dogs': 1}})
  cats = root / 'train' / 'cats'
  Image.new('RGB', (24, 20)).save(cats / 'UPPER.PNG')
  for name in ('.DS_Store', 'notes.txt', '.hidden.png'):
    (cats / name).write_bytes(b'x')
  (cats / '.ipynb_checkpoints').mkdir()
  (cats / '.ipynb_checkpoints' / 'c.png').write_bytes(b'x')
  (root / 'train' / 'README.md').write_text('x')
  config.dir = str(root)
  dataset = data.load(config)

  assert dataset.splits['train'].files == (
      'train/cats/UPPER.PNG', 'train/cats/cats.0.png', 'train/dogs/dogs.0.png')
  assert dataset.report['train'].ignored == (
      'train/README.md', 'train/cats/.DS_Store', 'train/cats/.hidden.png',
      'train/cats/.ipynb_checkpoints', 'train/cats/notes.txt')
  assert dataset.report['train'].skipped == ()


def test_cache_hit_then_misses_on_change(make_image_folder, config, monkeypatch,
                                         image_folder_colours):
  root = make_image_folder({'train': {'cats': 2, 'dogs': 2},
                            'validation': {'cats': 1, 'dogs': 1}})
  config.dir = str(root)
  first = data.load(config)
  assert not any(r.from_cache for r in first.report.values())
  entries = pathlib.Path(config.cache_dir) / 'data'
  assert len(list(entries.glob('*/images.npy'))) == 2

  with monkeypatch.context() as patch:
    patch.setattr(decode, 'decode_file', _must_not_decode)
    second = data.load(config)
  assert all(r.from_cache for r in second.report.values())
  for name, split in first.splits.items():
    np.testing.assert_array_equal(second.splits[name].images, split.images)
    np.testing.assert_array_equal(second.splits[name].labels, split.labels)
    assert second.splits[name].files == split.files
  assert second.report['train'].loaded == 4

  Image.new('RGB', (24, 20), (1, 2, 3)).save(root / 'train' / 'dogs' / 'dogs.1.png')
  third = data.load(config)
  assert not third.report['train'].from_cache and third.report['validation'].from_cache
  assert tuple(third.splits['train'].images[3, 0, 0]) == (1, 2, 3)

  config.image_size = (10, 10)
  fourth = data.load(config)
  assert not any(r.from_cache for r in fourth.report.values())
  assert fourth.splits['validation'].images.shape == (2, 10, 10, 3)
  assert len(list(entries.iterdir())) == 5


def test_cache_dir_from_environment(make_image_folder, config, monkeypatch, tmp_path):
  config.dir, config.cache_dir = str(make_image_folder({'train': {'a': 1}})), ''
  monkeypatch.setenv('FSV_CACHE_DIR', str(tmp_path / 'env_cache'))
  data.load(config)
  assert list((tmp_path / 'env_cache' / 'data').glob('*/labels.npy'))


def test_interrupted_cache_write_leaves_no_entry_and_the_run_goes_on(
    make_image_folder, config, monkeypatch, caplog):
  config.dir = str(make_image_folder({'train': {'a': 1, 'b': 1}}))

  def fail_on_labels(path, array, **kwargs):
    if str(path).endswith('labels.npy'):
      raise OSError(28, 'No space left on device')
    real_save(path, array, **kwargs)

  real_save = np.save
  with monkeypatch.context() as patch:
    patch.setattr(np, 'save', fail_on_labels)
    assert data.load(config).splits['train'].images.shape[0] == 2
  assert 'cannot write the decoded-image cache' in caplog.text
  assert list((pathlib.Path(config.cache_dir) / 'data').iterdir()) == []
  assert not data.load(config).report['train'].from_cache


def test_read_only_cache_is_a_warning(make_image_folder, config, caplog, monkeypatch):
  config.dir = str(make_image_folder({'train': {'a': 1, 'b': 1}}))

  def read_only(*args, **kwargs):  # what a read-only cache folder does, even to root
    raise PermissionError(13, 'Permission denied')

  monkeypatch.setattr(cache.tempfile, 'mkdtemp', read_only)
  assert not data.load(config).report['train'].from_cache
  assert 'cannot write the decoded-image cache' in caplog.text
  assert 'Permission denied' in caplog.text


@pytest.mark.parametrize('damage', ['truncate', 'alter', 'drop-meta'])
def test_damaged_cache_entry_is_rebuilt_never_used(make_image_folder, config, caplog, damage):
  config.dir = str(make_image_folder({'train': {'a': 2, 'b': 2}}))
  first = data.load(config)
  (entry,) = (pathlib.Path(config.cache_dir) / 'data').iterdir()
  if damage == 'truncate':
    (entry / 'images.npy').write_bytes((entry / 'images.npy').read_bytes()[:-7])
  elif damage == 'alter':
    labels = np.load(entry / 'labels.npy')
    np.save(entry / 'labels.npy', 1 - labels)  # a silent relabelling
  else:
    (entry / 'meta.json').unlink()
  second = data.load(config)
  assert 'is damaged' in caplog.text and not second.report['train'].from_cache
  np.testing.assert_array_equal(second.splits['train'].labels, first.splits['train'].labels)
  np.testing.assert_array_equal(second.splits['train'].images, first.splits['train'].images)
  assert data.load(config).report['train'].from_cache  # rebuilt


def test_decode_array_grayscale_to_rgb():
  image, converted = decode.decode_array(np.full((20, 24, 1), 9, np.uint8), SIZE,
                                         'bilinear', 'id')
  assert converted and image.shape == (*SIZE, 3) and (image == 9).all()
  with pytest.raises(data.BadImage, match='id'):
    decode.decode_array(np.zeros((20, 24, 2), np.uint8), SIZE, 'bilinear', 'id')


@pytest.fixture
def tfds_config(config):
  config.source, config.name, config.download = 'tfds', 'cats_vs_dogs', True
  config.per_class.update(dict(train=3, validation=2, test=1))
  return config


@contextlib.contextmanager
def _mock_tfds(num_examples=40):
  """TFDS's own mock of a prepared dataset; the checks fsv makes before a
  real download (network, TensorFlow) see a machine that could download."""
  with tfds.testing.mock_data(num_examples=num_examples,
                              policy=tfds.testing.MockPolicy.USE_CODE), \
      mock.patch.object(tfds_source, '_cannot_download', return_value=''):
    yield


def _index(file: str) -> int:
  return int(file.rsplit('[', 1)[1].rstrip(']'))


def test_tfds_carves_balanced_disjoint_subsets_in_order(tfds_config):
  with _mock_tfds():
    dataset = data.load(tfds_config)
  assert dataset.class_names == ('cat', 'dog')
  assert list(dataset.splits) == ['train', 'validation', 'test']
  for name, split in dataset.splits.items():
    count = tfds_config.per_class[name]
    assert np.bincount(split.labels, minlength=2).tolist() == [count, count]
    assert split.images.shape == (len(split.labels), *SIZE, 3)
    assert split.images.dtype == np.uint8
    assert all(f.startswith('cats_vs_dogs/train[') for f in split.files)
  indices = {name: [_index(f) for f in split.files]
             for name, split in dataset.splits.items()}
  assert sum(map(len, indices.values())) == len(set().union(*indices.values())) == 12
  # Each class's train examples come before its validation ones, then test.
  for label in (0, 1):
    by_split = [[i for i, l in zip(indices[name], dataset.splits[name].labels)
                 if l == label] for name in ('train', 'validation', 'test')]
    assert max(by_split[0]) < min(by_split[1]) and max(by_split[1]) < min(by_split[2])


def test_tfds_zero_count_split_absent_and_cached(tfds_config, monkeypatch):
  tfds_config.per_class.test = 0
  with _mock_tfds():
    first = data.load(tfds_config)
    monkeypatch.setattr(decode, 'decode_array', _must_not_decode)
    second = data.load(tfds_config)
  assert list(first.splits) == ['train', 'validation']
  assert all(r.from_cache for r in second.report.values())
  np.testing.assert_array_equal(first.splits['train'].images,
                                second.splits['train'].images)


def test_tfds_class_running_out_is_an_error(tfds_config):
  tfds_config.per_class.train = 30
  with _mock_tfds(), pytest.raises(data.DataError, match=r"too few examples.*'cat': \d+"):
    data.load(tfds_config)


TINY_COLOURS = np.array([(200, 10, 10), (10, 10, 200)], np.uint8)


class FsvTinyImages(tfds.core.GeneratorBasedBuilder):
  """30 PNGs, labels alternating a, b; prepares offline and without TensorFlow."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(None, None, 3)),
        'label': tfds.features.ClassLabel(names=['a', 'b'])}))

  def _split_generators(self, dl_manager):
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for i in range(30):
      png = io.BytesIO()  # encoded here: encoding an array would need TensorFlow
      Image.new('RGB', (24, 20), tuple(TINY_COLOURS[i % 2].tolist())).save(png, 'PNG')
      png.seek(0)
      yield i, {'image': png, 'label': i % 2}


def _book_carving(labels, per_class) -> dict[str, list[int]]:
  """The carving done the slow, obvious way: the oracle for the test below."""
  bounds = [('train', per_class.train),
            ('validation', per_class.train + per_class.validation),
            ('test', per_class.train + per_class.validation + per_class.test)]
  taken, carving = {}, {split: [] for split, _ in bounds}
  for index, label in enumerate(labels):
    seen = taken.get(label, 0)
    taken[label] = seen + 1
    for split, bound in bounds:
      if seen < bound:
        carving[split].append(index)
        break
  return carving


def test_tfds_prepared_dataset_read_for_real(tfds_config, tmp_path):
  tfds_config.name, tfds_config.tfds_data_dir = 'fsv_tiny_images', str(tmp_path / 'tfds')
  dataset = data.load(tfds_config)  # download=True: prepares the array_record files
  assert dataset.class_names == ('a', 'b')
  # Preparing shuffles the examples, so the oracle reads the prepared order.
  source = tfds.builder('fsv_tiny_images', data_dir=tfds_config.tfds_data_dir
                        ).as_data_source('train')
  expected = _book_carving([int(source[i]['label']) for i in range(len(source))],
                           tfds_config.per_class)
  for name, split in dataset.splits.items():
    assert [_index(f) for f in split.files] == expected[name]
    assert_colours_match_labels(split, TINY_COLOURS)

  tfds_config.download = False  # prepared now
  assert data.load(tfds_config).report['test'].from_cache


def test_tfds_not_prepared_without_download(tfds_config):
  tfds_config.download = False
  with _mock_tfds(), pytest.raises(data.DataError, match='data.download=True'):
    data.load(tfds_config)


def test_tfds_without_train_is_an_error(tfds_config):
  tfds_config.per_class.train = 0
  with _mock_tfds(), pytest.raises(data.DataError, match='per_class.train is 0'):
    data.load(tfds_config)


def test_empty_dir_is_an_error(config):
  config.dir = ''
  with pytest.raises(data.DataError, match='data.dir is empty'):
    data.load(config)


def test_auto_source_takes_the_folder_if_given_else_tfds(config):
  config.source = 'auto'
  with pytest.raises(data.DataError, match=r'no data: set --config.data.dir=DIR .* or '
                     r'--config.data.name=NAME'):
    data.source_of(config)
  config.name = 'cats_vs_dogs'
  assert data.source_of(config) == 'tfds'
  config.dir = 'photos'
  assert data.source_of(config) == 'folder'


@pytest.mark.parametrize('folder', ['valid', 'val'])
def test_valid_and_val_folders_are_the_validation_split(make_image_folder, config, folder,
                                                        capsys):
  root = make_image_folder({'train': {'a': 2, 'b': 2}, folder: {'a': 1, 'b': 1}})
  config.dir = str(root)
  dataset = data.load(config)
  assert sorted(dataset.splits) == ['train', 'validation']
  assert dataset.splits['validation'].files[0].startswith(f'{folder}/')
  assert f'validation split: {root / folder}' in capsys.readouterr().out


def test_two_validation_folders_are_an_error(make_image_folder, config):
  config.dir = str(make_image_folder({'train': {'a': 1}, 'valid': {'a': 1},
                                      'validation': {'a': 1}}))
  with pytest.raises(data.DataError, match=r'both validation/ and valid/ are there; which is '
                     'the validation split'):
    data.load(config)


def test_a_linked_folder_is_never_a_class(make_image_folder, config):
  root = make_image_folder({'train': {'a': 2, 'b': 2}})
  os.symlink(root / 'train', root / 'train' / 'all')  # `train/all -> .`
  config.dir = str(root)
  dataset = data.load(config)
  assert dataset.class_names == ('a', 'b') and len(dataset.splits['train'].labels) == 4
  assert 'train/all' in dataset.report['train'].ignored


def test_an_unreadable_folder_is_an_error_naming_it(make_image_folder, config, monkeypatch):
  root = make_image_folder({'train': {'a': 2, 'b': 2}})
  (root / 'train' / 'a' / 'more').mkdir()
  real_scandir = os.scandir

  def unreadable(path='.'):  # what chmod 000 does, even to root
    if str(path).endswith('more'):
      raise PermissionError(13, 'Permission denied', str(path))
    return real_scandir(path)

  monkeypatch.setattr(os, 'scandir', unreadable)
  config.dir = str(root)
  with pytest.raises(data.DataError, match=r'train/a/more: cannot be read \(Permission denied\)'
                     '; the images in it would be missing'):
    data.load(config)


def test_special_files_named_like_images_are_skipped_with_a_reason(make_image_folder, config):
  root = make_image_folder({'train': {'a': 2, 'b': 2}})
  os.mkfifo(root / 'train' / 'a' / 'pipe.jpg')  # reading it would block forever
  os.symlink('/dev/zero', root / 'train' / 'b' / 'zero.png')  # would never end
  config.dir = str(root)
  dataset = data.load(config)
  assert dict(dataset.report['train'].skipped) == {
      'train/a/pipe.jpg': 'not a regular file but a named pipe',
      'train/b/zero.png': 'not a regular file but a character device'}
  assert len(dataset.splits['train'].labels) == 4


def test_validation_split_holds_out_a_stratified_part_of_train(two_class_dataset):
  from fsv.data import holdout
  dataset = two_class_dataset(8, train=10, held_out=2)
  without = data.Dataset(dataset.class_names,
                         {k: v for k, v in dataset.splits.items() if k != 'validation'},
                         {k: v for k, v in dataset.report.items() if k != 'validation'})
  carved = holdout.with_validation_split(without, 0.2, seed=3)
  assert np.bincount(carved.splits['validation'].labels).tolist() == [2, 2]
  assert np.bincount(carved.splits['train'].labels).tolist() == [8, 8]
  assert not set(carved.splits['validation'].files) & set(carved.splits['train'].files)
  again = holdout.with_validation_split(without, 0.2, seed=3)
  assert again.splits['validation'].files == carved.splits['validation'].files
  other = holdout.with_validation_split(without, 0.2, seed=4)
  assert other.splits['validation'].files != carved.splits['validation'].files
  with pytest.raises(data.DataError, match="class 'cats' has only 10 training image"):
    holdout.with_validation_split(without, 0.95, seed=0)
