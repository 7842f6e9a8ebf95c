"""Every bad input: one `crl: error:` line, exit code 2, nothing written.

One line: the message is a single `crl: error:` line (log records of the
libraries may precede it) and there is no traceback.

The cases run in ONE subprocess that calls `crl.main`'s flag parser and
`main` in turn, each in a child forked after the imports (TensorFlow
included), so that no case pays them (a subprocess per case would cost
5-10 s of imports each, 30 s under load).
"""

import json
import os
import socket
import textwrap

import pytest

from crl import config_lib
from tests import helpers

TINY = "--config=configs/nac.py:tiny"
TFDS = "--config=configs/nac.py:tfds"
OOD = "--config=configs/ood_suite.py:tiny"


def _files(root):
  return sorted(os.path.relpath(os.path.join(r, f), root)
                for r, _, fs in os.walk(root) for f in fs)


def _setup(tmp):
  """Files the cases point at; returns {name: path}."""
  p = {k: str(tmp / k) for k in (
      "syntax.py", "noget.py", "nameerror.py", "afile", "w", "emptytfds",
      "busy", "previous", "brokenonly", "badjson", "listjson", "norun",
      "nockpt", "notclassif", "noimages", "resnetrun")}
  with open(p["syntax.py"], "w") as f:
    f.write("def get_config(:\n")
  with open(p["noget.py"], "w") as f:
    f.write("X = 1\n")
  with open(p["nameerror.py"], "w") as f:
    f.write("def get_config(arg=None):\n  return undefined_name\n")
  with open(p["afile"], "w") as f:
    f.write("x")
  os.makedirs(p["emptytfds"])
  os.makedirs(p["busy"])
  with open(os.path.join(p["busy"], "run.lock"), "w") as f:
    json.dump({"pid": os.getpid(), "host": socket.gethostname(),
               "started": "now"}, f)
  tiny = config_lib.to_plain(helpers.tiny_config())
  for name in ("previous", "brokenonly", "nockpt", "notclassif"):
    os.makedirs(p[name])
    with open(os.path.join(p[name], "config.json"), "w") as f:
      json.dump(dict(tiny, trainer="fairness") if name == "notclassif"
                else tiny, f)
  with open(os.path.join(p["previous"], "metrics.jsonl"), "w") as f:
    f.write('{"step": 5, "split": "train", "loss": 1.0}\n')
  os.makedirs(os.path.join(p["brokenonly"], "checkpoints",
                           "broken-5-20260101-000000"))
  for name, text in (("badjson", "{not json"), ("listjson", "[1, 2]")):
    os.makedirs(p[name])
    with open(os.path.join(p[name], "config.json"), "w") as f:
      f.write(text)
  os.makedirs(p["norun"])
  os.makedirs(p["noimages"])
  os.makedirs(os.path.join(p["resnetrun"], "checkpoints", "5"))
  with open(os.path.join(p["resnetrun"], "config.json"), "w") as f:
    json.dump(dict(tiny, model={"name": "resnet"}), f)
  return p


