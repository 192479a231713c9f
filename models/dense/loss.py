"""MOPPR's multi-positive, multi-objective softmax loss (DESIGN.md section 6, DR).

For one request with candidate scores s_j (j over the batch's columns: its own positives and
hard negatives, the other requests' items, shared random negatives) the softmax is taken once,

    p_j = exp(s_j) / sum_k exp(s_k)          (s_j = <u, v_j> / temperature),

and for each objective o with positive set P_o (n_o = |P_o| > 0):

- `per_positive` (the default; our reading of the paper): every positive should get at least
  1 / n_o of the mass, so its probability is scaled by n_o and capped at 1,

      loss_o = -(1 / n_o) * sum_{j in P_o} log(min(1, n_o * p_j));

  with one positive this is exactly the softmax cross-entropy; once p_j >= 1 / n_o a positive
  stops pulling (no positive is pushed up at the expense of the others).
- `mass`: the positives' mass, n_o times their mean probability, capped at 1,

      loss_o = -log(min(1, n_o * mean_{j in P_o} p_j)) = -log(sum_{j in P_o} p_j)

  (the cap never binds because the positives are inside the softmax's denominator).

Per objective the loss is the mean over the requests with n_o > 0 (0 when the batch has none);
the total is sum_o w_o * loss_o.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor


def moppr_loss(
    logits: Tensor,
    positives: Tensor,
    weights: Sequence[float] | Tensor,
    variant: Literal["per_positive", "mass"] = "per_positive",
) -> tuple[Tensor, Tensor]:
    """logits (B, M), positives (O, B, M) bool, weights (O,) -> (total loss (), per objective (O,))."""
    logp = torch.log_softmax(logits.float(), dim=-1)[None].expand_as(positives)   # (O, B, M)
    n = positives.sum(-1)                                                           # (O, B)
    if variant == "per_positive":
        capped = (logp + torch.log(n.clamp(min=1).float())[..., None]).clamp(max=0.0)   # log min(1, n p_j)
        per_row = -(capped * positives).sum(-1) / n.clamp(min=1)
    elif variant == "mass":
        mass = torch.logsumexp(logp.masked_fill(~positives, float("-inf")), dim=-1)   # log sum_{P} p_j
        per_row = -torch.where(n > 0, mass.clamp(max=0.0), torch.zeros_like(mass))
    else:
        raise ValueError(f"unknown MOPPR loss variant {variant!r}")
    has = (n > 0).float()
    per_objective = (per_row * has).sum(-1) / has.sum(-1).clamp(min=1)               # (O,)
    w = torch.as_tensor(weights, dtype=per_objective.dtype, device=per_objective.device)
    return (w * per_objective).sum(), per_objective
