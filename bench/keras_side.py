"""Keras 3's side: the recipe as Keras users run it, on the backend that
KERAS_BACKEND names (bench.worker sets it before this module is imported).

Training goes through `model.fit` and inference through `model.predict`, on
the same in-memory uint8 arrays as fsv, with Keras's compiled train and
predict functions (traced once by the warm-up, reused by every repetition).
`--keras_jit_compile` passes through to `compile` ('auto': Keras's own choice,
which is no XLA for TensorFlow on a CPU-only machine).
"""
from __future__ import annotations

import math
import os

import keras
# `tf.keras.preprocessing.image` since TF 2.16; it imports no TensorFlow.
from keras._tf_keras.keras.preprocessing.image import ImageDataGenerator

from bench import rows

JIT_COMPILE = {'auto': 'auto', 'true': True, 'false': False}


def _compile(model: keras.Model, settings: dict, **compile_args) -> keras.Model:
  model.compile(jit_compile=JIT_COMPILE[settings['keras_jit_compile']], **compile_args)
  return model


def _for_training(model: keras.Model, optimizer, settings: dict) -> keras.Model:
  return _compile(model, settings, optimizer=optimizer, loss='binary_crossentropy',
                  metrics=['accuracy'])


def _info(model: keras.Model) -> dict:
  return {'backend': keras.backend.backend(), 'jit_compile': model.jit_compile}


def _arrays(settings: dict):
  return rows.random_images(settings['batch_size'] * settings['steps'],
                            settings['image_size'], settings['seed'])


def convnet(settings: dict, dropout: float = 0.0, rescale: bool = True) -> keras.Model:
  """The book's convnet (listings 5.5 and 5.10) with RMSprop 1e-4."""
  layers = [keras.Input((settings['image_size'],) * 2 + (3,))]
  if rescale:  # in the model when no generator rescales the pixels
    layers.append(keras.layers.Rescaling(1 / 255))
  for filters in (32, 64, 128, 128):
    layers += [keras.layers.Conv2D(filters, 3, activation='relu'),
               keras.layers.MaxPooling2D(2)]
  layers.append(keras.layers.Flatten())
  if dropout:
    layers.append(keras.layers.Dropout(dropout))
  layers += [keras.layers.Dense(512, activation='relu'),
             keras.layers.Dense(1, activation='sigmoid')]
  return _for_training(keras.Sequential(layers), keras.optimizers.RMSprop(1e-4), settings)


def _vgg16(settings: dict):
  """(inputs, VGG16 conv base, features), with the caffe preprocessing in the
  model as fsv has it."""
  shape = (settings['image_size'],) * 2 + (3,)
  inputs = keras.Input(shape)
  base = keras.applications.VGG16(weights=None, include_top=False, input_shape=shape)
  return inputs, base, base(keras.applications.vgg16.preprocess_input(inputs))


def _image_data_generator() -> ImageDataGenerator:
  return ImageDataGenerator(rescale=1 / 255, **rows.AUGMENTATION)


def _augmentation_layers() -> list:
  """rows.AUGMENTATION with Keras 3's random layers, then the rescale."""
  a = rows.AUGMENTATION
  zoom = (-a['zoom_range'], a['zoom_range'])  # independent in x and y, as the generator's
  return [
      keras.layers.RandomRotation(a['rotation_range'] / 360, fill_mode=a['fill_mode']),
      keras.layers.RandomTranslation(a['height_shift_range'], a['width_shift_range'],
                                     fill_mode=a['fill_mode']),
      # The generator's shear is an angle in degrees, RandomShear's a slope.
      keras.layers.RandomShear(x_factor=math.sin(math.radians(a['shear_range'])),
                               fill_mode=a['fill_mode']),
      keras.layers.RandomZoom(zoom, zoom, fill_mode=a['fill_mode']),
      keras.layers.RandomFlip('horizontal'),
      keras.layers.Rescaling(1 / 255),
  ]


