r"""Builds a balanced train/validation/test folder from a full dataset.

  python -m experiments.make_split --src=kaggle/train --dst=data/cats_vs_dogs_small \
      --seed=0 --per_class=1000,500,500 [--link]

SRC is either SRC/<class>/<images> or Kaggle's flat SRC/cat.123.jpg.
"""
from absl import app
from absl import flags
from absl import logging

from fsv import cli
from fsv import data

_SRC = flags.DEFINE_string('src', None, 'The full dataset.')
_DST = flags.DEFINE_string('dst', None, 'A missing or empty folder to write into.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the random draw.')
_PER_CLASS = flags.DEFINE_list('per_class', ['1000', '500', '500'],
                               'Images per class for train,validation,test.')
_LINK = flags.DEFINE_bool('link', False,
                          'Symlink to the source files instead of copying them.')
flags.mark_flags_as_required(['src', 'dst'])
flags.register_validator(
    'per_class', lambda v: len(v) == 3 and all(c.isdigit() for c in v),
    message='--per_class takes three counts: train,validation,test')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  per_class = dict(zip(('train', 'validation', 'test'), map(int, _PER_CLASS.value)))
  summary = data.make_split(_SRC.value, _DST.value, per_class, seed=_SEED.value,
                            link=_LINK.value)
  for split, counts in summary.items():
    logging.info('%s: %s', split, counts)


if __name__ == '__main__':
  cli.run(main)
