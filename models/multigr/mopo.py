"""MoPO: multi-objective preference alignment of MultiGR after SFT (DESIGN.md section 6).

    contexts = build_contexts(cfg, samples, lookup, item_uplift)   # gr_samples -> prompts + funnel labels
    policy, stats = align(sft_model, contexts, trie_next, cfg.mopo, seed=0)

Per step, `contexts_per_step` training contexts (search requests) are drawn; for each,
a group of G = `group_size` SIDs comes from the behaviour policy pi_old (a frozen
snapshot of the policy, refreshed every `refresh_every` steps) by trie-constrained
top-p sampling or constrained beam search. Each SID is rewarded by the funnel level
the request reached for an item with that SID (`level_weights`), plus `ltv_weight`
when the SID is in the request's long-term set (a clicked item whose ItemLTV uplift is
above the mean), times CIW = clip(-log pi_old(sid | x), floor, cap). Rewards are
normalised within the group into advantages, and the policy minimises the token-level
PPO clipped surrogate with ratio pi_theta / pi_old of every SID token (the
level-restricted softmax of `MultiGR.loss`), plus optionally `kl_coef` times the k3
estimate of KL(pi_theta || pi_SFT) on the sampled tokens.

Departures from the paper (GrowthGR / MultiGR):
- the paper does not publish its level weights; here they are inverse frequencies of
  the funnel levels in the training contexts (`level_weights`);
- the long-term reward uses ItemLTV's context-free uplift of one click per item
  (`curated/item_uplift`, a pseudo-exposure without user history), not a per-request
  uplift; an item without an ItemLTV score (outside the new-item pool candidates) gets
  no long-term reward;
- a SID shared by several items (no disambiguation token) takes the best level of them;
- one optimiser step per rollout batch (pi_old lags by up to `refresh_every` steps, so
  the ratio departs from 1 and the clip matters), the policy runs without dropout, and
  AdamW has no weight decay;
- `reward="conversion"` is the plain GRPO baseline of the paper's Table 3: reward 1 for a
  purchased SID, else 0, with no CIW and no long-term reward;
- off-policy group augmentation (not in the paper): on the demo catalogue (~64k items, 4-level
  SIDs) G sampled SIDs almost never hit the request's funnel items (mean on-policy reward
  ~0.01-0.03), so the groups carry almost no signal. With `logged_per_group` = A > 0, up to A
  of the request's logged funnel SIDs (level >= `logged_min_level`, best level first, ties in
  a seeded random order; `logged_members`) join the G rollouts. Their pi_old log-probability is
  computed like the rollouts', so the ratio, the clip and CIW apply unchanged; they were not
  drawn from pi_old, so the surrogate is no longer an on-policy estimate (it is closer to
  reward-weighted imitation of the log). The selection never reads the reward mode or the
  long-term flag, so every row of the tables (GRPO on conversion, MoPO, its ablations) gets
  the same groups and contexts for a seed; `mean_reward` counts the on-policy members only;
- `context_min_level`: MoPO draws its contexts from the requests whose funnel reached that
  level (the paper does not say how contexts are chosen).
Validation (train 02-22..02-28, validate 03-01 of the demo lake, one seed; never the test
day) chose the demo settings of `MoPOConfig`: see the `MoPOConfig` comments.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from foundation.sections.multigr import MoPOConfig, MultiGRConfig
from models.multigr.beam import beam_search, sid_keys, trie_children
from models.multigr.data import Prompts, left_pad
from models.multigr.model import MultiGR, Vocab
from models.multigr.platform import SidLookup, request_prompt
from models.training import curve_logger

CURVE = "multigr_mopo"         # the learning curve's name (`models.training.learning_curves`)
LEVELS = ("none", "candidate", "exposure", "click", "purchase")
"""Funnel levels, worst first; a level's index is its rank."""
LEVEL_COLUMNS = {"candidate": "rank_candidate_ids", "exposure": "exposure_ids", "click": "click_ids",
                 "purchase": "purchase_ids"}
EXPOSURE, CLICK, PURCHASE = LEVELS.index("exposure"), LEVELS.index("click"), LEVELS.index("purchase")


