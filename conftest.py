"""Root pytest settings shared by tests/ and the notebooks in colab/.

Notebooks executed under pytest (nbmake) run at their tiny size: their parameters cell reads
``FNNJAX_TINY`` (the kernel inherits this process's environment).
"""

import os

os.environ.setdefault("FNNJAX_TINY", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
