"""Fallback: the baselines and filter counts of configs/savos.py:reduced."""
import json, sys
from crl import config_lib, train, registry
from crl.models import precision
from crl.trainers import savos_config, savos_pipeline
c = config_lib.load_config("configs/savos.py:reduced")
ds = savos_config.build_dataset(c)
pipe = savos_pipeline.VideoPipeline(ds, train.make_mesh(), c.batch_size, c.eval_batch_size)
model = config_lib.build(registry.MODELS, c.model)
ev = savos_config.make_evaluator(c, pipe, model)
out = {s: {"baselines": ev.baseline_metrics(s), "removed": ev.removed(s)} for s in c.eval.splits}
json.dump(out, open(sys.argv[1], "w"), indent=2)
