"""Sweeps: one config run as many members, then summarised honestly.

A sweep is a list of members, each a dict of config overrides by flat key
('seed', 'train.learning_rate'). It comes from axes (every combination of
their values) or from a list; a config file may define `get_sweep(arg)`
returning either, and the command line adds axes (`--sweep.seed=0:5`).
Each member is an ordinary run in `DIR/<member name>/`: resumable, loadable,
skipped once finished. Members that differ only in a replicate axis
(`REPLICATE_AXES`: the seed, the fold) form one setting; `summarize` writes
`DIR/summary.json`, `summary.md` and `summary.png`: per setting, mean,
standard deviation and 95% interval of test and validation accuracy and
loss; per pair of settings, a paired test on the test images
(fsv/statistics.py). `compare` does the same across finished sweeps, for
settings that differ by more than overrides (two config files).
"""
from __future__ import annotations

import ast
import difflib
import itertools
import os
import re
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from absl import logging
import ml_collections
import numpy as np

from fsv import config as config_lib
from fsv import ensemble
from fsv import files
from fsv import loop as loop_lib
from fsv import plots
from fsv import progress
from fsv import statistics
from fsv.errors import ConfigError, WorkdirError

REPLICATE_AXES = ('seed', 'data.fold')
METRICS = ('test_accuracy', 'val_accuracy', 'test_loss', 'val_loss')
Sweep = Union[Mapping[str, Sequence[Any]], Sequence[Mapping[str, Any]]]


def members(sweep: Sweep) -> list[dict]:
  """The members of axes (their product, in the order given) or of a list."""
  if isinstance(sweep, Mapping):
    keys = list(sweep)
    return [dict(zip(keys, values)) for values in itertools.product(
        *(list(sweep[key]) for key in keys))]
  return [dict(member) for member in sweep]


def combine(file_sweep: Optional[Sweep], axes: Mapping[str, Sequence[Any]]) -> list[dict]:
  """A config file's sweep with the command line's axes: an axis the file
  also sweeps takes the command line's values; other axes multiply, except
  that replicates replace replicates (folds given, the file's seeds go)."""
  base = members(file_sweep) if file_sweep else [{}]
  extra = members(axes) if axes else [{}]
  replaced = set(axes) | (set(REPLICATE_AXES) if set(axes) & set(REPLICATE_AXES) else set())
  combined = []
  for member, more in itertools.product(base, extra):
    merged = {k: v for k, v in member.items() if k not in replaced}
    merged.update(more)
    if merged not in combined:
      combined.append(merged)
  return combined


def parse_values(text: str) -> list:
  """'0:5' -> [0, 1, 2, 3, 4]; '1e-4,3e-4' -> [0.0001, 0.0003]; words stay words."""
  if re.fullmatch(r'-?\d+:-?\d+', text):
    start, stop = map(int, text.split(':'))
    return list(range(start, stop))
  values = []
  for part in text.split(','):
    try:
      values.append(ast.literal_eval(part))
    except (ValueError, SyntaxError):
      values.append(part)
  return values


def member_name(overrides: Mapping[str, Any]) -> str:
  """A folder name that says what the member is: 'seed=3', 'train.learning_rate=0.001,seed=0'."""
  if not overrides:
    return 'base'
  text = ','.join(f'{key}={value}' for key, value in sorted(overrides.items()))
  return re.sub(r'[^\w.,=+-]', '_', text)


