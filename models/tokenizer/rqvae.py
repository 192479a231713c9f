"""RQ-VAE (Lightning): an MLP auto-encoder whose latent is quantised by L residual codebooks.

As in TIGER (Rajput et al., 2023): encoder MLP -> latent z (D); level l picks
the nearest code of codebook l to the residual r_l (r_1 = z,
r_{l+1} = r_l - e_l); the decoder reconstructs x from sum_l e_l (straight-
through gradient). Loss = MSE(x, x_hat) + sum_l ||sg[r_l] - e_l||^2
+ beta ||r_l - sg[e_l]||^2.

Departures from the paper:
- inputs are standardised per dimension (mean/std frozen with the model),
  so the reconstruction error reads as a fraction of variance;
- k-means initialisation (seeded `faiss.Kmeans`) runs on the residuals of the
  whole training set (the paper uses the first batch; faiss subsamples to 256
  points per code);
- dead codes (unused for `dead_code_steps` training steps) are re-seeded with
  random residuals of the current batch, so level usage stays high;
- the codes of the final model are taken in eval mode on the full set.

Training runs on the `models.training` Trainer (`TrainerConfig`: CPU by default).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import faiss
import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from foundation.sections.tokenizer import TokenizerConfig
from foundation.sections.trainer import TrainerConfig
from models import checkpoint
from models.tokenizer.runtime import torch_threads
from models.training import build_trainer


def mlp(dims: list[int], dropout: float) -> nn.Sequential:
    """Linear layers with SiLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers += [nn.SiLU(), nn.Dropout(dropout)] if dropout else [nn.SiLU()]
    return nn.Sequential(*layers)


def sq_dist(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(N, D), (K, D) -> (N, K) squared Euclidean distances (one matmul; cdist is slow on CPU here)."""
    return (x * x).sum(1, keepdim=True) - 2 * x @ c.T + (c * c).sum(1)


def kmeans(x: np.ndarray, k: int, iters: int, seed: int) -> np.ndarray:
    """Seeded, deterministic `faiss.Kmeans`: (N, D) float32 -> (k, D) centroids.

    With fewer points than k, the centroids are the points, then random points plus small noise.
    """
    n, d = x.shape
    if n < k:
        rng = np.random.default_rng(seed)
        extra = x[rng.integers(n, size=k - n)]
        return np.concatenate([x, extra + 1e-3 * rng.standard_normal(extra.shape)]).astype(np.float32)
    km = faiss.Kmeans(d, k, niter=iters, seed=seed, verbose=False, min_points_per_centroid=1)
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    return km.centroids


class ResidualQuantizer(nn.Module):
    """L codebooks of K codes in D dims, applied to successive residuals."""

    def __init__(self, levels: int, k: int, dim: int):
        super().__init__()
        self.codebooks = nn.Parameter(torch.randn(levels, k, dim) * 0.1)  # (L, K, D)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """z (B, D) -> (codes (B, L), z_q (B, D) straight-through, quantisation loss terms, residuals)."""
        residual, zq, codes, residuals = z, torch.zeros_like(z), [], []
        codebook_loss = z.new_zeros(())
        commit_loss = z.new_zeros(())
        for book in self.codebooks:                                      # (K, D)
            residuals.append(residual)
            idx = sq_dist(residual.detach(), book.detach()).argmin(1)    # (B,)
            e = book[idx]                                                # (B, D)
            codebook_loss = codebook_loss + ((residual.detach() - e) ** 2).sum(1).mean()
            commit_loss = commit_loss + ((residual - e.detach()) ** 2).sum(1).mean()
            zq = zq + e
            residual = residual - e.detach()
            codes.append(idx)
        zq_st = z + (zq - z).detach()
        return torch.stack(codes, 1), zq_st, torch.stack([codebook_loss, commit_loss]), residuals


class RQVAE(nn.Module):
    """The auto-encoder with its input standardisation buffers."""

    def __init__(self, input_dim: int, cfg: TokenizerConfig):
        super().__init__()
        dims = [input_dim, *cfg.hidden_dims, cfg.latent_dim]
        self.encoder = mlp(dims, cfg.dropout)
        self.decoder = mlp(dims[::-1], cfg.dropout)
        self.quantizer = ResidualQuantizer(cfg.levels, cfg.codebook_size, cfg.latent_dim)
        self.register_buffer("x_mean", torch.zeros(input_dim))
        self.register_buffer("x_std", torch.ones(input_dim))

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.x_mean) / self.x_std

    def forward(self, x: torch.Tensor):
        """x (B, In) raw -> (x_std (B, In), x_hat (B, In), codes (B, L), quantisation losses (2,), residuals)."""
        xs = self.standardise(x)
        codes, zq, qloss, residuals = self.quantizer(self.encoder(xs))
        return xs, self.decoder(zq), codes, qloss, residuals

    def autoencode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Warm-up path without quantisation: x (B, In) -> (x_std, x_hat)."""
        xs = self.standardise(x)
        return xs, self.decoder(self.encoder(xs))

    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor, batch_size: int = 4096) -> tuple[np.ndarray, float]:
        """(N, In) -> (codes (N, L) int64, reconstruction MSE on standardised inputs)."""
        self.eval()
        x = x.float()
        codes, se = [], 0.0
        for xb in torch.split(x, batch_size):
            xs, x_hat, c, _, _ = self(xb)
            codes.append(c)
            se += float(((xs - x_hat) ** 2).sum())
        n = max(x.shape[0] * x.shape[1], 1)
        return torch.cat(codes).numpy().astype(np.int64), se / n


    @torch.no_grad()
    def last_level_distances(self, x: torch.Tensor) -> torch.Tensor:
        """(n, In) -> (n, K) squared distances of the last-level residual to every last-level code."""
        self.eval()
        *_, residuals = self(x.float())
        book = self.quantizer.codebooks[-1]
        return sq_dist(residuals[-1], book)


