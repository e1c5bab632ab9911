"""Export to jax, ONNX and TF Lite, each verified in its own runtime against fsv.

The jax format needs nothing beyond fsv's own dependencies; ONNX and TF Lite
need the `export` extra and are skipped with the reason when it is missing.
"""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fsv
from fsv import export as export_lib
from fsv import inference

from conftest import _two_class_dataset, pretrained_backbone_config
from test_train import _config, _tiny_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _installed(*modules):
  return all(importlib.util.find_spec(m) is not None for m in modules)


NEEDS = {'jax': (), 'onnx': ('jax2onnx', 'onnxruntime'),
         'tflite': ('tensorflow', 'ai_edge_litert')}


def _format(name):
  missing = [m for m in NEEDS[name] if not _installed(m)]
  return pytest.param(name, marks=pytest.mark.skipif(
      bool(missing), reason=f"{missing} not installed: pip install -e '.[export]'"))


def _tiny_run(kind: str, tmp_path):
  """A trained run of each backbone family at a small input size."""
  if kind == 'small_convnet':
    config = _config(epochs=1)
    dataset = _tiny_dataset()
  else:
    config = pretrained_backbone_config(kind, 32, str(tmp_path / 'cache'))
    config.bottleneck.update(epochs=1, batch_size=4)
    config.train.update(epochs=1, batch_size=4, trainable=('@top_block', '@head'))
    dataset = _two_class_dataset(32, 4, 3)
  return fsv.fit(config, dataset=dataset, workdir=str(tmp_path / 'work'))


@pytest.mark.parametrize('format_', [_format('jax'), _format('onnx'), _format('tflite')])
@pytest.mark.parametrize('kind', ['small_convnet', 'vgg16', 'efficientnet_lite0'])
def test_every_family_exports_and_agrees_with_fsv(kind, format_, tmp_path):
  run = _tiny_run(kind, tmp_path)
  images = np.random.default_rng(0).integers(0, 256, (5, *run.image_size, 3), np.uint8)
  out = tmp_path / 'export'
  description = run.export(format_, str(out), images=images)
  assert sorted(os.listdir(out)) == sorted(
      description['files'] + ['model.json'] + (['saved_model'] if format_ == 'tflite' else []))
  assert json.loads((out / 'model.json').read_text()) == description
  assert description['class_names'] == list(run.class_names)
  batch = 1 if format_ == 'tflite' else None  # TF Lite's batch is fixed, 1 by default
  assert description['input']['shape'] == [batch, *run.image_size, 3]
  assert description['output']['shape'] == [batch, run.num_classes]
  assert description['input']['dtype'] == 'uint8'
  assert description['verification']['images'] == 5
  for name in description['files']:
    check = description['verification'][name]
    assert check['passed'] and check['agreement'] == 1.0, check
    if 'int8' not in name:
      assert check['max_abs_diff'] <= export_lib.FLOAT_TOLERANCE


def test_the_jax_export_runs_with_jax_alone(tmp_path):
  run = _tiny_run('small_convnet', tmp_path)
  images = np.random.default_rng(1).integers(0, 256, (7, *run.image_size, 3), np.uint8)
  run.export('jax', str(tmp_path / 'export'), images=images[:2])
  np.save(tmp_path / 'images.npy', images)
  script = ('import sys, jax, numpy as np\n'
            'exported = jax.export.deserialize(bytearray(open(sys.argv[1], "rb").read()))\n'
            'np.save(sys.argv[3], np.asarray(exported.call(np.load(sys.argv[2]))))\n'
            'assert not any(m == "fsv" or m.startswith(("fsv.", "flax")) for m in sys.modules)\n')
  done = subprocess.run([sys.executable, '-c', script, str(tmp_path / 'export' / 'model.jaxexport'),
                         str(tmp_path / 'images.npy'), str(tmp_path / 'p.npy')],
                        capture_output=True, text=True, timeout=300, cwd=tmp_path)
  assert done.returncode == 0, done.stderr[-2000:]
  # Any batch size: the batch dimension is symbolic.
  np.testing.assert_allclose(np.load(tmp_path / 'p.npy'), run.probabilities(images),
                             atol=1e-6)


def test_a_disagreeing_export_fails_and_says_by_how_much(tmp_path, monkeypatch):
  run = _tiny_run('small_convnet', tmp_path)
  serving = inference.serving_function

  def off_by_a_little(*args):
    serve = serving(*args)
    return lambda images: serve(images) + 1e-3

  monkeypatch.setattr(inference, 'serving_function', off_by_a_little)
  images = np.zeros((3, *run.image_size, 3), np.uint8)
  with pytest.raises(fsv.ExportError, match=r'disagrees with fsv: model.jaxexport: max '
                     r'difference 1.00e-03, predicted class agrees on 100.00% \(required: '
                     r'every probability within 0.0001\)'):
    run.export('jax', str(tmp_path / 'export'), images=images)
  recorded = json.loads((tmp_path / 'export' / 'model.json').read_text())
  assert not recorded['verification']['model.jaxexport']['passed']


def test_bad_requests_are_named(tmp_path, monkeypatch):
  run = _tiny_run('small_convnet', tmp_path)
  images = np.zeros((2, *run.image_size, 3), np.uint8)
  with pytest.raises(fsv.ExportError, match="unknown export format 'keras'"):
    run.export('keras', str(tmp_path / 'a'), images=images)
  (tmp_path / 'taken').mkdir()
  with pytest.raises(fsv.ExportError, match='taken exists; pass --overwrite'):
    run.export('jax', str(tmp_path / 'taken'), images=images)
  run.export('jax', str(tmp_path / 'taken'), images=images, overwrite=True)
  assert (tmp_path / 'taken' / 'model.jaxexport').exists()
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *a: None if name == 'jax2onnx' else real_find_spec(name, *a))
  with pytest.raises(fsv.ExportError, match=r"--format=onnx needs jax2onnx(, onnxruntime)?: "
                     r"pip install -e '\.\[export\]'"):
    run.export('onnx', str(tmp_path / 'b'), images=images)
  assert not (tmp_path / 'b').exists()
  assert not [p for p in os.listdir(tmp_path) if p.startswith('.')]  # no half export


def test_export_command_verifies_on_the_validation_images(tmp_path):
  run = _tiny_run('small_convnet', tmp_path)
  done = subprocess.run([sys.executable, '-m', 'experiments.export', f'--workdir={run.workdir}',
                         '--format=jax'], cwd=REPO, capture_output=True, text=True, timeout=300)
  # The tiny run's data was passed in memory: there is nothing to read back.
  assert done.returncode == 1 and 'Traceback' not in done.stderr
  assert "error: cannot read the run's validation images" in done.stderr
  images = tmp_path / 'images'
  images.mkdir()
  from PIL import Image
  Image.new('RGB', (30, 20), (200, 20, 20)).save(images / 'red.png')
  done = subprocess.run([sys.executable, '-m', 'experiments.export', f'--workdir={run.workdir}',
                         '--format=jax', f'--images={images}'], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert 'verified on 1 images (1 given images)' in done.stdout
  assert os.path.exists(os.path.join(run.workdir, 'export', 'jax', 'model.json'))
  done = subprocess.run([sys.executable, '-m', 'experiments.export',
                         f'--workdir={tmp_path / "unfinished"}', '--format=jax'], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 1 and 'Traceback' not in done.stderr
  assert done.stderr.strip().endswith('unfinished: no such workdir')