def member_config(config, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  full = config_lib.validate(config)
  known = list(config_lib.flat(full.to_dict()))
  for key in overrides:
    if key not in known:
      close = difflib.get_close_matches(key, known, n=1)
      raise ConfigError(f'sweep axis {key!r} is not a config key'
                        + (f' (did you mean {close[0]!r}?)' if close else ''))
  try:
    full.update_from_flattened_dict(dict(overrides))
  except (KeyError, AttributeError, TypeError, ValueError) as e:
    raise ConfigError(f'sweep member {dict(overrides)}: {e}') from None
  return config_lib.validate(full)


def _finished(workdir: str) -> bool:
  return files.as_path(os.path.join(workdir, 'results.json')).exists()


def run(config, sweep: Sweep, workdir: str, together: bool = False, **fit_kwargs) -> dict:
  """Fits every member not yet finished, then writes and returns the summary.

  With `together`, members that can (fsv/members.py: they differ only in
  seed and learning rates and train one phase) train together in one
  vmapped step; the others, and those resuming after different epochs, one
  after another. `fit_kwargs` go to `fit` (e.g. a `dataset`).
  """
  from fsv import members as members_lib  # imports the training code: only a run needs it
  from fsv.phases import fit
  all_members = members(sweep)
  configs = [member_config(config, m) for m in all_members]  # every mistake first
  pending = [(m, c) for m, c in zip(all_members, configs)
             if not _finished(os.path.join(workdir, member_name(m)))]
  progress.report(f'sweep: {len(all_members) - len(pending)} of {len(all_members)} members '
                  'finished already')
  groups = _groups(pending, members_lib.cannot_train_together) if together else [
      [p] for p in pending]
  for group in groups:
    paths = [os.path.join(workdir, member_name(m)) for m, _ in group]
    progress.report(f'sweep: {", ".join(member_name(m) for m, _ in group)}'
                    + (' (together)' if len(group) > 1 else ''))
    if len(group) > 1:
      try:
        members_lib.fit_members([c for _, c in group], paths, **fit_kwargs)
        continue
      except loop_lib.UnevenMembers as e:
        logging.warning('sweep: these members %s; training them one after another', e)
    for (_, member), path in zip(group, paths):
      fit(member, workdir=path, **fit_kwargs)
  return summarize(workdir, all_members)


def _groups(pending: list, cannot_train_together: Callable) -> list[list]:
  """`pending` (member, config) pairs grouped with the members they can train with."""
  groups: list[list] = []
  for item in pending:
    for group in groups:
      if not cannot_train_together([group[0][1], item[1]]):
        group.append(item)
        break
    else:
      groups.append([item])
  return groups


def _setting(overrides: Mapping[str, Any]) -> str:
  fixed = {k: v for k, v in overrides.items() if k not in REPLICATE_AXES}
  return member_name(fixed) if fixed else 'all'


def _settings(workdir: str, members_and_settings: Sequence[tuple[str, str]],
              prefix: str = '') -> dict[str, dict]:
  """Each setting's member names, results and per-test-image correctness,
  from (member folder name, setting name) pairs."""
  settings: dict[str, dict] = {}
  for member, setting_name in members_and_settings:
    path = os.path.join(workdir, member)
    if not _finished(path):
      raise WorkdirError(f'{path}: this sweep member has not finished; run the sweep again')
    setting = settings.setdefault(prefix + setting_name, {
        'members': [], 'results': [], 'correct': [], 'files': None})
    setting['members'].append(member)
    setting['results'].append(files.read_json(os.path.join(path, 'results.json')))
    predictions = ensemble.load(path)
    setting['correct'].append(
        predictions['test/probabilities'].argmax(-1) == predictions['test/labels'])
    if setting['files'] is None:
      setting['files'] = predictions['test/files']
  return settings


def _summary(settings: Mapping[str, dict]) -> dict:
  summary = {'settings': {}, 'comparisons': [], 'replicate_axes': list(REPLICATE_AXES)}
  for name, setting in settings.items():
    summary['settings'][name] = {'members': setting['members'], **{
        metric: statistics.interval([r[metric] for r in setting['results']])
        for metric in METRICS if all(metric in r for r in setting['results'])}}
  for a, b in itertools.combinations(list(settings), 2):
    if not np.array_equal(settings[a]['files'], settings[b]['files']):
      logging.warning('settings %s and %s were tested on different images; not compared', a, b)
      continue
    summary['comparisons'].append({'a': a, 'b': b, **statistics.paired(
        np.stack(settings[a]['correct']), np.stack(settings[b]['correct']))})
  return summary


def _write(folder: str, summary: dict) -> None:
  files.write_json(os.path.join(folder, 'summary.json'), summary)
  files.write_bytes(os.path.join(folder, 'summary.md'), markdown(summary).encode())
  plots.save(plots.sweep(summary['settings']), os.path.join(folder, 'summary.png'))


def summarize(workdir: str, all_members: Sequence[Mapping[str, Any]]) -> dict:
  """summary.json, summary.md and summary.png of the finished members."""
  summary = _summary(_settings(workdir, [(member_name(m), _setting(m)) for m in all_members]))
  _write(workdir, summary)
  return summary


def compare(sweep_dirs: Sequence[str], out: Optional[str] = None) -> dict:
  """The settings of several finished sweeps (e.g. one per config file) side
  by side, with paired tests between every two on their shared test images;
  written to `out` as summary.{json,md,png} when given."""
  settings: dict[str, dict] = {}
  for folder in sweep_dirs:
    path = os.path.join(folder, 'summary.json')
    if not files.as_path(path).exists():
      raise WorkdirError(f'{folder}: no summary.json; run its sweep to the end first')
    pairs = [(member, name) for name, setting in files.read_json(path)['settings'].items()
             for member in setting['members']]
    settings.update(_settings(folder, pairs, os.path.basename(os.path.normpath(folder)) + '/'))
  summary = _summary(settings)
  if out:
    os.makedirs(out, exist_ok=True)
    _write(out, summary)
  return summary


def _cell(stat: Optional[dict], percent: bool) -> str:
  if not stat:
    return ''
  scale, unit = (100, '%') if percent else (1, '')
  text = f'{stat["mean"] * scale:.2f}{unit}'
  if stat['std'] is not None:
    low, high = (v * scale for v in stat['ci95'])
    text += f' ± {stat["std"] * scale:.2f} [{low:.2f}, {high:.2f}]'
  return text


def _p_value(p: float) -> str:
  # A bootstrap p of 0 only says no resample crossed 0: less than 1 in BOOTSTRAP.
  return f'< {1 / statistics.BOOTSTRAP:g}' if p == 0 else f'{p:.3f}'


def markdown(summary: dict) -> str:
  """The summary as the tables the README shows."""
  lines = ['| setting | n | test accuracy | validation accuracy | test loss |',
           '|---|---|---|---|---|']
  for name, setting in summary['settings'].items():
    lines.append(f'| {name} | {len(setting["members"])} | '
                 f'{_cell(setting.get("test_accuracy"), True)} | '
                 f'{_cell(setting.get("val_accuracy"), True)} | '
                 f'{_cell(setting.get("test_loss"), False)} |')
  lines += ['', 'mean ± standard deviation [95% interval of the mean] over the members '
            f'(replicates: {", ".join(summary["replicate_axes"])}).']
  if summary['comparisons']:
    lines += ['', '| a | b | test accuracy a - b | 95% interval | p | distinguishable |',
              '|---|---|---|---|---|---|']
    for c in summary['comparisons']:
      low, high = c['ci95']
      lines.append(f'| {c["a"]} | {c["b"]} | {c["difference"] * 100:+.2f} points | '
                   f'[{low * 100:+.2f}, {high * 100:+.2f}] | {_p_value(c["p_value"])} | '
                   f'{"yes" if c["distinguishable"] else "no"} |')
    lines += ['', 'Paired bootstrap over the test images of the per-image correctness '
              'averaged over each setting\'s members; distinguishable when the 95% '
              'interval excludes 0.']
  return '\n'.join(lines) + '\n'
