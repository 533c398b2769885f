"""Test-wide settings: CPU only, with 8 simulated devices for the multi-device tests.

These must be set before JAX initializes its backends, i.e. before any test imports jax.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "")
os.environ["MPLBACKEND"] = "Agg"

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
