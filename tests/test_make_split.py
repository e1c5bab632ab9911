"""fsv.data.make_split and its entry point experiments/make_split.py."""
import os
import pathlib
import subprocess
import sys

import pytest

from fsv import data

PER_CLASS = dict(train=3, validation=2, test=1)
REPO = pathlib.Path(__file__).resolve().parents[1]


def _write(path: pathlib.Path) -> None:
  # make_split never decodes, so the bytes only need to identify the file.
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(path.name)


def _class_folders(src: pathlib.Path, counts=(('cat', 8), ('dog', 7))) -> pathlib.Path:
  for name, count in counts:
    for i in range(count):
      _write(src / name / f'{i}.jpg')
  _write(src / 'cat' / 'notes.txt')  # not an image: never drawn
  return src


def _flat(src: pathlib.Path, counts=(('cat', 8), ('dog', 7))) -> pathlib.Path:
  for name, count in counts:
    for i in range(count):
      _write(src / f'{name}.{i}.jpg')
  return src


def _drawn(dst: pathlib.Path) -> dict[str, set[str]]:
  """split -> {class/file} under dst."""
  return {split.name: {f'{p.parent.name}/{p.name}' for p in split.glob('*/*')}
          for split in dst.iterdir()}


@pytest.mark.parametrize('layout', [_class_folders, _flat])
def test_balanced_disjoint_split(tmp_path, layout):
  src, dst = layout(tmp_path / 'src'), tmp_path / 'dst'
  summary = data.make_split(str(src), str(dst), PER_CLASS, seed=0)

  assert summary == {split: {'cat': n, 'dog': n} for split, n in PER_CLASS.items()}
  drawn = _drawn(dst)
  for split, count in PER_CLASS.items():
    for name in ('cat', 'dog'):
      assert len([f for f in drawn[split] if f.startswith(f'{name}/')]) == count
  every = [f for files in drawn.values() for f in files]
  assert len(every) == len(set(every)) == 12
  for file in dst.glob('*/*/*'):
    assert not file.is_symlink() and file.read_text() == file.name


def test_same_seed_same_split_other_seed_differs(tmp_path):
  src = _flat(tmp_path / 'src', counts=(('cat', 20), ('dog', 20)))
  runs = {}
  for name, seed in (('a', 0), ('b', 0), ('c', 1)):
    data.make_split(str(src), str(tmp_path / name), PER_CLASS, seed=seed)
    runs[name] = _drawn(tmp_path / name)
  assert runs['a'] == runs['b']
  assert runs['a'] != runs['c']


def test_link_makes_symlinks_to_the_source(tmp_path):
  src, dst = _class_folders(tmp_path / 'src'), tmp_path / 'dst'
  data.make_split(str(src), str(dst), PER_CLASS, link=True)
  files = list(dst.glob('*/*/*'))
  assert len(files) == 12
  for file in files:
    assert file.is_symlink()
    target = (src / file.parent.name / file.name).resolve()
    assert pathlib.Path(os.readlink(file)) == target


def test_zero_count_split_is_not_made(tmp_path):
  src, dst = _flat(tmp_path / 'src'), tmp_path / 'dst'
  summary = data.make_split(str(src), str(dst), dict(train=2, validation=1), seed=0)
  assert set(summary) == {'train', 'validation'}
  assert sorted(p.name for p in dst.iterdir()) == ['train', 'validation']


def test_too_few_images_is_an_error_before_writing(tmp_path):
  src = _class_folders(tmp_path / 'src', counts=(('cat', 8), ('dog', 5)))
  dst = tmp_path / 'dst'
  with pytest.raises(data.DataError, match=r"6 per class.*\{'dog': 5\}"):
    data.make_split(str(src), str(dst), PER_CLASS)
  assert not dst.exists()


def test_refuses_a_non_empty_destination(tmp_path):
  src, dst = _flat(tmp_path / 'src'), tmp_path / 'dst'
  _write(dst / 'keep.txt')
  with pytest.raises(data.DataError, match='not empty'):
    data.make_split(str(src), str(dst), PER_CLASS)
  assert [p.name for p in dst.iterdir()] == ['keep.txt']


def test_mixed_layout_is_an_error(tmp_path):
  src = _class_folders(tmp_path / 'src')
  _write(src / 'cat.99.jpg')
  with pytest.raises(data.DataError, match='both class folders and image files'):
    data.make_split(str(src), str(tmp_path / 'dst'), PER_CLASS)


def test_entry_point(tmp_path):
  src, dst = _flat(tmp_path / 'src'), tmp_path / 'dst'
  run = subprocess.run(
      [sys.executable, '-m', 'experiments.make_split', f'--src={src}', f'--dst={dst}',
       '--seed=3', '--per_class=3,2,1', '--link'],
      cwd=REPO, capture_output=True, text=True, check=False)
  assert run.returncode == 0, run.stderr
  assert len(list(dst.glob('train/cat/*'))) == 3
  assert all(p.is_symlink() for p in dst.glob('*/*/*'))

  again = subprocess.run(
      [sys.executable, '-m', 'experiments.make_split', f'--src={src}', f'--dst={dst}'],
      cwd=REPO, capture_output=True, text=True, check=False)
  assert again.returncode == 1 and 'not empty' in again.stderr
