"""The README's result tables match what the committed results files render."""

import json

import pytest

from crl.reports import readme


def test_readme_matches_committed_results():
  text = (readme.REPO / "README.md").read_text()
  assert readme.BLOCK.search(text), "README.md has no rendered results block"
  assert readme.render(text) == text, (
      "README.md is stale: run `python -m crl.reports.readme`")


def _write_run(root, run, results, command="python -m crl.main ..."):
  (root / run).mkdir(parents=True)
  (root / run / "results.json").write_text(json.dumps(results))
  (root / run / "run.json").write_text(json.dumps(dict(
      command=command, date="2026-12-05", machine="2-core CPU",
      load="quiet", wall="1m00s")))


def _nac_results(accuracy):
  row = dict(accuracy=accuracy, nll=0.5, ece=0.05)
  res = {d: dict(row) for d in readme.NAC_DISTRIBUTIONS}
  res["novel_classes"] = dict(ood_auroc_msp=0.75)
  return dict(results=res)


def test_a_changed_results_file_changes_the_rendered_table(tmp_path):
  _write_run(tmp_path, "nac", _nac_results(0.9))
  text = "intro\n<!-- results: nac_default -->\nold\n<!-- /results -->\nend\n"
  first = readme.render(text, tmp_path)
  assert "| test (in distribution) | 0.9000 | 0.500 | 0.050 |" in first
  assert first.startswith("intro\n") and first.endswith("end\n")
  assert readme.render(first, tmp_path) == first  # idempotent
  (tmp_path / "nac" / "results.json").write_text(
      json.dumps(_nac_results(0.8)))
  assert "| test (in distribution) | 0.8000 |" in readme.render(first, tmp_path)


def test_comparison_has_one_column_per_committed_run(tmp_path):
  _write_run(tmp_path, "nac", _nac_results(0.9))
  _write_run(tmp_path, "vit", _nac_results(0.7))
  text = "<!-- results: comparison -->\n<!-- /results -->\n"
  out = readme.render(text, tmp_path)
  assert "| distribution | NAC | ViT |" in out
  assert "| test (ID) | 0.9000 | 0.7000 |" in out


def test_unknown_block_and_missing_provenance_are_named(tmp_path):
  with pytest.raises(KeyError, match="no renderer"):
    readme.render("<!-- results: nope -->\n<!-- /results -->\n", tmp_path)
  (tmp_path / "nac").mkdir()
  (tmp_path / "nac" / "results.json").write_text(
      json.dumps(_nac_results(0.9)))
  with pytest.raises(FileNotFoundError, match="run.json"):
    readme.render("<!-- results: nac_default -->\n<!-- /results -->\n",
                  tmp_path)
