"""PGD / FGSM on linear models, where the worst L-inf perturbation is known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crl.evaluators import adversarial


def _linear(num_classes, dim=12, seed=0):
  rng = np.random.default_rng(seed)
  w = jnp.asarray(rng.normal(size=(dim, num_classes)), jnp.float32)
  # Biases centre the logits on the images' centre 0.5: mixed predictions.
  b = jnp.asarray(rng.normal(size=(num_classes,)) * 0.1 - 0.5 * np.asarray(
      w).sum(0), jnp.float32)
  params = {"w": w, "b": b}

  def apply_fn(p, x):
    return jnp.einsum("bd,dk->bk", x.reshape(x.shape[0], -1), p["w"]) + p["b"]

  # Images near 0.5 so that eps-balls stay inside [0, 1] (no clipping).
  x = jnp.asarray(0.5 + 0.1 * rng.uniform(-1, 1, (64, dim)), jnp.float32)
  labels = jnp.asarray(np.argmax(np.asarray(apply_fn(params, x)) +
                                 rng.normal(size=(64, num_classes)) * 0.5,
                                 axis=1), jnp.int32)
  return apply_fn, params, x, labels


def _analytic_robust(apply_fn, params, x, labels, eps):
  """Correct and every margin m_j - eps * ||w_y - w_j||_1 > 0."""
  w = np.asarray(params["w"])
  logits = np.asarray(apply_fn(params, x))
  out = []
  for i, y in enumerate(np.asarray(labels)):
    ok = True
    for j in range(w.shape[1]):
      if j != y:
        margin = logits[i, y] - logits[i, j]
        ok &= margin - eps * np.abs(w[:, y] - w[:, j]).sum() > 0
    out.append(ok)
  return np.array(out)


def test_binary_pgd_is_exact_and_fgsm_hits_the_analytic_point():
  apply_fn, params, x, labels = _linear(2)
  eps = 0.02
  expected = _analytic_robust(apply_fn, params, x, labels, eps)
  assert 0 < expected.mean() < (np.asarray(apply_fn(params, x)).argmax(1) ==
                                np.asarray(labels)).mean()
  for attack in (adversarial.Attack("pgd", eps=eps, steps=5),
                 adversarial.Attack("fgsm", eps=eps),
                 adversarial.Attack("pgd", eps=eps, steps=5, loss="dlr")):
    _, robust = adversarial.make_attack(apply_fn, attack)(
        params, x, labels, jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(robust), expected)
  adv = adversarial.fgsm(apply_fn, params, x, labels, eps)
  w = np.asarray(params["w"])
  y = np.asarray(labels)
  direction = np.sign(w[:, y] - w[:, 1 - y]).T       # [batch, dim]
  # Examples already wrong come back clean (nothing to attack), as in
  # AutoAttack; the others at the analytic worst point.
  clean = np.asarray(apply_fn(params, x)).argmax(1) == y
  expected_adv = np.where(clean[:, None], np.asarray(x) - eps * direction,
                          np.asarray(x))
  np.testing.assert_allclose(np.asarray(adv), expected_adv, atol=1e-6)


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_multiclass_pgd_between_analytic_and_clean(loss):
  apply_fn, params, x, labels = _linear(5, seed=1)
  eps = 0.03
  clean = np.asarray(apply_fn(params, x)).argmax(1) == np.asarray(labels)
  worst = _analytic_robust(apply_fn, params, x, labels, eps)
  attack = adversarial.Attack("pgd", eps=eps, steps=20, step_size=eps / 4,
                              loss=loss)
  adv, robust = adversarial.make_attack(apply_fn, attack)(
      params, x, labels, jax.random.key(1))
  robust = np.asarray(robust)
  # Nothing robust that is wrong clean; the analytic worst case is a lower
  # bound (PGD need not find the worst class j), and on a linear model PGD
  # finds nearly every breakable example.
  assert not np.any(robust & ~clean) and robust.mean() <= clean.mean()
  assert 0. <= robust.mean() - worst.mean() <= 0.05
  assert worst.mean() < clean.mean()
  dist = np.abs(np.asarray(adv) - np.asarray(x)).max()
  assert dist <= eps + 1e-6


def test_fgsm_equals_one_step_pgd_without_random_start():
  apply_fn, params, x, labels = _linear(4, seed=2)
  eps = 0.05
  one_step = adversarial.Attack("pgd", eps=eps, steps=1, step_size=eps,
                                random_start=False)
  pgd_adv, pgd_robust = adversarial.make_attack(apply_fn, one_step)(
      params, x, labels, jax.random.key(0))
  fgsm = adversarial.Attack("fgsm", eps=eps)
  f_adv, f_robust = adversarial.make_attack(apply_fn, fgsm)(
      params, x, labels, jax.random.key(5))
  np.testing.assert_array_equal(np.asarray(pgd_robust), np.asarray(f_robust))
  np.testing.assert_allclose(np.asarray(pgd_adv), np.asarray(f_adv))


def test_clipped_to_valid_range_and_ball():
  apply_fn, params, x, labels = _linear(3, seed=3)
  x = x.at[:8].set(0.).at[8:16].set(1.)               # at the box edges
  attack = adversarial.Attack("pgd", eps=0.2, steps=5)
  adv, _ = adversarial.make_attack(apply_fn, attack)(params, x, labels,
                                                     jax.random.key(2))
  adv = np.asarray(adv)
  assert adv.min() >= 0. and adv.max() <= 1.
  assert np.abs(adv - np.asarray(x)).max() <= 0.2 + 1e-6


def test_dlr_loss_by_hand():
  logits = jnp.array([[3., 1., 0., -1.]])
  # y = 0: -(3 - 1) / (3 - 0); y = 2: -(0 - 3) / (3 - 0).
  np.testing.assert_allclose(adversarial.dlr_loss(logits, jnp.array([0])),
                             [-2. / 3.], rtol=1e-6)
  np.testing.assert_allclose(adversarial.dlr_loss(logits, jnp.array([2])),
                             [1.], rtol=1e-6)
  with pytest.raises(ValueError, match="3 classes"):
    adversarial.dlr_loss(jnp.zeros((1, 2)), jnp.array([0]))


def test_adversarial_accuracy_over_masked_batches_and_names():
  apply_fn, params, x, labels = _linear(2)
  eps = 0.02
  expected = _analytic_robust(apply_fn, params, x, labels, eps)
  mask = np.ones(64, np.float32)
  mask[-4:] = 0.
  batches = [{"image": x[:32], "label": labels[:32], "mask": mask[:32]},
             {"image": x[32:], "label": labels[32:], "mask": mask[32:]}]
  attacks = [adversarial.Attack("pgd", eps=eps, steps=3),
             adversarial.Attack("fgsm", eps=eps)]
  out = adversarial.adversarial_accuracy(apply_fn, params, batches, attacks,
                                         jax.random.key(0))
  assert set(out) == {"pgd_accuracy/eps=5.1/255", "fgsm_accuracy/eps=5.1/255"}
  for v in out.values():
    assert v == pytest.approx(expected[:60].mean())
  few = adversarial.adversarial_accuracy(apply_fn, params, batches, attacks,
                                         jax.random.key(0), max_examples=10)
  assert few["fgsm_accuracy/eps=5.1/255"] == pytest.approx(
      expected[:10].mean())
  assert adversarial.metric_name(adversarial.Attack(eps=1 / 255)) == (
      "pgd_accuracy/eps=1/255")


def test_bad_attack():
  with pytest.raises(ValueError, match="known"):
    adversarial.Attack("cw")
  with pytest.raises(ValueError, match="loss"):
    adversarial.Attack(loss="hinge")


def test_evaluator_on_a_pipeline_matches_the_function():
  from crl import registry  # pylint: disable=g-import-not-at-top
  from crl import runtime  # pylint: disable=g-import-not-at-top
  from crl.data import multi_domain  # pylint: disable=g-import-not-at-top
  from crl.data import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  ds = multi_domain.MultiDomainShapes(resolution=8, num_classes=3,
                                      eval_examples=20)
  pipe = pipeline_lib.InputPipeline(ds, runtime.make_mesh(), 8, 8)
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(8 * 8 * 3, 3)), jnp.float32)}
  predict_fn = jax.jit(lambda p, b: jnp.einsum(
      "bd,dk->bk", b["image"].reshape(b["image"].shape[0], -1), p["w"]))
  cls = registry.EVALUATORS.get("adversarial")
  ev = cls(pipeline=pipe, predict_fn=predict_fn, num_classes=3,
           attacks="pgd,fgsm", eps=(0.01,), steps=3, max_examples=12)
  out = ev.run(params)["test"]
  assert out["num_examples"] == 12
  batches = [{"image": b["image"], "label": b["label"], "mask": b["mask"]}
             for b in pipe.eval_batches("test")]
  expected = adversarial.adversarial_accuracy(
      lambda p, x: predict_fn(p, {"image": x}), params, batches,
      ev.attacks, jax.random.key(0), max_examples=12)
  for name, value in expected.items():
    assert out[name] == pytest.approx(value)
  assert set(ev.protocols()) == set(expected)
  with pytest.raises(ValueError, match="Unknown eval split 'photo'"):
    cls(pipeline=pipe, predict_fn=predict_fn, num_classes=3, split="photo")


def test_apgd_checkpoint_schedule_and_linear_cases():
  from crl.evaluators import apgd  # pylint: disable=g-import-not-at-top
  # AutoAttack's schedule for 100 iterations: checks after 22, 19, 16, ...
  # iterations (0.22 N, shrinking by 0.03 N to 0.06 N).
  window = apgd.checkpoints(100)
  checks = np.nonzero(window)[0]
  np.testing.assert_array_equal(window[checks], [22, 19, 16, 13, 10, 7, 6, 6])
  np.testing.assert_array_equal(checks, [21, 40, 56, 69, 79, 86, 92, 98])
  # Binary linear model: the first step already reaches the analytic worst
  # point, so APGD is exact too.
  apply_fn, params, x, labels = _linear(2)
  expected = _analytic_robust(apply_fn, params, x, labels, 0.02)
  _, robust = adversarial.make_attack(
      apply_fn, adversarial.Attack("apgd", eps=0.02, steps=10))(
          params, x, labels, jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(robust), expected)
  # Multiclass with DLR (20 steps: step-size checks after 4, 3, 2, 1, ...
  # iterations): between the analytic worst case and clean.
  apply_fn, params, x, labels = _linear(5, seed=1)
  eps = 0.03
  clean = np.asarray(apply_fn(params, x)).argmax(1) == np.asarray(labels)
  worst = _analytic_robust(apply_fn, params, x, labels, eps)
  adv, robust = adversarial.make_attack(
      apply_fn, adversarial.Attack("apgd", eps=eps, steps=20, loss="dlr"))(
          params, x, labels, jax.random.key(1))
  robust = np.asarray(robust)
  assert not np.any(robust & ~clean)
  assert 0. <= robust.mean() - worst.mean() <= 0.05
  assert np.abs(np.asarray(adv) - np.asarray(x)).max() <= eps + 1e-6
  assert adversarial.metric_name(adversarial.Attack(
      "apgd", eps=0.5 / 255, loss="dlr")) == "apgd_dlr_accuracy/eps=0.5/255"


def _reference_apgd(loss_grad, x, eps, n_iter):
  """AutoAttack's APGDAttack.attack_single_run loop (autopgd_base.py, L-inf,
  no random start), transcribed in NumPy; returns (robust bool[batch], the
  last iterate)."""
  n_iter_2 = max(int(0.22 * n_iter), 1)
  n_iter_min = max(int(0.06 * n_iter), 1)
  size_decr = max(int(0.03 * n_iter), 1)
  batch = x.shape[0]
  x_adv = x.copy()
  x_best = x_adv.copy()
  loss_steps = np.zeros((n_iter, batch), np.float32)
  loss_indiv, grad, acc = loss_grad(x_adv)
  grad_best = grad.copy()
  loss_best = loss_indiv.copy()
  step_size = 2. * eps * np.ones((batch, 1), np.float32)
  x_adv_old = x_adv.copy()
  k, counter3 = n_iter_2, 0
  loss_best_last_check = loss_best.copy()
  reduced_last_check = np.ones(batch, bool)
  for i in range(n_iter):
    grad2 = x_adv - x_adv_old
    x_adv_old = x_adv.copy()
    a = 0.75 if i > 0 else 1.0
    x_adv_1 = x_adv + step_size * np.sign(grad)
    x_adv_1 = np.clip(np.minimum(np.maximum(x_adv_1, x - eps), x + eps), 0, 1)
    x_adv_1 = np.clip(np.minimum(np.maximum(
        x_adv + (x_adv_1 - x_adv) * a + grad2 * (1 - a), x - eps), x + eps),
                      0, 1)
    x_adv = x_adv_1.astype(np.float32)
    loss_indiv, grad, correct = loss_grad(x_adv)
    acc = acc & correct
    loss_steps[i] = loss_indiv
    ind = loss_indiv > loss_best
    x_best[ind], grad_best[ind] = x_adv[ind], grad[ind]
    loss_best[ind] = loss_indiv[ind]
    counter3 += 1
    if counter3 == k:
      t = np.zeros(batch)
      for c in range(k):
        t += loss_steps[i - c] > loss_steps[i - c - 1]
      fl_osc = t <= k * 0.75
      fl_osc |= ~reduced_last_check & (loss_best_last_check >= loss_best)
      reduced_last_check = fl_osc.copy()
      loss_best_last_check = loss_best.copy()
      step_size[fl_osc] /= 2.
      x_adv[fl_osc], grad[fl_osc] = x_best[fl_osc], grad_best[fl_osc]
      k, counter3 = max(k - size_decr, n_iter_min), 0
  return acc, x_adv


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_matches_autoattack_loop(loss):
  # A small tanh MLP: its gradient signs change along the path, so the
  # momentum, the step halving and the restarts all shape the trajectory.
  rng = np.random.default_rng(4)
  params = {"w1": jnp.asarray(rng.normal(size=(12, 16)) * 2., jnp.float32),
            "w2": jnp.asarray(rng.normal(size=(16, 5)), jnp.float32)}

  def apply_fn(p, xs):
    return jnp.tanh((xs - 0.5) @ p["w1"]) @ p["w2"]

  x = jnp.asarray(0.5 + 0.1 * rng.uniform(-1, 1, (64, 12)), jnp.float32)
  labels = jnp.argmax(apply_fn(params, x), -1).astype(jnp.int32)
  eps = 0.02
  loss_fn = adversarial.dlr_loss if loss == "dlr" else adversarial.ce_loss

  @jax.jit
  def loss_grad(xs):
    def total(xs):
      logits = apply_fn(params, xs)
      return loss_fn(logits, labels).sum(), (loss_fn(logits, labels), logits)
    g, (per, logits) = jax.grad(total, has_aux=True)(xs)
    return per, g, logits.argmax(-1) == labels

  def np_loss_grad(xs):
    per, g, correct = loss_grad(jnp.asarray(xs))
    return np.array(per), np.array(g), np.array(correct)

  expected, last = _reference_apgd(np_loss_grad, np.asarray(x), eps, 30)
  adv, robust = adversarial.make_attack(apply_fn, adversarial.Attack(
      "apgd", eps=eps, steps=30, loss=loss, random_start=False))(
          params, x, labels, jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(robust), expected)
  # The whole trajectory (momentum, step halving, restarts from the best
  # point) agrees: the robust examples end at the same point.
  assert expected.sum() >= 5
  np.testing.assert_allclose(np.asarray(adv)[expected], last[expected],
                             atol=1e-5)
