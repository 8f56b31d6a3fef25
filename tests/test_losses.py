"""Cross entropy, label smoothing, mixup and GoogLeNet's auxiliary loss against hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from imgcls.losses import cross_entropy, mixup_batch, mixup_loss, training_loss

LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]], dtype=torch.float64)
LABELS = torch.tensor([0, 2])


def log_softmax_by_hand(row: list[float]) -> list[float]:
    z = math.log(sum(math.exp(v) for v in row))
    return [v - z for v in row]


def test_plain_cross_entropy_by_hand():
    lp = [log_softmax_by_hand(r) for r in LOGITS.tolist()]
    expected = -(lp[0][0] + lp[1][2]) / 2
    assert cross_entropy(LOGITS, LABELS).item() == pytest.approx(expected, rel=1e-12)


def test_label_smoothing_by_hand():
    """Paddle's label_smooth: q = (1 - eps) one_hot + eps / K; loss = -sum q log p, batch mean."""
    eps, k = 0.2, 3
    lp = [log_softmax_by_hand(r) for r in LOGITS.tolist()]
    per_row = []
    for row, label in zip(lp, LABELS.tolist()):
        q = [(1 - eps) * (j == label) + eps / k for j in range(k)]
        per_row.append(-sum(qj * lj for qj, lj in zip(q, row)))
    assert cross_entropy(LOGITS, LABELS, eps).item() == pytest.approx(sum(per_row) / 2, rel=1e-12)


def test_label_smoothing_matches_torch():
    logits = torch.randn(16, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(1))
    ref = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
    assert cross_entropy(logits, labels, 0.1).item() == pytest.approx(ref.item(), rel=1e-12)


def test_mixup_loss_by_hand():
    lam = 0.3
    labels_b = torch.tensor([1, 0])
    lp = [log_softmax_by_hand(r) for r in LOGITS.tolist()]
    ce_a = -(lp[0][0] + lp[1][2]) / 2
    ce_b = -(lp[0][1] + lp[1][0]) / 2
    got = mixup_loss(LOGITS, LABELS, labels_b, lam).item()
    assert got == pytest.approx(lam * ce_a + (1 - lam) * ce_b, rel=1e-12)


def test_mixup_batch_mixes_with_its_permutation_and_is_seeded():
    images = torch.arange(4 * 3 * 2 * 2, dtype=torch.float64).reshape(4, 3, 2, 2)
    labels = torch.tensor([0, 1, 2, 3])
    mix = mixup_batch(images, labels, alpha=0.2, seed=123)
    perm = mix.labels_b  # labels are 0..3, so labels_b is the permutation itself
    assert sorted(perm.tolist()) == [0, 1, 2, 3]
    assert 0.0 <= mix.lam <= 1.0
    torch.testing.assert_close(mix.images, mix.lam * images + (1 - mix.lam) * images[perm])
    again = mixup_batch(images, labels, alpha=0.2, seed=123)
    assert again.lam == mix.lam and torch.equal(again.labels_b, mix.labels_b)
    other = mixup_batch(images, labels, alpha=0.2, seed=124)
    assert other.lam != mix.lam


def test_training_loss_adds_weighted_aux_heads():
    aux1 = LOGITS.flip(1)
    aux2 = LOGITS * 0.5
    loss, main = training_loss((LOGITS, [aux1, aux2]), LABELS, aux_weights=(0.3, 0.3))
    expected = cross_entropy(LOGITS, LABELS) + 0.3 * cross_entropy(aux1, LABELS) + 0.3 * cross_entropy(aux2, LABELS)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    assert main is LOGITS
    with pytest.raises(ValueError, match="aux_loss_weights"):
        training_loss((LOGITS, [aux1]), LABELS, aux_weights=())


def test_training_loss_with_mixup_and_smoothing():
    mix = mixup_batch(torch.zeros(2, 3, 1, 1), LABELS, 0.2, seed=7)
    loss, _ = training_loss(LOGITS, LABELS, epsilon=0.1, mix=mix)
    expected = mix.lam * cross_entropy(LOGITS, LABELS, 0.1) + (1 - mix.lam) * cross_entropy(LOGITS, mix.labels_b, 0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
