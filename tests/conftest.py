"""Test-wide settings: CPU only, with 8 simulated devices for the multi-device tests.

These must be set before JAX initializes its backends, i.e. before any test imports jax.

Compiled executables are kept in a persistent XLA compilation cache in pytest's cache folder
(``.pytest_cache/d/jax-compilation-cache``, git-ignored; ``pytest --cache-clear`` empties it), so a
rerun skips most compiles, and within one session a computation compiled again by a new ``jax.jit``
(each experiment run builds its own) is loaded instead. An explicit ``JAX_COMPILATION_CACHE_DIR``
wins; ``-p no:cacheprovider`` turns it off. The cache key covers the computation, the compile
options, the devices and the jax/XLA versions, so a hit is the executable a compile would give.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["MPLBACKEND"] = "Agg"

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)


def pytest_configure(config):
    cache = getattr(config, "cache", None)
    if cache is None or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    jax.config.update("jax_compilation_cache_dir", str(cache.mkdir("jax-compilation-cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.3)
