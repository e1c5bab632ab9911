"""The XLA compilation cache that `import fsv` turns on (fsv/compile_cache.py)."""
import os
import pathlib
import subprocess
import sys
import textwrap

from fsv import compile_cache


def test_the_users_own_cache_or_opting_out_turns_it_off():
  assert compile_cache.folder({}, '/their/cache') is None
  assert compile_cache.folder({'FSV_COMPILATION_CACHE': '0'}, None) is None
  assert compile_cache.folder({'FSV_COMPILATION_CACHE': '1'}, None) is not None


def test_one_folder_per_cpu_under_the_cache_root(tmp_path, monkeypatch):
  here = compile_cache.folder({'FSV_CACHE_DIR': str(tmp_path)}, None)
  assert here.parent == tmp_path / 'xla'
  # Programs XLA compiled for another instruction set must not be read here.
  monkeypatch.setattr(compile_cache, '_cpu_description',
                      lambda: 'model name\t: another CPU\nflags\t\t: fpu sse2')
  elsewhere = compile_cache.folder({'FSV_CACHE_DIR': str(tmp_path)}, None)
  assert elsewhere.parent == here.parent and elsewhere != here


def test_a_program_traced_again_is_read_back_not_compiled(tmp_path):
  """In a fresh process, as a user's: after `import fsv`, a new jitted function
  with an earlier one's computation (each `fsv.fit`'s train step) is read
  from the cache; a cache folder that cannot be made leaves it off in one line."""
  script = textwrap.dedent('''
      import jax, jax.numpy as jnp
      from jax import monitoring
      import fsv
      hits = []
      monitoring.register_event_listener(
          lambda event, **_: hits.append(event) if event.endswith('/cache_hits') else None)
      jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
      x = jnp.ones((8, 8))
      for _ in range(2):
        def step(x):
          return jnp.tanh(x @ x.T).sum()
        jax.jit(step)(x)
      print(jax.config.jax_compilation_cache_dir, len(hits))
  ''')
  env = {k: v for k, v in os.environ.items() if not k.startswith('JAX_')}

  def run(cache_root):
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                            env=dict(env, FSV_CACHE_DIR=str(cache_root)), check=True)
    return result.stdout.split(), result.stderr

  (folder, hits), _ = run(tmp_path)
  assert pathlib.Path(folder).parent == tmp_path / 'xla' and int(hits) == 1
  assert any(name.startswith('jit_step-') for name in os.listdir(folder))

  (tmp_path / 'file').touch()
  (folder, hits), stderr = run(tmp_path / 'file')
  assert (folder, hits) == ('None', '0')
  assert 'XLA compilation cache off: cannot create' in stderr
  assert 'Traceback' not in stderr and 'UserWarning' not in stderr
