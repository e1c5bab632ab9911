"""On-device augmentation: a list of typed ops, applied inside the jitted train step.

`config.augment.ops` names the ops, e.g.
'keras|colour_jitter(brightness=0.4)|random_erasing(p=0.25)|mixup(alpha=0.2)';
`pipeline(config.augment)` parses it (fsv/augment/ops.py) and `apply`
runs it on a batch. One concern per module:

  keras.py     the `keras` op, Keras ImageDataGenerator's random_transform
               (AugmentConfig; the default ops='keras' is the augmentation
               fsv always had, to the bit)
  flips.py     flip_lr, flip_ud
  colour.py    colour_jitter and the colour functions (torchvision semantics)
  policies.py  randaugment, trivialaugment (torchvision's op sets)
  erasing.py   random_erasing
  mixing.py    mixup, cutmix: the ops that mix labels too
  base.py      what op records share (typed, range-checked arguments)

Every op works on 0..255 pixels, before the rescale, and is a pure function
of (batch, key, op): the i-th image's draws depend only on the key and i, so
a batch split over devices is augmented exactly as on one. An op whose
strength is 0 (p=0, alpha=0, every jitter 0, num_ops=0) is skipped, so it is
exactly the identity.

Labels: with a mixup or cutmix op the targets are mixtures of two one-hot
labels, and the train step's loss is the cross-entropy against them. Train
accuracy is then defined as agreement of the prediction with the dominant
(largest-weight) label of the mixed target (`dominant_label`), the class
most of the input shows; validation and test batches are never mixed.
"""
from fsv.augment.base import ImageOp
from fsv.augment.base import Op
from fsv.augment.keras import _affine_matrices
from fsv.augment.keras import _fill_index
from fsv.augment.keras import _random_flip
from fsv.augment.keras import _warp
from fsv.augment.keras import AugmentConfig
from fsv.augment.keras import apply_brightness_shift
from fsv.augment.keras import apply_channel_shift
from fsv.augment.keras import preprocess
from fsv.augment.keras import random_transform
from fsv.augment.keras import transform
from fsv.augment.mixing import dominant_label
from fsv.augment.ops import apply
from fsv.augment.ops import as_pipeline
from fsv.augment.ops import KERAS_KEYS
from fsv.augment.ops import OPS
from fsv.augment.ops import parse
from fsv.augment.ops import Pipeline
from fsv.augment.ops import pipeline
