"""Every notebook in colabs/ runs under Jupyter from its own folder.

Each is executed cell by cell by nbclient with the `python3` kernel of this
interpreter, with `colabs/` as its working directory (as Jupyter runs it)
and `CRL_COLAB_FAST=1` (its toy-size mode), so the test needs nbclient and
ipykernel (the `test` and `notebook` extras) but no Jupyter server.
"""

import glob
import os

import pytest

from tests import helpers

NOTEBOOKS = sorted(glob.glob(os.path.join(helpers.ROOT, "colabs", "*.ipynb")))


def _outputs(nb, kinds=("stream",)) -> str:
  return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                 for o in c.outputs if o.output_type in kinds)


def test_repository_path_does_not_depend_on_the_working_directory(
    tmp_path, monkeypatch):
  import crl  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  assert crl.repository_path("configs", "nac.py") == os.path.join(
      helpers.ROOT, "configs", "nac.py")


def test_there_is_a_circuits_notebook():
  assert any(p.endswith("nac_circuits.ipynb") for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_is_valid_with_cell_ids(path):
  nbformat = pytest.importorskip("nbformat")
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  assert (nb.nbformat, nb.nbformat_minor) >= (4, 5)
  ids = [c.get("id") for c in nb.cells]
  assert all(ids) and len(set(ids)) == len(ids)
  assert not any(c.get("outputs") for c in nb.cells), "commit it without outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_from_its_folder_in_fast_mode(path, tmp_path,
                                                     monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  pytest.importorskip("ipykernel")
  for key, value in helpers.subprocess_env().items():
    monkeypatch.setenv(key, value)  # the kernel inherits this environment
  monkeypatch.setenv("CRL_COLAB_FAST", "1")
  monkeypatch.setenv("CRL_COLAB_WORKDIR", str(tmp_path / "w"))
  nb = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(
      nb, timeout=300, kernel_name="python3",
      resources={"metadata": {"path": os.path.dirname(path)}})
  client.execute()  # raises CellExecutionError naming the failing cell
  text = _outputs(nb)
  assert "fast mode" in text and "colabs" not in text.split("repository:")[1]
  assert "step 3/3 | loss" in text  # progress shows in the notebook
  assert "speed-up" in text
  assert os.path.exists(tmp_path / "w" / "analysis" / "circuit_graph.png")
  images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if "image/png" in o.get("data", {})]
  assert len(images) == 2
