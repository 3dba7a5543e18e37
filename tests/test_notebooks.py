"""The notebooks run: each `notebooks/*.ipynb` executes top to bottom without a cell error, in a kernel on this
test's own interpreter (so it imports the environment under test) with the notebooks directory as its working
directory, and leaves nothing behind there. Committed notebooks carry no outputs and no execution counts.

Each notebook forces the CPU and fp32 itself and is sized to run in well under a minute on 2 CPU cores.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300


def kernel_manager(tmp_path: Path):
    """A kernel manager whose only `python3` kernelspec runs `sys.executable`: neither a `python` on PATH nor a
    kernelspec installed elsewhere (user, system, another venv) can substitute another environment."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    spec_dir = tmp_path / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (rl_dlm tests)", "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir.parent)], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)


def execute(nb, tmp_path: Path):
    """Runs every cell in a fresh kernel, cwd = notebooks/; raises CellExecutionError on the first error."""
    from nbclient import NotebookClient

    client = NotebookClient(nb, km=kernel_manager(tmp_path), timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()
    return nb


def stream_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4, [p.name for p in NOTEBOOKS]


def test_kernel_runs_this_interpreter_in_the_notebooks_directory(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os, sys; print(sys.prefix); print(os.getcwd())")])
    prefix, cwd = stream_text(execute(nb, tmp_path).cells[0]).split("\n")[:2]
    assert Path(prefix).resolve() == Path(sys.prefix).resolve()
    assert Path(cwd).resolve() == NOTEBOOK_DIR.resolve()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_stripped(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, (f"{path.name}: code cells {dirty} carry outputs or execution counts; clear them before "
                       f"committing (jupyter nbconvert --clear-output --inplace {path.relative_to(ROOT)})")
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernelspec must be python3"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    before = sorted(p.relative_to(NOTEBOOK_DIR) for p in NOTEBOOK_DIR.rglob("*"))
    start = time.perf_counter()
    execute(nb, tmp_path)
    seconds = time.perf_counter() - start
    print(f"{path.name}: executed in {seconds:.1f} s")
    after = sorted(p.relative_to(NOTEBOOK_DIR) for p in NOTEBOOK_DIR.rglob("*"))
    assert after == before, f"{path.name} wrote into notebooks/: {sorted(set(after) - set(before))}"
    errors = [o for cell in nb.cells for o in cell.get("outputs", []) if o.output_type == "error"]
    assert not errors