class RQVAEModule(L.LightningModule):
    """Training loop: reconstruction + codebook + commitment, with dead-code re-seeding."""

    def __init__(self, model: RQVAE, cfg: TokenizerConfig, quantize: bool = True):
        super().__init__()
        self.model, self.cfg, self.quantize = model, cfg, quantize
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.register_buffer("last_used", torch.zeros(cfg.levels, cfg.codebook_size, dtype=torch.long))
        self.n_reseeded = 0

    def training_step(self, batch, batch_idx):
        (x,) = batch
        if not self.quantize:
            xs, x_hat = self.model.autoencode(x)
            recon = ((xs - x_hat) ** 2).mean()
            self.log("recon", recon, on_epoch=True, on_step=False)
            return recon
        xs, x_hat, codes, qloss, residuals = self.model(x)
        recon = ((xs - x_hat) ** 2).mean()
        loss = recon + qloss[0] + self.cfg.commitment_beta * qloss[1]
        self._track_and_reseed(codes, residuals)
        self.log_dict({"recon": recon, "loss": loss}, prog_bar=False, on_epoch=True, on_step=False)
        return loss

    @torch.no_grad()
    def _track_and_reseed(self, codes: torch.Tensor, residuals: list[torch.Tensor]) -> None:
        step = self.global_step + 1
        for lvl in range(self.cfg.levels):
            self.last_used[lvl, codes[:, lvl].unique()] = step
            dead = torch.nonzero(step - self.last_used[lvl] >= self.cfg.dead_code_steps).squeeze(1)
            if len(dead):
                r = residuals[lvl].detach()
                pick = torch.randint(len(r), (len(dead),), generator=self.gen)
                self.model.quantizer.codebooks.data[lvl, dead] = r[pick]
                self.last_used[lvl, dead] = step
                self.n_reseeded += len(dead)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)