def _cases(p):
  w = p["w"]
  return [
      # Config files and flags.
      ("missing config file", ["--config=/nonexistent/c.py", f"--workdir={w}"],
       "/nonexistent/c.py does not exist"),
      ("config is a folder", ["--config=configs", f"--workdir={w}"],
       "is a directory"),
      ("config syntax error", [f"--config={p['syntax.py']}",
                               f"--workdir={w}"], "SyntaxError"),
      ("config without get_config", [f"--config={p['noget.py']}",
                                     f"--workdir={w}"], "get_config"),
      ("config raising NameError", [f"--config={p['nameerror.py']}",
                                    f"--workdir={w}"], "undefined_name"),
      ("unknown variant", ["--config=configs/nac.py:nope", f"--workdir={w}"],
       "Unknown variant 'nope'"),
      ("unknown top-level key", [TINY, f"--workdir={w}",
                                 "--config.num_stepz=3"], "num_steps"),
      ("unknown model key", [TINY, f"--workdir={w}",
                             "--config.model.patch_sise=4"], "patch_size"),
      ("override of the wrong type", [TINY, f"--workdir={w}",
                                      "--config.num_steps=many"],
       "num_steps"),
      ("no --workdir", [TINY], "workdir"),
      ("unknown flag", [TINY, f"--workdir={w}", "--num_stepz=3"],
       "num_stepz"),
      ("positional argument", [TINY, f"--workdir={w}", "extra"],
       "unexpected arguments ['extra']"),
      ("num_steps 0", [TINY, f"--workdir={w}", "--config.num_steps=0"],
       "config.num_steps must be a positive integer"),
      ("negative batch", [TINY, f"--workdir={w}", "--config.batch_size=-4"],
       "config.batch_size must be a positive integer"),
      ("log_every_steps 0", [TINY, f"--workdir={w}",
                             "--config.log_every_steps=0"],
       "config.log_every_steps"),
      ("unknown model", [TINY, f"--workdir={w}", "--config.model.name=nope"],
       "nope"),
      ("unknown trainer", [TINY, f"--workdir={w}", "--config.trainer=nope"],
       "nope"),
      ("unknown dataset", [TINY, f"--workdir={w}", "--config.data.name=nope"],
       "nope"),
      ("patch size not dividing the image", [TINY, f"--workdir={w}",
                                             "--config.model.patch_size=7"],
       "must be divisible by the tokenizer's total stride 7"),
      ("unknown final split", [TINY, f"--workdir={w}",
                               "--config.final_eval.splits=nope"], "nope"),
      ("unknown top-level key, named", [TINY, f"--workdir={w}",
                                        "--config.num_stepz=3"], "num_stepz"),
      ("unknown model, known ones listed",
       [TINY, f"--workdir={w}", "--config.model.name=nacc"],
       "Unknown model 'nacc'; known models:"),
      ("unknown dataset, named", [TINY, f"--workdir={w}",
                                  "--config.data.name=shapez"],
       "Unknown dataset 'shapez'"),
      ("model sizes that do not fit", [TINY, f"--workdir={w}",
                                       "--config.model.d_state=30",
                                       "--config.model.head_dim=32"],
       "config.model"),
      ("unknown periodic eval split", [TINY, f"--workdir={w}",
                                       "--config.evals.test.splits=tset"],
       "Unknown eval split(s) ['tset']"),
      ("unsupported compute dtype", [TINY, f"--workdir={w}",
                                     "--config.compute_dtype=float16"],
       "config.compute_dtype='float16' is not supported; expected one of "
       "float32, bfloat16."),
      ("accumulation not dividing the batch", [TINY, f"--workdir={w}",
                                               "--config.grad_accum_steps=3"],
       "config.grad_accum_steps=3 does not divide the per-device batch 32"),
      ("image folder without images",
       ["--config=configs/folder.py:cnn,tiny", f"--workdir={w}",
        f"--config.data.root={p['noimages']}"],
       f"Image folder '{p['noimages']}' has no images"),
      ("init_from a run of another model",
       ["--config=configs/vit.py:tiny", f"--workdir={w}",
        f"--config.init_from={p['resnetrun']}"],
       f"crl: error: config.init_from={p['resnetrun']!r} is a run of model "
       "'resnet' but config.model.name is 'vit'; expected a run of the same "
       "model."),
      # Workdirs.
      ("workdir is a file", [TINY, f"--workdir={p['afile']}"],
       "is a file; expected a directory"),
      ("workdir below a file", [TINY, f"--workdir={p['afile']}/run"],
       "is a file, not a directory"),
      ("busy workdir", [TINY, f"--workdir={p['busy']}"],
       f"in use by process {os.getpid()}"),
      ("previous run without checkpoint", [TINY,
                                           f"--workdir={p['previous']}"],
       "holds a previous run (config.json, metrics.jsonl)"),
      ("only broken checkpoints", [TINY, f"--workdir={p['brokenonly']}"],
       "1 broken checkpoint(s)"),
      # Data.
      ("TFDS name that is a folder", [TFDS, f"--workdir={w}",
                                      f"--config.data.tfds_name={p['w']}"],
       "tfds_name must be a TFDS dataset name"),
      ("TFDS name that is a relative folder",
       [TFDS, f"--workdir={w}", "--config.data.tfds_name=data/tfds/cifar10"],
       "tfds_name must be a TFDS dataset name"),
      ("TFDS dataset not prepared", [TFDS, f"--workdir={w}",
                                     f"--config.data.data_dir="
                                     f"{p['emptytfds']}"],
       (f"TFDS dataset 'cifar10' is not prepared in data_dir "
        f"{p['emptytfds']} ", f"`tfds build cifar10 --data_dir="
        f"{p['emptytfds']}`")),
      ("unknown TFDS dataset", [TFDS, f"--workdir={w}",
                                "--config.data.tfds_name=cifar11",
                                f"--config.data.data_dir={p['emptytfds']}"],
       "No TFDS dataset named 'cifar11'"),
      # Checkpoints given to the OOD suite.
      ("OOD checkpoint not a folder", [OOD, f"--workdir={w}",
                                       "--config.checkpoint=/nonexistent"],
       "is not a directory"),
      ("OOD checkpoint with invalid config.json",
       [OOD, f"--workdir={w}", f"--config.checkpoint={p['badjson']}"],
       f"{p['badjson']}/config.json (the run's config) cannot be read"),
      ("OOD checkpoint config.json not an object",
       [OOD, f"--workdir={w}", f"--config.checkpoint={p['listjson']}"],
       "expected an object"),
      ("OOD checkpoint without config.json",
       [OOD, f"--workdir={w}", f"--config.checkpoint={p['norun']}"],
       "is not a run directory"),
      ("OOD checkpoint without checkpoints",
       [OOD, f"--workdir={w}", f"--config.checkpoint={p['nockpt']}"],
       "holds no checkpoint"),
      ("OOD checkpoint of another trainer",
       [OOD, f"--workdir={w}", f"--config.checkpoint={p['notclassif']}"],
       "is not a classification run"),
  ]


