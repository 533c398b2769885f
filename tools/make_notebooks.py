"""Writes colab/*.ipynb from the cell lists below (notebooks are generated so diffs stay readable).

Run ``python tools/make_notebooks.py`` after editing; CI executes the notebooks with nbmake.
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]

NOTEBOOKS = {}


def install_cell(extras: str) -> str:
    return f'''# Install fnnjax on Colab (elsewhere: `pip install -e ".[dev]"` once from a clone).
import subprocess
import sys

if "google.colab" in sys.modules:
    # Until fnnjax is on PyPI, set PIP_SOURCE to your clone: "git+https://github.com/<you>/fnnjax".
    PIP_SOURCE = "fnnjax"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", PIP_SOURCE + "[{extras}]"], check=True)'''


NOTEBOOKS["00_quickstart.ipynb"] = [
    new_markdown_cell(
        "# fnnjax quickstart\n\nTrain the FNN paper's dense baseline (2000-1500-1000-500, ReLU, 0.1 "
        "input dropout) and plot its learning curve. On Colab, pick a GPU runtime and set "
        "`DATASET = \"mnist\"` (downloaded by tfds); locally the bundled `digits` set needs nothing."
    ),
    new_code_cell(install_cell("cuda12,tfds")),
    new_code_cell(
        '''# parameters
import os

TINY = bool(os.environ.get("FNNJAX_TINY"))  # set by the test suite: a seconds-long run
DATASET = "digits"
MODEL = "dense"
EPOCHS = 2 if TINY else 20
BATCH_SIZE = 128''',
        metadata={"tags": ["parameters"]},
    ),
    new_code_cell(
        '''import jax
import matplotlib.pyplot as plt

import fnnjax
from fnnjax import train

print("devices:", jax.devices())
data = train.load_dataset(DATASET)
print(data.describe())
model = fnnjax.get_model(MODEL, data.num_classes, data.input_shape)
config = train.TrainConfig(epochs=EPOCHS, batch_size=BATCH_SIZE, optimizer="adam", learning_rate=1e-3)
result = train.fit(model, data, config)  # pass out_dir="runs/quickstart" to checkpoint and resume
print(f"test accuracy {result.summary['final_test_accuracy']:.2%} with {result.summary['num_params']:,} parameters")'''
    ),
    new_code_cell(
        '''epochs = [h["epoch"] for h in result.history]
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(epochs, [h["train_accuracy"] for h in result.history], label="train")
ax.plot(epochs, [h["test_accuracy"] for h in result.history], label="test")
ax.set(xlabel="epoch", ylabel="accuracy", title=f"{MODEL} on {DATASET}")
ax.legend()
plt.show()
assert result.history[-1]["test_accuracy"] > 0.5, "the baseline should learn digits quickly"'''
    ),
]


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        notebook = new_notebook(cells=cells)
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        notebook.metadata["accelerator"] = "GPU"
        path = ROOT / "colab" / name
        nbformat.write(notebook, path)
        print("wrote", path)


if __name__ == "__main__":
    main()
