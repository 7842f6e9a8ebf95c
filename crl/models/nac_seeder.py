"""NAC's initial module states: `StateSeeder` (from codes, optionally noisy).

A part of `crl.models.nac.NAC` (its submodule 'state_seeder').
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class StateSeeder(nn.Module):
  """Initial module states from codes.

  'code': `h_u = c_u`; 'dense': `h_u = Dense(LN(c_u))`. With `noise`, adds
  `eps * exp(0.5 * Dense'(LN(c_u)))` in training (eps ~ N(0, I) from the
  'sample' stream; log-variance bias initialised at -5).

  Attributes:
    features: state channels.
    mode: 'code' or 'dense'.
    noise: whether to add the learned state noise in training.
  """
  features: int
  mode: str = "code"
  noise: bool = False

  @nn.compact
  def __call__(self, codes: jax.Array, batch_size: int, *,
               train: bool) -> jax.Array:
    """Seeds states.

    Args:
      codes: `[modules, code]`.
      batch_size: B.
      train: adds the noise when True (and `noise`).

    Returns:
      `[batch, modules, features]`.
    """
    normed = None
    if self.mode == "dense" or self.noise:
      normed = nn.LayerNorm(name="code_norm")(codes)
    if self.mode == "dense":
      states = nn.Dense(self.features, name="seed")(normed)
    else:
      states = codes
    states = jnp.broadcast_to(states, (batch_size,) + states.shape)
    if self.noise:
      log_var = nn.Dense(self.features,
                         bias_init=nn.initializers.constant(-5.0),
                         name="noise_log_var")(normed)
      if train:
        eps = jax.random.normal(self.make_rng("sample"), states.shape,
                                states.dtype)
        states = states + eps * jnp.exp(0.5 * log_var)
    return states

