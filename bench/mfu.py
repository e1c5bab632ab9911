r"""Model FLOPs utilisation of fsv's training step on the machine's first device.

  python -m bench.mfu --config=configs/finetune.py --batch_size=128 --dtype=bfloat16
  python -m bench.mfu --config=configs/scratch.py --batch_size=32 --peak_tflops=1.2 \
      --json=mfu.json

The step is bench.fsv_side's (fsv.fit's jitted step on in-memory random
images; VGG weights random). Model FLOPs are XLA's count (`cost_analysis`)
of the step lowered with XLA's own convolutions, so that an algorithm
that computes the same convolutions with fewer or more operations (the
Winograd ones fsv uses on CPU) does not change the model's figure. The
timed steps are dispatched back to back and waited for once, as a device
runs them when nothing waits on the host. MFU is the achieved FLOP/s over
the device's bfloat16 dense peak: `--peak_tflops`, or PEAK_BF16_TFLOPS by
device kind; float32 steps are quoted against the same peak, the one the
issue's goal names.
"""
from __future__ import annotations

import argparse
import time

import jax

from bench import fsv_side
from fsv import errors
from fsv import files

# Dense bfloat16 peaks (TFLOP/s) from the vendors' data sheets, by JAX's device_kind.
PEAK_BF16_TFLOPS = {
    'NVIDIA H100 80GB HBM3': 989.4,
    'NVIDIA H200': 989.4,
    'NVIDIA A100-SXM4-40GB': 312.0,
    'NVIDIA A100-SXM4-80GB': 312.0,
    'TPU v4': 275.0,
    'TPU v5 lite': 197.0,
}


def model_flops(config, settings: dict) -> float:
  """XLA's FLOP count of one training step of `config` at `settings`' batch,
  with XLA's own convolutions, counted on the step as lowered, before the
  device's compiler: on a GPU the compiled step's convolutions are cuDNN
  calls that XLA's count leaves out (an H200 counted 0.13% of VGG16's
  step)."""
  config = config.copy_and_resolve_references()
  if 'conv_algorithm' in config.model:
    config.model.conv_algorithm = 'xla'
  train_step, state, images, labels, _ = fsv_side.train_setup(config, dict(settings, steps=1))
  analysis = train_step.lower(state, images, labels, jax.random.PRNGKey(0)).cost_analysis()
  if isinstance(analysis, (list, tuple)):  # one per program in older JAX
    analysis = analysis[0]
  return float(analysis['flops'])


def measure(config_file: str, settings: dict, peak_tflops: float = 0.0) -> dict:
  """The figures of the training step of `config_file` (a shipped config's
  name or a path) at `settings` (batch_size, image_size, dtype, steps, seed)."""
  config = fsv_side.config_for(config_file, settings)
  flops = model_flops(config, settings)
  train_step, state, images, labels, batches = fsv_side.train_setup(config, settings)
  key = jax.random.PRNGKey(settings['seed'])
  state, _ = train_step(state, images[batches[0]], labels[batches[0]], key)  # compiles
  jax.block_until_ready(state)
  started = time.perf_counter()
  for i, batch in enumerate(batches):
    state, _ = train_step(state, images[batch], labels[batch], jax.random.fold_in(key, i))
  jax.block_until_ready(state)
  seconds = (time.perf_counter() - started) / len(batches)
  device = jax.devices()[0].device_kind
  peak = peak_tflops or PEAK_BF16_TFLOPS.get(device, 0.0)
  achieved = flops / seconds / 1e12
  return {'config': config_file, 'device': device, 'dtype': settings['dtype'],
          'batch_size': settings['batch_size'], 'image_size': settings['image_size'],
          'model_gflop_per_step': flops / 1e9, 'step_seconds': seconds,
          'images_per_s': settings['batch_size'] / seconds, 'achieved_tflops': achieved,
          'peak_tflops': peak or None, 'mfu': achieved / peak if peak else None}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', default='finetune', help='A config file, or a shipped '
                      "config's name.")
  parser.add_argument('--batch_size', type=int, default=32, help='Images per step.')
  parser.add_argument('--image_size', type=int, default=150, help='Square side in pixels.')
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16', 'float16'])
  parser.add_argument('--steps', type=int, default=10, help='Timed steps.')
  parser.add_argument('--peak_tflops', type=float, default=0.0,
                      help="The device's peak (default: PEAK_BF16_TFLOPS by device kind; "
                      'without either, no MFU).')
  parser.add_argument('--json', default='', help='Also write the figures there.')
  args = parser.parse_args(argv)
  for name in ('batch_size', 'image_size', 'steps'):
    if getattr(args, name) < 1:
      parser.error(f'--{name} must be at least 1')
  settings = {'batch_size': args.batch_size, 'image_size': args.image_size,
              'dtype': args.dtype, 'steps': args.steps, 'seed': 0}
  try:
    figures = measure(args.config, settings, args.peak_tflops)
  except errors.ConfigError as e:
    parser.error(str(e))
  mfu = f'{figures["mfu"]:.1%}' if figures['mfu'] is not None else 'unknown peak'
  print(f'{figures["device"]} {figures["dtype"]} batch {figures["batch_size"]}: '
        f'{figures["model_gflop_per_step"]:.1f} GFLOP a step, {figures["images_per_s"]:.1f} '
        f'images/s, {figures["achieved_tflops"]:.2f} TFLOP/s, MFU {mfu}')
  if args.json:
    files.write_json(args.json, figures)


if __name__ == '__main__':
  main()
