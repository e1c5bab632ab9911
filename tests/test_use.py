"""Using what was trained: load a run back, predict, evaluate, explain, the commands."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

import fsv
from fsv import evaluate as evaluate_lib
from fsv.data.decode import Dataset, Split, SplitReport

from conftest import pretrained_backbone_config
from test_train import SIZE, _config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def image_root(tmp_path_factory):
  """DATA/{train,validation,test}/{cats,dogs}/*.png, 20x24 noisy reds and greens."""
  root = tmp_path_factory.mktemp('use') / 'data'
  rng = np.random.default_rng(0)
  for split, count in (('train', 10), ('validation', 4), ('test', 4)):
    for name, colour in (('cats', (200, 40, 40)), ('dogs', (40, 180, 60))):
      folder = root / split / name
      folder.mkdir(parents=True)
      for i in range(count):
        pixels = rng.integers(0, 60, (20, 24, 3)) + np.array(colour) * 0.7
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f'{name}.{i}.png')
  return root


def _folder_config(root, tmp_path):
  config = _config(epochs=3, batch_size=4)
  config.data.dir = str(root)
  config.data.cache_dir = str(tmp_path / 'cache')
  return config


@pytest.fixture(scope='module')
def trained(image_root, tmp_path_factory):
  """A finished small-convnet run on `image_root`: (workdir, the Run fit returned)."""
  tmp_path = tmp_path_factory.mktemp('trained')
  workdir = str(tmp_path / 'work')
  return workdir, fsv.fit(_folder_config(image_root, tmp_path), workdir=workdir)


def _test_files(workdir, root) -> list:
  with np.load(os.path.join(workdir, 'predictions.npz')) as arrays:
    return [str(root / f) for f in arrays['test/files']], arrays['test/probabilities']


def test_a_fresh_process_predicts_what_the_run_recorded(trained, image_root, tmp_path):
  workdir, _ = trained
  files, recorded = _test_files(workdir, image_root)
  script = ('import sys, numpy as np, fsv\n'
            'run = fsv.load_run(sys.argv[1])\n'
            'np.save(sys.argv[2], run.predict(sys.argv[3:]))\n')
  out = tmp_path / 'p.npy'
  done = subprocess.run([sys.executable, '-c', script, workdir, str(out), *files],
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  np.testing.assert_allclose(np.load(out), recorded, rtol=0, atol=1e-6)


def test_loaded_run_describes_itself(trained):
  workdir, fitted = trained
  run = fsv.load_run(workdir)
  assert run.class_names == ('cats', 'dogs') and run.image_size == (SIZE, SIZE)
  assert run.checkpoint == 'best' and run.history == fitted.history
  assert 'bilinear' in run.preprocessing and 'times 0.00392157' in run.preprocessing
  jax.tree_util.tree_map(np.testing.assert_array_equal, run.variables['params'],
                         jax.device_get(fitted.params))
  last = fsv.load_run(workdir, checkpoint='last')
  assert last.checkpoint == 'last'
  assert fsv.predict(workdir, np.zeros((2, 5, 7, 3), np.uint8)).shape == (2, 2)


def test_fit_with_and_without_a_workdir_evaluates_the_same_epoch(image_root, tmp_path):
  config = _folder_config(image_root, tmp_path)
  config.train.learning_rate = 1e-2  # validation accuracy moves, so best != last
  with_workdir = fsv.fit(config, workdir=str(tmp_path / 'work'))
  without = fsv.fit(config)
  assert with_workdir.results['best_epoch'] == without.results['best_epoch']
  for key in ('test_accuracy', 'test_loss', 'val_accuracy', 'val_loss', 'evaluated'):
    assert with_workdir.results[key] == without.results[key]
  jax.tree_util.tree_map(np.testing.assert_array_equal, with_workdir.params, without.params)


def test_predict_takes_paths_folders_pil_images_and_arrays_of_any_size(trained, image_root):
  _, run = trained
  folder = image_root / 'test' / 'dogs'
  files = sorted(str(folder / name) for name in os.listdir(folder))
  by_files = run.predict(files)
  np.testing.assert_array_equal(run.predict(str(folder)), by_files)
  np.testing.assert_array_equal(run.predict([Image.open(f) for f in files]), by_files)
  arrays = [np.asarray(Image.open(f)) for f in files]  # 20x24: resized as files are
  np.testing.assert_array_equal(run.predict(arrays), by_files)
  np.testing.assert_array_equal(run.predict(np.stack(arrays)), by_files)
  np.testing.assert_allclose(by_files.sum(-1), 1, rtol=1e-6)

  photo = np.random.default_rng(1).integers(0, 255, (290, 384, 3), np.uint8)
  assert run.predict(photo).shape == (1, 2)
  at_size = np.stack([np.asarray(Image.fromarray(a).resize((SIZE, SIZE), Image.BILINEAR))
                      for a in arrays])
  mirrored = run.probabilities(at_size[:, :, ::-1])
  np.testing.assert_allclose(run.predict(files, tta=True), (by_files + mirrored) / 2,
                             atol=1e-7)


def test_files_are_turned_upright_by_their_exif_orientation(trained, tmp_path):
  _, run = trained
  pixels = np.random.default_rng(2).integers(0, 255, (20, 30, 3), np.uint8)
  exif = Image.Exif()
  exif[0x0112] = 6  # stored rotated: shown after a 90 degree clockwise turn
  Image.fromarray(pixels).save(tmp_path / 'rotated.png', exif=exif)
  upright = np.rot90(pixels, k=-1)
  np.testing.assert_array_equal(run.predict(str(tmp_path / 'rotated.png')),
                                run.predict(upright))


def test_undecodable_input_is_named_or_keeps_its_row(trained, image_root, tmp_path):
  _, run = trained
  (tmp_path / 'broken.jpg').write_bytes(b'not an image')
  good = str(image_root / 'test' / 'cats' / 'cats.0.png')
  with pytest.raises(fsv.DataError, match=r'1 of 3 input\(s\) could not be decoded: .*'
                     r'broken\.jpg: '):
    run.predict([good, str(tmp_path / 'broken.jpg'), good])
  predictions = run.classify([good, str(tmp_path / 'broken.jpg'), str(tmp_path / 'nope.png'),
                              good])
  assert list(predictions.errors) == [1, 2] and predictions.errors[2] == 'no such file'
  assert np.isnan(predictions.probabilities[1:3]).all()
  np.testing.assert_array_equal(predictions.probabilities[[0, 3]], run.predict([good, good]))
  with pytest.raises(fsv.DataError, match='expected paths, a folder, PIL images'):
    run.predict(42)


def _finished_copy(trained, tmp_path):
  workdir, _ = trained
  copy = tmp_path / 'copy'
  subprocess.run(['cp', '-r', workdir, str(copy)], check=True)
  return copy


def test_loading_a_missing_unfinished_or_foreign_workdir_is_a_workdir_error(trained, tmp_path):
  with pytest.raises(fsv.WorkdirError, match='no such workdir'):
    fsv.load_run(str(tmp_path / 'nothing'))
  copy = _finished_copy(trained, tmp_path)
  (copy / 'results.json').rename(copy / 'results.json.away')
  with pytest.raises(fsv.WorkdirError, match='the run has not finished'):
    fsv.load_run(str(copy))
  (copy / 'results.json.away').rename(copy / 'results.json')

  results = json.loads((copy / 'results.json').read_text())
  (copy / 'results.json').write_text(json.dumps(dict(results, workdir_format=99)))
  with pytest.raises(fsv.WorkdirError, match='written by a newer fsv'):
    fsv.load_run(str(copy))
  (copy / 'results.json').write_text(json.dumps(results))

  config = json.loads((copy / 'config.json').read_text())
  (copy / 'config.json').write_text(json.dumps(dict(config, colour='blue')))
  with pytest.raises(fsv.WorkdirError, match="does not fit this version of fsv.*'colour'"):
    fsv.load_run(str(copy))
  config['model']['dense_units'] = 32  # another architecture than the checkpoint's
  (copy / 'config.json').write_text(json.dumps(config))
  with pytest.raises(fsv.WorkdirError, match='checkpoint does not fit the model'):
    fsv.load_run(str(copy))


@pytest.mark.parametrize('kind', ['vgg16_bottleneck', 'vgg16_finetune', 'efficientnet'])
def test_every_kind_of_run_loads_back_and_predicts_what_it_recorded(kind, tmp_path,
                                                                    two_class_dataset):
  dataset = two_class_dataset(32, train=4, held_out=2)
  model = 'vgg16' if kind.startswith('vgg16') else 'efficientnet_lite0'
  config = pretrained_backbone_config(model, 32, str(tmp_path / 'cache'))
  config.bottleneck.update(epochs=2, batch_size=4, learning_rate=1e-3)
  config.train.update(epochs=0 if kind == 'vgg16_bottleneck' else 1, batch_size=4,
                      trainable=('@top_block', '@head'), optimizer='adam',
                      learning_rate=1e-4)
  workdir = str(tmp_path / 'work')
  fitted = fsv.fit(config, dataset=dataset, workdir=workdir)
  run = fsv.load_run(workdir)
  assert run.results['phase'] == ('bottleneck' if kind == 'vgg16_bottleneck' else 'train')
  with np.load(os.path.join(workdir, 'predictions.npz')) as arrays:
    np.testing.assert_allclose(run.predict(dataset.splits['test'].images),
                               arrays['test/probabilities'], rtol=0, atol=1e-6)
  jax.tree_util.tree_map(np.testing.assert_allclose, run.variables,
                         jax.device_get(fitted.variables))


def test_zero_epochs_from_a_workdir_evaluate_that_run(trained, tmp_path):
  workdir, fitted = trained
  config = _folder_config(fitted.config.data.dir, tmp_path)
  config.data.cache_dir = fitted.config.data.cache_dir
  config.train.epochs = 0
  config.init_from = workdir
  evaluated = fsv.fit(config, workdir=str(tmp_path / 'zero'))
  assert evaluated.results['evaluated'] == 'initial'
  for key in ('test_accuracy', 'test_loss', 'val_accuracy'):
    assert evaluated.results[key] == fitted.results[key]
  reloaded = fsv.load_run(str(tmp_path / 'zero'))
  assert reloaded.checkpoint == 'initial'
  np.testing.assert_array_equal(reloaded.predict(fitted.dataset.splits['test'].images),
                                fitted.predict(fitted.dataset.splits['test'].images))


def test_a_bad_init_from_is_refused_before_the_data_is_read(tmp_path):
  config = _config()
  config.data.dir = str(tmp_path / 'no-data-here')  # reading it would be a DataError
  config.init_from = str(tmp_path / 'no-run-here')
  with pytest.raises(fsv.ConfigError, match=r"^config\.init_from=.*no-run-here': not a "
                     'workdir with a best checkpoint'):
    fsv.fit(config)


def test_every_error_is_an_fsv_error():
  for error in (fsv.ConfigError, fsv.DataError, fsv.WeightsError, fsv.WorkdirError,
                fsv.NonFiniteLossError):
    assert issubclass(error, fsv.Error)


def test_evaluating_the_test_split_reproduces_the_runs_results(trained, image_root):
  workdir, _ = trained
  results = json.loads(open(os.path.join(workdir, 'results.json')).read())
  recorded = json.loads(open(os.path.join(workdir, 'evaluation', 'test',
                                          'metrics.json')).read())
  evaluation = fsv.load_run(workdir).evaluate(str(image_root), split='test')
  assert evaluation.metrics['accuracy'] == results['test_accuracy'] == recorded['accuracy']
  assert evaluation.metrics['log_loss'] == results['test_loss'] == recorded['log_loss']
  assert evaluation.metrics == recorded
  bare = fsv.load_run(workdir).evaluate(str(image_root / 'test'))  # DIR/<class>/...
  assert bare.metrics['accuracy'] == results['test_accuracy']


def test_metrics_of_a_known_confusion():
  # 3 classes; rows: true a a a b b c, predicted a a b b c c.
  probabilities = np.array([[.8, .1, .1], [.6, .3, .1], [.3, .6, .1],
                            [.1, .9, 0], [.2, .35, .45], [0, 0, 1]], np.float32)
  labels = np.array([0, 0, 0, 1, 1, 2])
  losses = -np.log(probabilities[np.arange(6), labels])
  metrics = evaluate_lib.evaluation(probabilities, labels, losses, ('a', 'b', 'c'),
                                    list('uvwxyz'), np.zeros((6, 2, 2, 3), np.uint8)).metrics
  assert metrics['confusion_matrix'] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
  assert metrics['accuracy'] == pytest.approx(4 / 6)
  assert metrics['log_loss'] == pytest.approx(np.mean(losses))
  a, b, c = (metrics['per_class'][k] for k in 'abc')
  assert (a['precision'], a['recall'], a['support']) == (1.0, pytest.approx(2 / 3), 3)
  assert (b['precision'], b['recall']) == (0.5, 0.5)
  assert (c['precision'], c['recall'], c['f1']) == (0.5, 1.0, pytest.approx(2 / 3))
  assert metrics['macro_avg']['recall'] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
  assert metrics['weighted_avg']['recall'] == pytest.approx(4 / 6)  # = accuracy
  # Confidence bins: .8 right; .6, .6 one right (bin 9); .9 right; .45 wrong; 1.0 right.
  expected = (abs(1 - .8) + 2 * abs(.5 - .6) + abs(1 - .9) + abs(0 - .45) + abs(1 - 1)) / 6
  assert metrics['expected_calibration_error'] == pytest.approx(expected, abs=1e-6)
  assert 'top5_accuracy' not in metrics


def test_top5_accuracy_with_more_than_5_classes():
  probabilities = np.eye(7, dtype=np.float32)[[0, 1]] * 0.4 + 0.6 / 7
  probabilities[1] = np.array([.3, .0, .2, .2, .1, .1, .1])  # class 1 ranks last
  metrics = evaluate_lib.evaluation(probabilities, np.array([0, 1]), np.zeros(2), 'abcdefg',
                                    ['x', 'y'], np.zeros((2, 2, 2, 3), np.uint8)).metrics
  assert metrics['top5_accuracy'] == 0.5


def _quadrant_dataset(quadrant: int, size: int = 32) -> Dataset:
  """Dark noise; class 1 also has a bright cross at a random place inside
  `quadrant` (0: top left, 1: top right, 2: bottom left, 3: bottom right)."""
  rng = np.random.default_rng(quadrant)

  def split(per_class):
    labels = np.repeat([0, 1], per_class).astype(np.int32)
    images = rng.integers(0, 40, (len(labels), size, size, 3)).astype(np.uint8)
    half = size // 2
    for i in np.flatnonzero(labels):
      y = rng.integers(1, half - 7) + half * (quadrant // 2)
      x = rng.integers(1, half - 7) + half * (quadrant % 2)
      images[i, y + 2:y + 4, x:x + 6] = 255
      images[i, y:y + 6, x + 2:x + 4] = 255
    return Split(images, labels, tuple(map(str, range(len(labels)))))

  splits = {'train': split(48), 'validation': split(8), 'test': split(8)}
  return Dataset(('noise', 'cross'), splits,
                 {k: SplitReport(len(v.labels), (), 0) for k, v in splits.items()})


@pytest.mark.parametrize('quadrant', [0, 3])
def test_gradcam_finds_the_class_evidence_in_its_quadrant(quadrant):
  # Globally pooled features: Grad-CAM's spatial average of the gradients is
  # then each feature's true weight (with the book's Flatten head it is an
  # average of position-specific weights, and heatmaps of this tiny
  # convnet came out empty or diffuse as often as not).
  dataset = _quadrant_dataset(quadrant)
  config = _config(epochs=8, batch_size=16, learning_rate=3e-3, evaluate_with='last')
  config.data.image_size = (32, 32)
  config.model.update(conv_features=(16, 32), pooling='avg')
  run = fsv.fit(config, dataset=dataset)
  assert run.results['test_accuracy'] == 1.0
  crosses = dataset.splits['test'].images[dataset.splits['test'].labels == 1]
  heatmaps = run.explain(crosses, class_name='cross').heatmaps
  rows, columns = divmod(quadrant, 2)
  inside = heatmaps[:, rows * 16:(rows + 1) * 16, columns * 16:(columns + 1) * 16]
  share = inside.sum(axis=(1, 2)) / heatmaps.sum(axis=(1, 2))
  assert share.min() > 0.5, share  # a quadrant is a quarter of the image


@pytest.mark.parametrize('name', ['small_convnet', 'vgg16', 'efficientnet_lite0'])
def test_gradcam_of_every_backbone(name, two_class_dataset):
  dataset = two_class_dataset(64, train=2, held_out=2)
  config = fsv.base_config(name)
  config.data.dir = 'unused'
  config.data.image_size = (64, 64)
  if name != 'small_convnet':
    config.model.weights = ''
  config.train.update(epochs=0, batch_size=2)
  run = fsv.fit(config, dataset=dataset)
  images = dataset.splits['test'].images
  explanation = run.explain(images)
  assert explanation.heatmaps.shape == (4, 64, 64)
  assert np.isfinite(explanation.heatmaps).all()
  assert explanation.heatmaps.min() >= 0 and explanation.heatmaps.max() <= 1
  np.testing.assert_allclose(explanation.probabilities, run.predict(images), atol=1e-6)
  np.testing.assert_array_equal(explanation.explained, run.predict(images).argmax(-1))
  with pytest.raises(fsv.DataError, match="class 'birds' is not one of the run's classes"):
    run.explain(images, class_name='birds')


def test_gradcam_of_a_pooled_linear_head_is_the_class_activation_map(two_class_dataset):
  """For global average pooling and one dense layer (EfficientNet-Lite's head),
  Grad-CAM's weights are the dense kernel over h*w: CAM (Zhou et al. 2016)."""
  dataset = two_class_dataset(64, train=2, held_out=2)
  config = fsv.base_config('efficientnet_lite0')
  config.data.dir = 'unused'
  config.data.image_size = (64, 64)
  config.model.weights = ''
  config.train.update(epochs=0, batch_size=2)
  run = fsv.fit(config, dataset=dataset)
  images = dataset.splits['test'].images
  _, state = run.model.apply(run.variables, images.astype(np.float32),
                             capture_intermediates=lambda m, _: m.name == 'top_activation',
                             mutable=['intermediates'])
  activations = state['intermediates']['top_activation']['__call__'][0]      # (n, 2, 2, k)
  kernel = run.params['head']['logits']['kernel'][:, 0]                       # class 1
  for class_index, sign in ((1, 1.0), (0, -1.0)):
    cam = np.maximum(np.einsum('nhwk,k->nhw', activations, sign * kernel), 0)
    cam = cam / np.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-12)
    expected = np.clip(jax.image.resize(cam, (4, 64, 64), 'bilinear'), 0, 1)
    heatmaps = run.explain(images, class_name=run.class_names[class_index]).heatmaps
    np.testing.assert_allclose(heatmaps, expected, atol=1e-5)


def _command(module: str, *args, cwd=REPO):
  return subprocess.run([sys.executable, '-m', f'experiments.{module}', *args], cwd=cwd,
                        capture_output=True, text=True, timeout=300)


def test_predict_command_writes_every_file_in_order(trained, image_root, tmp_path):
  workdir, _ = trained
  (tmp_path / 'broken.jpg').write_bytes(b'not an image')
  good = str(image_root / 'test' / 'cats' / 'cats.1.png')
  output = tmp_path / 'out.csv'
  done = _command('predict', f'--workdir={workdir}', f'--images={image_root / "test" / "dogs"}',
                  str(tmp_path / 'broken.jpg'), good, f'--output={output}')
  assert done.returncode == 0, done.stderr[-3000:]
  lines = output.read_text().splitlines()
  assert lines[0] == 'file,predicted_class,probability,cats,dogs,error'
  rows = [line.split(',') for line in lines[1:]]
  assert [os.path.basename(r[0]) for r in rows] == [
      *(f'dogs.{i}.png' for i in range(4)), 'broken.jpg', 'cats.1.png']
  assert rows[4][1:5] == ['', '', '', ''] and rows[4][5].startswith('UnidentifiedImageError')
  expected = fsv.load_run(workdir).predict(good)[0]
  assert [float(v) for v in rows[5][3:5]] == pytest.approx(expected, abs=1e-6)
  assert 'broken.jpg  not decoded: UnidentifiedImageError' in done.stdout
  assert '5 image(s) classified' in done.stdout


def test_evaluate_command_writes_the_report_and_names_wrong_classes(trained, image_root,
                                                                   tmp_path):
  workdir, _ = trained
  done = _command('evaluate', f'--workdir={workdir}', f'--data_dir={image_root}',
                  '--split=validation')
  assert done.returncode == 0, done.stderr[-3000:]
  folder = os.path.join(workdir, 'evaluation', 'data-validation')
  assert sorted(os.listdir(folder)) == ['confusion_matrix.png', 'metrics.json',
                                        'mistakes.csv', 'top_losses.png']
  metrics = json.loads(open(os.path.join(folder, 'metrics.json')).read())
  assert metrics['accuracy'] == json.loads(
      open(os.path.join(workdir, 'results.json')).read())['val_accuracy']
  assert 'weighted avg' in done.stdout

  (tmp_path / 'other' / 'cats').mkdir(parents=True)
  (tmp_path / 'other' / 'birds').mkdir()
  done = _command('evaluate', f'--workdir={workdir}', f'--data_dir={tmp_path / "other"}')
  assert done.returncode == 1 and 'Traceback' not in done.stderr
  assert done.stderr.strip().splitlines()[-1] == (
      f"error: {tmp_path / 'other'}: its classes differ from the run's ['cats', 'dogs']: "
      "missing ['dogs'], extra ['birds']")


def test_explain_command_writes_a_png_per_image_and_skips_bad_files(trained, image_root,
                                                                  tmp_path):
  workdir, _ = trained
  (tmp_path / 'broken.jpg').write_bytes(b'')
  done = _command('explain', f'--workdir={workdir}',
                  f'--images={image_root / "test" / "cats" / "cats.0.png"}',
                  str(tmp_path / 'broken.jpg'), f'--out={tmp_path / "cams"}',
                  '--class_name=dogs')
  assert done.returncode == 0, done.stderr[-3000:]
  assert os.listdir(tmp_path / 'cams') == ['0000_cats.0_gradcam.png']
  assert 'broken.jpg: empty file' in done.stdout and 'Grad-CAM of dogs' in done.stdout


@pytest.mark.parametrize('module,args', [
    ('predict', ['--images=x.jpg']),
    ('evaluate', ['--data_dir=.']),
    ('explain', ['--images=x.jpg', '--out=cams']),
])
def test_commands_on_a_missing_workdir_say_so_in_one_line(module, args, tmp_path):
  done = _command(module, f'--workdir={tmp_path / "none"}', *args)
  assert done.returncode == 1 and 'Traceback' not in done.stderr
  assert done.stderr.strip().splitlines()[-1] == f'error: {tmp_path / "none"}: no such workdir'


def test_a_finished_run_leaves_its_test_evaluation(trained):
  workdir, _ = trained
  folder = os.path.join(workdir, 'evaluation', 'test')
  assert sorted(os.listdir(folder)) == ['confusion_matrix.png', 'metrics.json',
                                        'mistakes.csv', 'top_losses.png']
  with open(os.path.join(folder, 'top_losses.png'), 'rb') as f:
    assert f.read(4) == b'\x89PNG'
