"""Preference losses against an independent torch computation (float64 autograd) on fixed log-probs.

The formulas, as the papers state them (h below is the same quantity in all three):

  DPO, Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a Reward
  Model", eq. 7:
      L_DPO(pi_theta; pi_ref) = -E_{(x, y_w, y_l) ~ D} [ log sigma( beta log pi_theta(y_w|x) / pi_ref(y_w|x)
                                                                  - beta log pi_theta(y_l|x) / pi_ref(y_l|x) ) ]
  Conservative DPO (label smoothing eps; Mitchell 2023, "A note on DPO with noisy preferences and
  relationship to IPO"):
      L_cDPO = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)
  IPO, Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human Preferences",
  eq. 17:
      L_IPO(pi) = E_{(y_w, y_l, x) ~ D} [ ( h_pi(y_w, y_l, x) - tau^{-1} / 2 )^2 ],
      h_pi(y, y', x) = log( pi(y|x) pi_ref(y'|x) / ( pi(y'|x) pi_ref(y|x) ) )

TRL's `DPOTrainer` (read in v1.16 and in 0.x) takes delta = (pi_c - ref_c) - (pi_r - ref_r) = h from log-probs
summed over the completion and uses
  sigmoid: -logsigmoid(beta * delta)   (0.x: * (1 - label_smoothing) - logsigmoid(-beta * delta) * label_smoothing)
  ipo:     (delta_avg - 1 / (2 * beta)) ** 2, delta_avg with each log-ratio divided by its completion length
with rewards beta * (pi - ref) from the summed log-probs and reward accuracy (chosen_rewards > rejected_rewards).
The torch code below is written from these formulas, not from our implementation. (A one-off check against
TRL 1.16 itself, with a stand-in model returning fixed per-token log-probs, agreed to float32 rounding on
the sigmoid and IPO losses and on reward accuracy and margin; TRL is not a dependency, so it is not a test.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from telugu_jax.dpo.loss import implicit_rewards, preference_losses, sequence_logps, token_kl

B = 12


def fixed_logps(seed=0):
  rng = np.random.default_rng(seed)
  pc = rng.normal(-40, 15, B)
  pr = rng.normal(-45, 15, B)
  rc = pc + rng.normal(0, 3, B)
  rr = pr + rng.normal(0, 3, B)
  return [x.astype(np.float32) for x in (pc, pr, rc, rr)]


def torch_reference(pc, pr, rc, rr, beta, loss_type, eps):
  """Mean loss and its gradient w.r.t. the policy log-probs, in float64, from the papers' formulas."""
  t = lambda x: torch.tensor(np.asarray(x, np.float64), requires_grad=True)
  pc, pr, rc, rr = t(pc), t(pr), t(rc), t(rr)
  h = (pc - rc) - (pr - rr)
  if loss_type == "sigmoid":
    losses = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
  else:
    losses = (h - 1 / (2 * beta)) ** 2
  loss = losses.mean()
  loss.backward()
  return loss.item(), pc.grad.numpy(), pr.grad.numpy(), rc.grad.numpy(), rr.grad.numpy()


@pytest.mark.parametrize("loss_type,beta,eps", [("sigmoid", 0.1, 0.0), ("sigmoid", 0.5, 0.0), ("sigmoid", 0.1, 0.2),
                                                ("ipo", 0.1, 0.0), ("ipo", 0.5, 0.0)])
def test_loss_and_gradient_match_torch(loss_type, beta, eps):
  pc, pr, rc, rr = fixed_logps()
  if loss_type == "ipo":  # TRL feeds IPO per-token averages: make the scale realistic for that
    pc, pr, rc, rr = (x / 30 for x in (pc, pr, rc, rr))

  def mean_loss(pc, pr, rc, rr):
    return jnp.mean(preference_losses(pc, pr, rc, rr, beta=beta, loss_type=loss_type, label_smoothing=eps))

  value, grads = jax.value_and_grad(mean_loss, argnums=(0, 1, 2, 3))(pc, pr, rc, rr)
  ref_value, *ref_grads = torch_reference(pc, pr, rc, rr, beta, loss_type, eps)
  np.testing.assert_allclose(float(value), ref_value, rtol=2e-6)
  for g, rg in zip(grads, ref_grads, strict=True):
    np.testing.assert_allclose(np.asarray(g), rg, rtol=2e-5, atol=1e-9)
  assert np.abs(ref_grads[0]).max() > 1e-4  # the gradient is not trivially zero


def test_rewards_margin_accuracy_match_definitions():
  pc, pr, rc, rr = fixed_logps(1)
  beta = 0.2
  stats = implicit_rewards(pc, pr, rc, rr, beta=beta)
  rwc, rwr = beta * (pc.astype(np.float64) - rc), beta * (pr.astype(np.float64) - rr)
  np.testing.assert_allclose(stats["reward_chosen"], rwc, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(stats["reward_rejected"], rwr, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(stats["margin"], rwc - rwr, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(stats["correct"], (rwc > rwr).astype(np.float32))
  assert 0 < stats["correct"].sum() < B  # both outcomes occur in the fixture
  # Rewards are reported, not optimised: no gradient flows through them.
  g = jax.grad(lambda p: implicit_rewards(p, pr, rc, rr, beta=beta)["margin"].sum())(pc)
  assert float(jnp.abs(g).max()) == 0.0


def test_policy_equal_reference_gives_log_2_exactly():
  pc, pr, _, _ = fixed_logps(2)
  losses = preference_losses(pc, pr, pc, pr, beta=0.1)
  stats = implicit_rewards(pc, pr, pc, pr, beta=0.1)
  assert np.all(np.asarray(losses) == np.float32(np.log(2.0)))
  assert np.all(np.asarray(stats["correct"]) == 0) and np.all(np.asarray(stats["margin"]) == 0)


def test_sequence_logps_and_kl_match_torch():
  rng = np.random.default_rng(3)
  logits = rng.normal(0, 3, (4, 9, 17)).astype(np.float32)
  ref = logits + rng.normal(0, 0.5, logits.shape).astype(np.float32)
  targets = rng.integers(0, 17, (4, 9)).astype(np.int32)
  mask = (rng.random((4, 9)) < 0.5).astype(np.int32)
  mask[0] = 0  # an empty row: 0 log-prob, 0 tokens
  lp, n = sequence_logps(logits, targets, mask)
  tl = torch.log_softmax(torch.tensor(logits, dtype=torch.float64), -1)
  expected = (tl.gather(-1, torch.tensor(targets, dtype=torch.int64)[..., None])[..., 0] * torch.tensor(mask)).sum(-1)
  np.testing.assert_allclose(np.asarray(lp), expected.numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(n), mask.sum(-1))
  kl = token_kl(logits, ref)
  tq = torch.log_softmax(torch.tensor(ref, dtype=torch.float64), -1)
  expected_kl = F.kl_div(tq, tl, log_target=True, reduction="none").sum(-1)  # KL(p || q), p = policy
  np.testing.assert_allclose(np.asarray(kl), expected_kl.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kw,match", [(dict(loss_type="hinge"), "loss_type"), (dict(beta=0.0), "beta"),
                                      (dict(label_smoothing=0.5), "label_smoothing"),
                                      (dict(loss_type="ipo", label_smoothing=0.1), "sigmoid")])
def test_bad_settings_are_refused(kw, match):
  pc, pr, rc, rr = fixed_logps()
  with pytest.raises(ValueError, match=match):
    preference_losses(pc, pr, rc, rr, **{"beta": 0.1, **kw})