_DRIVER = textwrap.dedent("""
    import json, os, sys, tempfile, traceback
    from crl import main as m
    from crl import train
    from crl.trainers import classification, ood_suite
    import tensorflow_datasets
    # TensorFlow once, before the forks: `crl.main` imports it to hide the
    # accelerators from it (30 s of each case under load otherwise).
    import tensorflow
    out = []
    for args in json.loads(CASES_JSON):
      # A fresh flag state per case: fork after the imports (cheap); the
      # child's stderr (file descriptor 2) goes to a file.
      err = tempfile.TemporaryFile()
      pid = os.fork()
      if pid == 0:
        os.dup2(err.fileno(), 2)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        code = 0
        sys.argv = ["crl", *args]  # ml_collections reads overrides there
        try:
          m.main(m.parse_flags(sys.argv))
        except SystemExit as e:
          code = e.code if isinstance(e.code, int) else 1
        except BaseException:
          traceback.print_exc()
          code = 1
        sys.stderr.flush()
        os._exit(code)
      _, status = os.waitpid(pid, 0)
      err.seek(0)
      out.append({"code": os.waitstatus_to_exitcode(status),
                  "stderr": err.read().decode(errors="replace")})
    print("RESULTS" + json.dumps(out))
""")

def _run_cases(tmp_path, cases, devices=1):
  """Runs `cases` in one forked driver on `devices` CPU devices; asserts
  each is one `crl: error:` line holding its expected text(s), exit code
  2, no traceback."""
  proc = helpers.run_python(_DRIVER.replace(
      "CASES_JSON", repr(json.dumps([c[1] for c in cases]))),
                            devices=devices, timeout=600)
  assert "RESULTS" in proc.stdout, proc.stderr[-3000:]
  results = json.loads(proc.stdout.split("RESULTS", 1)[1])
  failures = []
  for (name, _, expected), r in zip(cases, results):
    lines = [l for l in r["stderr"].splitlines() if "error:" in l]
    expected = expected if isinstance(expected, tuple) else (expected,)
    ok = (r["code"] == 2 and len(lines) == 1 and
          lines[0].startswith("crl: error:") and
          all(e in lines[0] for e in expected) and
          "Traceback" not in r["stderr"] and "PosixGPath" not in lines[0] and
          "bound method" not in lines[0])
    if not ok:
      failures.append(f"{name}: exit {r['code']}: {r['stderr'][-600:]}")
  assert not failures, "\n".join(failures)


def test_bad_inputs_give_one_line_exit_2_and_write_nothing(tmp_path):
  p = _setup(tmp_path)
  cases = _cases(p)
  assert len(cases) >= 30
  before = _files(tmp_path)
  _run_cases(tmp_path, cases)
  # Nothing written: no new file anywhere (the lock of the busy workdir and
  # the fixtures are unchanged; no workdir was created with content; no
  # TFDS data was downloaded).
  assert _files(tmp_path) == before
  assert not os.path.exists(p["w"]) or not _files(p["w"])


def test_bad_inputs_on_8_devices_write_nothing(tmp_path):
  w = str(tmp_path / "w")
  _run_cases(tmp_path, [
      ("batch not divisible by the devices", [TINY, f"--workdir={w}",
                                              "--config.batch_size=12"],
       "not divisible by the 8 devices"),
      ("accumulation not dividing the per-device batch",
       [TINY, f"--workdir={w}", "--config.grad_accum_steps=8"],
       "config.grad_accum_steps=8 does not divide the per-device batch 4"),
      ("FSDP axis not dividing the devices", [TINY, f"--workdir={w}",
                                              "--config.mesh.fsdp=3"],
       "config.mesh.fsdp=3 does not divide the 8 devices; use a divisor of "
       "8."),
  ], devices=8)
  assert not os.path.exists(w)
