"""Training losses as Paddle computes them: cross entropy, label smoothing, mixup, GoogLeNet's auxiliary heads.

Label smoothing (Paddle ``label_smooth``): target q = (1 - eps) * one_hot + eps / K, loss = -sum_k q_k log p_k.
Mixup (Paddle's reader + build_model): per batch lam ~ Beta(alpha, alpha) and a permutation pi; the images become
lam * x + (1 - lam) * x[pi] and the loss is lam * mean(CE(y)) + (1 - lam) * mean(CE(y[pi])).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, epsilon: float = 0.0) -> torch.Tensor:
    """Mean cross entropy against hard labels, smoothed with ``epsilon`` (0 = plain)."""
    if logits.dtype not in (torch.float32, torch.float64):  # fp16/bf16 logits: the softmax in fp32
        logits = logits.float()
    log_p = F.log_softmax(logits, dim=1)
    nll = -log_p.gather(1, target[:, None]).squeeze(1)
    if epsilon == 0.0:
        return nll.mean()
    uniform = -log_p.mean(dim=1)  # -sum_k (1/K) log p_k
    return ((1.0 - epsilon) * nll + epsilon * uniform).mean()


@dataclass
class MixedBatch:
    """A mixup batch: images already mixed; ``lam`` weights ``labels_a`` and ``1 - lam`` weights ``labels_b``."""

    images: torch.Tensor
    labels_a: torch.Tensor
    labels_b: torch.Tensor
    lam: float


def mixup_batch(images: torch.Tensor, labels: torch.Tensor, alpha: float, seed: int) -> MixedBatch:
    """Mix a batch with its own permutation. Draws come from ``seed`` only, so a resumed run mixes the same way."""
    rng = np.random.default_rng(seed)
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(images.shape[0])).to(images.device)
    mixed = lam * images + (1.0 - lam) * images[perm]
    return MixedBatch(mixed, labels, labels[perm], lam)


def mixup_loss(
    logits: torch.Tensor, labels_a: torch.Tensor, labels_b: torch.Tensor, lam: float, epsilon: float = 0.0
) -> torch.Tensor:
    """lam * CE(labels_a) + (1 - lam) * CE(labels_b), each term a batch mean (label smoothing applies to both)."""
    return lam * cross_entropy(logits, labels_a, epsilon) + (1.0 - lam) * cross_entropy(logits, labels_b, epsilon)


def split_outputs(output: torch.Tensor | tuple) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(main logits, auxiliary logits). GoogLeNet returns ``(logits, [aux, ...])`` in training mode."""
    if isinstance(output, (tuple, list)):
        main, aux = output
        return main, list(aux)
    return output, []


def training_loss(
    output: torch.Tensor | tuple,
    labels: torch.Tensor,
    *,
    epsilon: float = 0.0,
    mix: MixedBatch | None = None,
    aux_weights: tuple[float, ...] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, main logits): the main head's loss plus ``sum(w_i * loss(aux_i))`` over auxiliary heads."""
    main, aux = split_outputs(output)
    if aux and len(aux) != len(aux_weights):
        raise ValueError(f"model returned {len(aux)} auxiliary outputs but has {len(aux_weights)} aux_loss_weights")

    def one(logits: torch.Tensor) -> torch.Tensor:
        if mix is None:
            return cross_entropy(logits, labels, epsilon)
        return mixup_loss(logits, mix.labels_a, mix.labels_b, mix.lam, epsilon)

    loss = one(main)
    for weight, logits in zip(aux_weights, aux):
        loss = loss + weight * one(logits)
    return loss, main
