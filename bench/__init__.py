"""Side-by-side speed benchmark: fsv against the Keras recipe it descends from.

  python -m bench.run --json=bench.json [--rows=1,2] [--reps=5] [--warmup=1]
      [--peers=keras-tf,keras-jax,torch,torch-compile]

Rows (bench/rows.py): the book's convnet train step without and with
augmentation (ImageDataGenerator, and Keras 3's random layers), one epoch
from JPEG files, VGG16 forward, VGG16 fine-tuning step. The peer is Keras 3
on TensorFlow, the framework the recipe was written for; Keras 3 on JAX is
shown beside it, and on request PyTorch, eager and through `torch.compile`,
for the convnet rows (1, 2b, 3; a row a side lacks has None for its
figures). The method, and why:

* Each side of a row runs in a fresh worker process (bench/worker.py): Keras
  fixes its backend per process, no side's imports, allocator settings or
  caches touch another's, and each process's peak RSS (VmHWM) is that side's
  memory for that row alone.
* All of a row's workers are set up first (model, data, optimizer); then
  `--warmup` untimed repetitions (tracing, compiling, first-touch memory,
  the page cache of the JPEGs) and `--reps` timed ones.
* Repetitions alternate between the sides, in an order rotated every
  repetition, so that drifts of a shared machine (other load, heat, memory
  pressure) fall on every side alike instead of on whichever ran last.
* Each side reports the median of its repetitions' images/s
  (`fsv_images_per_s`, `keras_tf_images_per_s`, `torch_images_per_s`, ...),
  robust to the odd slow repetition; `ratio_keras_tf` is fsv's median over
  Keras-TensorFlow's, and `ratio_keras_jax`, `ratio_torch` and
  `ratio_torch_compile` over the other peers'.
* One timing loop (`bench.worker.repetition`) times every side: the clock
  runs around one repetition inside the worker, which returns only once its
  results exist, so process start and the protocol are never timed.

Only the workers import fsv, JAX, TensorFlow, Keras or torch: `import bench`
and the fsv side need none of the peers' packages (`pip install -e '.[bench]'`
for Keras, `pip install -e '.[bench-torch]'` for torch).
"""
