"""Root pytest settings shared by tests/ and the notebooks in colab/.

Notebooks executed under pytest (nbmake) run at their tiny size: their parameters cell reads
``FNNJAX_TINY`` (the kernel inherits this process's environment), and they and the tests compile
without LLVM's optimization passes (``XLA_FLAGS``, unless set).
"""

import os

os.environ.setdefault("FNNJAX_TINY", "1")
# Tests run tiny computations whose cost is mostly XLA's compilation: without LLVM's optimization
# passes a CPU compile is faster and the suite about a fifth shorter. Set XLA_FLAGS to override.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
