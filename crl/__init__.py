"""crl: a JAX/Flax codebase for causal-representation learning."""

import os

__version__ = "0.1.0"


def repository_path(*parts: str) -> str:
  """A path inside the repository `crl` comes from (`configs/nac.py`, ...).

  The repository is the folder above this package when it has `configs/`
  (a checkout, `pip install -e .`, Colab's clone), else the first folder
  with `configs/` from the working directory up; so notebooks and scripts
  find configs whatever folder they run in. Raises `FileNotFoundError`
  when neither exists (a wheel install without a checkout).
  """
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  candidates = [here]
  folder = os.path.abspath(os.getcwd())
  while True:
    candidates.append(folder)
    parent = os.path.dirname(folder)
    if parent == folder:
      break
    folder = parent
  for root in candidates:
    if os.path.isdir(os.path.join(root, "configs")):
      return os.path.join(root, *parts)
  raise FileNotFoundError(
      "No crl repository (a folder with configs/) next to the installed "
      f"package ({here}) or above {os.getcwd()}; clone the repository and "
      "`pip install -e .` there.")