def _fit(model: keras.Model, images: int, *data, **fit_args) -> rows.Task:
  """One epoch of `model.fit` over `data` (`images` images) per repetition."""
  def run() -> int:
    model.fit(*data, epochs=1, verbose=0, **fit_args)
    return images
  return rows.Task(run, _info(model))


def convnet_train_step(settings: dict) -> rows.Task:
  images, labels = _arrays(settings)
  return _fit(convnet(settings), len(images), images, labels,
              batch_size=settings['batch_size'], shuffle=False)


def convnet_train_step_augmented_imagedatagenerator(settings: dict) -> rows.Task:
  """The book's way: `ImageDataGenerator.flow` feeding fit (scipy, per image)."""
  images, labels = _arrays(settings)
  flow = _image_data_generator().flow(images, labels, batch_size=settings['batch_size'])
  return _fit(convnet(settings, dropout=0.5, rescale=False), len(images), flow)


def convnet_train_step_augmented_layers(settings: dict) -> rows.Task:
  """Keras 3's random layers in a tf.data map, as Keras advises for CPU training.

  Not in the model: these layers do not support XLA, so with them Keras runs
  the JAX backend's train step op by op (`jit_compile` False).
  """
  import tensorflow as tf  # tf.data runs the layers on any backend

  images, labels = _arrays(settings)
  layers = _augmentation_layers()

  def augment(x, y):
    x = tf.cast(x, tf.float32)
    for layer in layers:
      x = layer(x, training=True)
    return x, y

  data = (tf.data.Dataset.from_tensor_slices((images, labels))
          .batch(settings['batch_size'])
          .map(augment, num_parallel_calls=tf.data.AUTOTUNE)
          .prefetch(tf.data.AUTOTUNE))
  return _fit(convnet(settings, dropout=0.5, rescale=False), len(images), data,
              shuffle=False)


def epoch_from_jpeg(settings: dict) -> rows.Task:
  """A new user's script: build and compile the model, `flow_from_directory`, fit."""
  train_dir = os.path.join(settings['data_dir'], 'train')
  size = settings['image_size']

  def run() -> int:
    model = convnet(settings, dropout=0.5, rescale=False)
    flow = _image_data_generator().flow_from_directory(
        train_dir, target_size=(size, size), batch_size=settings['batch_size'],
        class_mode='binary')
    model.fit(flow, epochs=1, verbose=0)
    return flow.samples

  # A fresh process would have nothing of the repetitions before.
  return rows.Task(run, _info(convnet(settings)), prepare=keras.backend.clear_session)


def vgg16_forward(settings: dict) -> rows.Task:
  images, _ = _arrays(settings)
  inputs, _, features = _vgg16(settings)
  model = _compile(keras.Model(inputs, features), settings)

  def run() -> int:
    model.predict(images, batch_size=settings['batch_size'], verbose=0)
    return len(images)

  return rows.Task(run, _info(model))


def vgg16_finetune_step(settings: dict) -> rows.Task:
  """Blocks 1-4 frozen; block5 and the blog's head train with SGD(1e-4, momentum 0.9)."""
  inputs, base, features = _vgg16(settings)
  for layer in base.layers:
    layer.trainable = layer.name.startswith('block5')
  x = keras.layers.Flatten()(features)
  x = keras.layers.Dense(256, activation='relu')(x)
  x = keras.layers.Dropout(0.5)(x)
  outputs = keras.layers.Dense(1, activation='sigmoid')(x)
  model = _for_training(keras.Model(inputs, outputs),
                        keras.optimizers.SGD(1e-4, momentum=0.9), settings)
  images, labels = _arrays(settings)
  return _fit(model, len(images), images, labels, batch_size=settings['batch_size'],
              shuffle=False)


TASKS = {
    'convnet_train_step': convnet_train_step,
    'convnet_train_step_augmented_imagedatagenerator':
        convnet_train_step_augmented_imagedatagenerator,
    'convnet_train_step_augmented_layers': convnet_train_step_augmented_layers,
    'epoch_from_jpeg': epoch_from_jpeg,
    'vgg16_forward': vgg16_forward,
    'vgg16_finetune_step': vgg16_finetune_step,
}