@torch.no_grad()
def kmeans_init(model: RQVAE, x: torch.Tensor, cfg: TokenizerConfig) -> None:
    """Initialise every level's codebook with k-means on that level's residuals of the whole set."""
    residual = model.encoder(model.standardise(x))                       # (N, D)
    for lvl in range(cfg.levels):
        book = torch.from_numpy(kmeans(residual.numpy(), cfg.codebook_size, cfg.kmeans_iters, cfg.seed + lvl))
        model.quantizer.codebooks.data[lvl] = book                        # (K, D)
        residual = residual - book[sq_dist(residual, book).argmin(1)]


@dataclass
class FitStats:
    epochs: int
    steps: int
    final_recon: float
    codes_reseeded: int


def _fit(module: RQVAEModule, loader: DataLoader, trainer_cfg: TrainerConfig, epochs: int, max_steps: int,
         curve: str) -> L.Trainer:
    trainer = build_trainer(trainer_cfg, max_epochs=epochs, max_steps=max_steps, curve=curve)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, loader)
    module.model.cpu()
    return trainer


def train_rqvae(x: np.ndarray, cfg: TokenizerConfig, progress: bool = False,
                trainer_cfg: TrainerConfig = TrainerConfig()) -> tuple[RQVAE, FitStats]:
    """Fit an RQ-VAE on (N, In) inputs (device and precision from `trainer_cfg`, CPU by default);
    deterministic for a fixed `cfg.seed` on a given device.

    Phase 1 (`warmup_epochs`, a departure from TIGER): the plain auto-encoder, so that the
    k-means initialisation clusters meaningful latents rather than a random projection.
    Phase 2 (`epochs`): k-means init of every level, then the full RQ-VAE loss.
    Both phases stop early at a step cap (`max_steps`, a quarter of it for the warm-up), so big
    catalogs train for a bounded time.
    """
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if progress:
        trainer_cfg = trainer_cfg.model_copy(update={"progress_bar": True})
    with torch_threads(cfg.torch_threads):
        xt = torch.as_tensor(x, dtype=torch.float32)
        model = RQVAE(xt.shape[1], cfg)
        model.x_mean.copy_(xt.mean(0))
        model.x_std.copy_(xt.std(0).clamp(min=1e-6) if len(xt) > 1 else torch.ones(xt.shape[1]))
        loader = DataLoader(TensorDataset(xt), batch_size=min(cfg.batch_size, len(xt)), shuffle=True,
                            generator=torch.Generator().manual_seed(cfg.seed), drop_last=False)
        if cfg.warmup_epochs:
            _fit(RQVAEModule(model, cfg, quantize=False), loader, trainer_cfg, cfg.warmup_epochs,
                 max(cfg.max_steps // 4, 1), "rqvae_warmup")
        kmeans_init(model, xt, cfg)
        module = RQVAEModule(model, cfg)
        trainer = _fit(module, loader, trainer_cfg, cfg.epochs, cfg.max_steps, "rqvae")
    recon = float(trainer.callback_metrics.get("recon", torch.tensor(float("nan"))))
    model.eval()
    return model, FitStats(trainer.current_epoch, trainer.global_step, recon, module.n_reseeded)


def model_to_bytes(model: RQVAE, meta: dict) -> bytes:
    """The model of a SID version as one checkpoint file (`models.checkpoint.to_file`: weights +
    `meta`, which holds `input_dim` and the `tokenizer` config)."""
    return checkpoint.to_file(*checkpoint.to_bytes(model.state_dict(), meta))


def model_from_bytes(data: bytes) -> tuple[RQVAE, dict]:
    """Inverse of `model_to_bytes` (the weights checked against the sha256 of `meta`)."""
    state, meta = checkpoint.from_bytes(*checkpoint.from_file(data))
    meta.pop("sha256")
    model = RQVAE(meta["input_dim"], TokenizerConfig(**meta["tokenizer"]))
    model.load_state_dict(state)
    model.eval()
    return model, meta