@dataclass(frozen=True)
class Contexts:
    """Training contexts in CSR form: context i owns rows offsets[i]:offsets[i + 1] of the label arrays."""

    prompts: list[np.ndarray]   # per context, the prompt tokens
    offsets: np.ndarray         # (C + 1,) int64
    keys: np.ndarray            # (M,) int64 SID keys (`beam.sid_keys`), ascending within a context
    levels: np.ndarray          # (M,) int8 funnel level (index into LEVELS, >= 1)
    long_term: np.ndarray       # (M,) bool, the SID is in the context's long-term reward set
    codebook_size: int
    sid_levels: int

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def radix(self) -> int:
        """Number of distinct SID keys: (context, key) pairs are coded as context * radix + key."""
        return self.codebook_size ** self.sid_levels

    def codes(self, keys: np.ndarray) -> np.ndarray:
        """SID keys (...,) -> (..., L) codes (the inverse of `beam.sid_keys`; -1 rows for keys < 0)."""
        keys = np.asarray(keys, np.int64)
        out = np.stack([(keys // self.codebook_size ** (self.sid_levels - 1 - lv)) % self.codebook_size
                        for lv in range(self.sid_levels)], axis=-1)
        return np.where(keys[..., None] < 0, -1, out)

    def best_level(self) -> np.ndarray:
        """(C,) the best funnel level each context reached."""
        return np.maximum.reduceat(self.levels.astype(np.int64), self.offsets[:-1]) if len(self) else np.zeros(0, np.int64)

    def labels(self, idx: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Contexts `idx` (B,) and SID keys (B, G) -> (levels (B, G) int, long-term (B, G) bool); 0 / False
        for a SID the request did not reach (or an invalid key < 0)."""
        ctx = np.repeat(np.arange(len(self)), np.diff(self.offsets))
        coded = ctx * self.radix + self.keys                         # (M,) ascending
        query = idx[:, None] * self.radix + keys                     # (B, G)
        pos = np.clip(np.searchsorted(coded, query), 0, max(len(coded) - 1, 0))
        found = (keys >= 0) & (len(coded) > 0) & (coded[pos] == query)
        return np.where(found, self.levels[pos], 0), found & self.long_term[pos]


def long_term_items(item_uplift: pd.DataFrame | None) -> np.ndarray:
    """Items whose ItemLTV uplift is above the mean uplift of the frame (sorted ids; empty for None)."""
    if item_uplift is None or not len(item_uplift):
        return np.zeros(0, np.int64)
    up = item_uplift["uplift"].to_numpy(float)
    return np.unique(item_uplift["item_id"].to_numpy(np.int64)[up > up.mean()])


def item_levels(row) -> dict[int, int]:
    """item id -> the best funnel level (index into LEVELS) one gr_samples row reached for it."""
    out: dict[int, int] = {}
    for level, col in LEVEL_COLUMNS.items():
        for item in np.asarray(getattr(row, col), dtype=np.int64).tolist():
            out[item] = max(out.get(item, 0), LEVELS.index(level))
    return out


def build_contexts(cfg: MultiGRConfig, samples: pd.DataFrame, lookup: SidLookup,
                   item_uplift: pd.DataFrame | None) -> Contexts:
    """One context per request with a rank candidate (or better) that has a SID: the prompt of
    `platform.request_prompt`, the best level per SID, and the long-term set (clicked items with
    ItemLTV uplift above the mean of `item_uplift`; none when it is None)."""
    vocab = Vocab.from_config(cfg)
    lt_items = long_term_items(item_uplift)
    prompts, keys, levels, long_term, counts = [], [], [], [], []
    for row in samples.itertuples(index=False):
        best = item_levels(row)
        items = lookup.known(np.fromiter(best, np.int64, len(best)))
        if not len(items):
            continue
        lv = np.array([best[i] for i in items.tolist()], np.int8)
        lt = (lv >= CLICK) & np.isin(items, lt_items)
        k = sid_keys(lookup.sids(items), cfg.codebook_size)
        order = np.lexsort((-lv, k))                                  # by key, best level first
        k, lv, lt = k[order], lv[order], lt[order]
        first = np.r_[True, k[1:] != k[:-1]]                          # one row per SID: its best level
        lt_any = np.logical_or.reduceat(lt, np.flatnonzero(first))
        prompts.append(request_prompt(vocab, row, lookup, cfg.max_history, cfg.max_query_words))
        keys.append(k[first])
        levels.append(lv[first])
        long_term.append(lt_any)
        counts.append(int(first.sum()))
    return Contexts(prompts, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), _cat(keys, np.int64),
                    _cat(levels, np.int8), _cat(long_term, bool), cfg.codebook_size, cfg.sid_levels)


def _cat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def level_weights(contexts_or_samples: Contexts | pd.DataFrame) -> dict[str, float]:
    """Reward weight of each funnel level from the label distribution of the training data.

    Rule: w(l) = n(>= purchase) / n(>= l), where n(>= l) counts the (request, SID) pairs of
    `Contexts` (or the (request, item) pairs of a gr_samples frame) whose best level is l or
    better: the inverse frequency of reaching level l, normalised so that purchase = 1. It
    is ordered purchase >= click >= exposure >= candidate by construction (strictly when
    every level loses pairs to the next one); "none" weighs 0.
    """
    if isinstance(contexts_or_samples, Contexts):
        best = contexts_or_samples.levels.astype(np.int64)
    else:
        rows = [item_levels(r) for r in contexts_or_samples.itertuples(index=False)]
        best = np.array([lv for r in rows for lv in r.values()], np.int64)
    at_least = np.cumsum(np.bincount(best, minlength=len(LEVELS))[::-1])[::-1].astype(float)  # n(>= l)
    top = max(at_least[PURCHASE], 1.0)
    return {"none": 0.0, **{LEVELS[lv]: top / max(at_least[lv], top) for lv in range(1, len(LEVELS))}}


def ciw(logp_old: Tensor, floor: float, cap: float) -> Tensor:
    """Counterfactual inverse weight clip(-log pi_old(sid | x), floor, cap): larger for SIDs the
    behaviour policy finds unlikely (tail items), bounded on both sides."""
    return (-logp_old).clamp(min=floor, max=cap)


def rewards(contexts: Contexts, idx: np.ndarray, keys: np.ndarray, cfg: MoPOConfig,
            weights: dict[str, float]) -> np.ndarray:
    """Task reward (B, G) of SID keys (B, G) drawn for contexts `idx` (B,), before CIW (see module docstring)."""
    level, long_term = contexts.labels(idx, keys)
    if cfg.reward == "conversion":
        return (level == PURCHASE).astype(float)
    table = np.array([weights[name] for name in LEVELS])
    funnel = table[level] if cfg.use_funnel else (level >= EXPOSURE).astype(float)
    return funnel + (cfg.ltv_weight * long_term if cfg.use_ltv else 0.0)


def group_advantages(r: Tensor, valid: Tensor, eps: float = 1e-6) -> Tensor:
    """Rewards (B, G) -> (r - group mean) / (group std + eps) over the valid members; 0 elsewhere."""
    n = valid.sum(1, keepdim=True).clamp(min=1)
    mean = (r * valid).sum(1, keepdim=True) / n
    std = (((r - mean) ** 2 * valid).sum(1, keepdim=True) / n).sqrt()
    return torch.where(valid, (r - mean) / (std + eps), torch.zeros_like(r))


def token_logprobs(model: MultiGR, prompts: Prompts, sids: Tensor) -> Tensor:
    """log pi(code_l | prompt, code_<l) of every SID token: prompts (B, T), sids (B, G, L) -> (B, G, L).

    The prompt is encoded once and the G SIDs of a request share its KV cache (`decode_step`);
    each level's softmax runs over the K codes of that level (as `MultiGR.loss`). Codes < 0
    are read as 0 (mask them afterwards). Differentiable.
    """
    vocab = model.vocab
    dev = next(model.parameters()).device
    h, prefix = model(prompts.tokens.to(dev), prompts.positions.to(dev), prompts.valid.to(dev))
    codes = sids.clamp(min=0).to(dev)
    b, g, n_lv = codes.shape
    h, past, out = h[:, -1:].expand(b, g, -1), None, []
    for level in range(n_lv):
        logp = torch.log_softmax(model.sid_logits(h, level), dim=-1)  # (B, G, K)
        out.append(logp.gather(2, codes[:, :, level : level + 1]).squeeze(2))
        if level < n_lv - 1:
            h, past = model.decode_step(vocab.sid_offset + level * vocab.codebook_size + codes[:, :, level], prefix, past)
    return torch.stack(out, dim=2)


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Mask (to -inf) every code outside the smallest set whose probability reaches `top_p`."""
    probs, order = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True)
    drop_sorted = probs.cumsum(-1) - probs >= top_p                  # the mass before it already reaches top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


@torch.no_grad()
def sample_sids(model: MultiGR, prompts: Prompts, trie_next: Tensor, group: int, top_p: float,
                temperature: float, generator: torch.Generator) -> Tensor:
    """`group` SIDs per prompt by trie-constrained top-p sampling, level by level: (B, G, L) codes.

    At each level the level-restricted logits are masked to the valid children of each sample's
    trie node, divided by `temperature`, cut to the top-p nucleus and sampled.
    """
    model.eval()
    vocab = model.vocab
    dev = next(model.parameters()).device
    trie_next = trie_next.to(dev)
    h, prefix = model(prompts.tokens.to(dev), prompts.positions.to(dev), prompts.valid.to(dev))
    b = h.shape[0]
    h, past = h[:, -1:].expand(b, group, -1), None
    nodes = torch.zeros(b, group, dtype=torch.long, device=dev)
    codes = []
    for level in range(vocab.sid_levels):
        child = trie_children(trie_next, nodes)                               # (B, G, K)
        logits = (model.sid_logits(h, level) / temperature).masked_fill(child < 0, float("-inf"))
        probs = torch.softmax(top_p_filter(logits, top_p), dim=-1)
        code = torch.multinomial(probs.view(b * group, -1).cpu(), 1, generator=generator).view(b, group).to(dev)
        nodes = child.gather(2, code[..., None]).squeeze(2)
        codes.append(code)
        if level < vocab.sid_levels - 1:
            h, past = model.decode_step(vocab.sid_offset + level * vocab.codebook_size + code, prefix, past)
    return torch.stack(codes, dim=2).cpu()


def rollout(model: MultiGR, prompts: Prompts, trie_next: Tensor, cfg: MoPOConfig,
            generator: torch.Generator) -> Tensor:
    """The group of G SIDs per prompt from `model` (B, G, L) on CPU, -1 rows where beam search found fewer."""
    if cfg.rollout == "beam":
        widths = [max(w, cfg.group_size) for w in model.cfg.beam_widths]
        return beam_search(model, prompts, widths, cfg.group_size, trie_next).sids
    return sample_sids(model, prompts, trie_next, cfg.group_size, cfg.top_p, cfg.temperature, generator)


def logged_members(contexts: Contexts, idx: np.ndarray, count: int, min_level: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Off-policy group augmentation: up to `count` logged funnel SIDs of each context `idx` (B,)
    that reached `min_level` or better, best level first, ties in a seeded random order:
    (B, count, L) codes, -1 rows where a context has fewer. The selection reads funnel levels
    only (never the long-term flag or the reward mode), so every row of the tables gets the same
    groups for the same seed."""
    out = np.full((len(idx), count), -1, np.int64)
    for row, c in enumerate(idx):
        lo, hi = contexts.offsets[c], contexts.offsets[c + 1]
        lv = contexts.levels[lo:hi].astype(np.int64)
        ok = np.flatnonzero(lv >= min_level)
        if len(ok) and count:
            ok = ok[np.lexsort((rng.random(len(ok)), -lv[ok]))][:count]
            out[row, : len(ok)] = contexts.keys[lo:hi][ok]
    return contexts.codes(out)


def eligible_contexts(contexts: Contexts, cfg: MoPOConfig) -> np.ndarray:
    """The contexts MoPO draws from: those whose best funnel level is at least `cfg.context_min_level`."""
    return np.flatnonzero(contexts.best_level() >= LEVELS.index(cfg.context_min_level))


def expected_reward(model: MultiGR, contexts: Contexts, trie_next: Tensor, cfg: MoPOConfig,
                    weights: dict[str, float], seed: int = 0, batch_size: int = 64) -> float:
    """Mean task reward (before CIW) of the groups `model` draws for every context (`cfg.rollout`)."""
    gen = torch.Generator().manual_seed(seed)
    total, n = 0.0, 0
    for start in range(0, len(contexts), batch_size):
        idx = np.arange(start, min(start + batch_size, len(contexts)))
        sids = rollout(model, left_pad([contexts.prompts[i] for i in idx]), trie_next, cfg, gen)
        keys = sid_keys(sids.numpy(), contexts.codebook_size)
        r = rewards(contexts, idx, keys, cfg, weights)
        total, n = total + float(r[keys >= 0].sum()), n + int((keys >= 0).sum())
    return total / max(n, 1)


def ppo_loss(logp: Tensor, logp_old: Tensor, adv: Tensor, valid: Tensor, clip_eps: float) -> Tensor:
    """Token-level clipped surrogate, negated: logp, logp_old (B, G, L), adv and valid (B, G)."""
    ratio = torch.exp(logp - logp_old)
    a = adv[..., None]
    surrogate = torch.minimum(ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a)
    mask = valid[..., None].expand_as(surrogate)
    return -(surrogate * mask).sum() / mask.sum().clamp(min=1)


def kl_to_reference(logp: Tensor, logp_ref: Tensor, valid: Tensor) -> Tensor:
    """k3 estimate of KL(pi_theta || pi_ref) on the sampled tokens, mean over valid tokens."""
    d = logp_ref - logp
    kl = torch.exp(d) - d - 1
    mask = valid[..., None].expand_as(kl)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def _frozen(model: MultiGR) -> MultiGR:
    snap = copy.deepcopy(model).eval()
    for p in snap.parameters():
        p.requires_grad_(False)
    return snap


def align(policy: MultiGR, contexts: Contexts, trie_next: torch.Tensor, cfg: MoPOConfig, seed: int = 0,
          progress: bool = False) -> tuple[MultiGR, dict]:
    """MoPO (or plain GRPO with `reward="conversion"`) on `contexts`; see the module docstring.

    `policy` is trained in place (without dropout) and returned on CPU in eval mode with the
    stats: `mean_reward` (task reward before CIW, one mean per pi_old refresh window),
    `mean_ciw`, `steps`, `seconds`, `weights` (the level weights). Deterministic given `seed`
    (contexts, samples and the torch state are seeded; beam rollouts are deterministic).
    Inside a `models.training.learning_curves` block, each step's loss and mean task reward are
    logged as the curve `CURVE` (its "epoch" is the pi_old refresh window).
    """
    started = time.perf_counter()
    torch.manual_seed(seed)
    torch.set_num_threads(policy.cfg.num_threads)
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    weights = level_weights(contexts)
    dev = next(policy.parameters()).device
    policy.eval()                                                     # no dropout: ratios are exact
    reference = _frozen(policy) if cfg.kl_coef > 0 else None
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
    window: list[float] = []
    reward_means: list[float] = []
    ciws: list[float] = []
    old = policy
    pool = eligible_contexts(contexts, cfg)
    if not len(pool):
        raise ValueError(f"no MoPO context reached {cfg.context_min_level}")
    aug_rng = np.random.default_rng([seed, 1])                        # group augmentation, apart from `rng`
    min_logged = LEVELS.index(cfg.logged_min_level)
    logger = curve_logger(CURVE)
    for step in tqdm(range(cfg.steps), desc="MoPO", disable=not progress):
        if step % cfg.refresh_every == 0:
            old = _frozen(policy)
            if window:
                reward_means.append(float(np.mean(window)))
            window = []
        idx = pool[np.sort(rng.choice(len(pool), size=min(cfg.contexts_per_step, len(pool)), replace=False))]
        prompts = left_pad([contexts.prompts[i] for i in idx])
        sids = rollout(old, prompts, trie_next, cfg, gen)
        n_rolled = sids.shape[1]
        if cfg.logged_per_group:
            logged = logged_members(contexts, idx, cfg.logged_per_group, min_logged, aug_rng)
            sids = torch.cat([sids, torch.from_numpy(logged).to(sids.dtype)], dim=1)
        keys = sid_keys(sids.numpy(), contexts.codebook_size)
        valid = torch.from_numpy(keys >= 0).to(dev)
        task = rewards(contexts, idx, keys, cfg, weights)
        on_policy = task[:, :n_rolled][keys[:, :n_rolled] >= 0]             # on-policy members only
        window.extend(on_policy.tolist())
        with torch.no_grad():
            logp_old = token_logprobs(old, prompts, sids)             # (B, G, L)
            weight = ciw(logp_old.sum(-1), cfg.ciw_floor, cfg.ciw_cap)
        r = torch.as_tensor(task, dtype=torch.float32, device=dev)
        if cfg.use_ciw and cfg.reward == "mopo":
            r = r * weight
            ciws.extend(weight[valid].tolist())
        adv = group_advantages(r, valid)
        logp = token_logprobs(policy, prompts, sids)
        loss = ppo_loss(logp, logp_old, adv, valid, cfg.clip_eps)
        if reference is not None:
            with torch.no_grad():
                logp_ref = token_logprobs(reference, prompts, sids)
            loss = loss + cfg.kl_coef * kl_to_reference(logp, logp_ref, valid)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        if logger is not None:
            logger.log_metrics({"epoch": step // cfg.refresh_every, "train_loss": float(loss.detach()),
                                "reward": float(on_policy.mean()) if on_policy.size else float("nan")}, step=step)
    if logger is not None:
        logger.save()
    if window:
        reward_means.append(float(np.mean(window)))
    stats = {"mean_reward": reward_means, "mean_ciw": float(np.mean(ciws)) if ciws else float("nan"),
             "steps": cfg.steps, "seconds": round(time.perf_counter() - started, 1), "weights": weights}
    return policy.cpu().eval(), stats
