"""The analysis notebook and the README's Python, executed on a short real Fashion-MNIST run."""

import json
import re

import nbformat
import numpy as np
import pytest
from conftest import REPO, shared_dataset_dir, tiny_config
from nbclient import NotebookClient
from PIL import Image

import dcgan_jax

NOTEBOOK = REPO / "notebooks" / "analysis.ipynb"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A folder with ``runs/fashion_dcgan``, as after ``launch.py --experiment=fashion_dcgan``, of a
    tiny model trained for 6 steps on the real Fashion-MNIST (checkpoints at steps 3 and 6)."""
    folder = shared_dataset_dir("fashion_mnist")
    root = tmp_path_factory.mktemp("project")
    config = tiny_config()
    config.dataset.update(name="fashion_mnist", data_dir=str(folder))
    dcgan_jax.train(config, root / "runs" / "fashion_dcgan")
    return root


def test_the_committed_notebook_has_no_outputs():
    notebook = json.loads(NOTEBOOK.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code and all(not cell["outputs"] and cell["execution_count"] is None for cell in code)


def test_the_analysis_notebook_executes_on_a_real_run(project, monkeypatch):
    run_dir = project / "runs" / "fashion_dcgan"
    monkeypatch.setenv("DCGAN_JAX_RUN", str(run_dir))  # The kernel inherits the environment.
    monkeypatch.setenv("DCGAN_JAX_NOTEBOOK_EVAL_SAMPLES", "1000")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    ).execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    text = "".join(out.get("text", "") for out in outputs)
    assert "step 6, EMA weights: False, classes: none (unconditional)" in text
    assert "(64, 28, 28, 1) float32" in text and "(8, 28, 28, 1)" in text
    fid = float(re.search(r"^\s+fid (\S+)$", text, re.M).group(1))
    assert np.isfinite(fid) and fid > 0 and re.search(r"classes_covered \d", text)
    pictures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(pictures) >= 8  # Grids, strips, both neighbour pictures, progress, curves.
    written = {p.name for p in (run_dir / "analysis").iterdir()}
    assert {
        "training_grid_step6.png",
        "nearest_feature_step6_seed0.png",
        "diversity.png",
    } <= written


def test_every_python_snippet_of_the_readme_runs(project, monkeypatch):
    snippets = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert snippets
    monkeypatch.chdir(project)  # The snippets' paths are relative to the repository's root.
    for snippet in snippets:
        namespace = {}
        exec(compile(snippet, "README.md", "exec"), namespace)
    # What the main snippet's comments promise.
    run, samples = namespace["run"], namespace["samples"]
    assert samples.shape == (64, 28, 28, 1) and samples.dtype == np.float32
    assert samples.min() >= -1 and samples.max() <= 1
    grid = np.asarray(Image.open(project / "grid.png"))
    training = np.asarray(
        Image.open(project / "runs" / "fashion_dcgan" / "samples" / f"step_{run.step:07d}.png")
    )
    np.testing.assert_array_equal(grid, training)
