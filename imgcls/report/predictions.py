"""What an eval report is made of, accumulated batch by batch in memory that does not grow with the image count.

``PredictionStats`` keeps, for C classes: the C x C confusion counts (int64, rows = true class, columns = predicted
class), each class's top-5 hits, the summed cross entropy, and a fixed-size min-heap of the K most confident
mistakes (probability of the wrong class, sample index, true and predicted class, and the image as the model saw it,
de-normalized to uint8). So 1000 classes cost 8 MB of confusion whatever the image count; K images are kept.

Ranks of a distributed eval each accumulate their share; ``gather`` sums the counts and merges the heaps, so every
rank ends with the whole dataset's numbers.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from imgcls.data.preprocess import PreprocessSpec

DEFAULT_MISTAKES = 16


@dataclass(order=True)
class Mistake:
    """One confident wrong prediction. Ordered by (probability, -index): the heap drops the least confident first,
    and among equal probabilities the later sample, so ranks merge to the same set."""

    probability: float
    tiebreak: int  # -(sample index, or position in the stream when the index is unknown)
    true: int = field(compare=False)
    pred: int = field(compare=False)
    index: int = field(default=-1, compare=False)  # the sample's index in the evaluated list; -1: not given
    image: np.ndarray | None = field(default=None, compare=False, repr=False)  # uint8 HWC RGB


def denormalizer(spec: PreprocessSpec) -> Callable[[torch.Tensor], np.ndarray]:
    """normalized float NCHW -> uint8 NHWC RGB pixels (the inverse of the loader's ``pixel * scale + shift``)."""
    scale, shift = spec.scale_shift()

    def pixels(images: torch.Tensor) -> np.ndarray:
        x = images.detach().float().cpu()
        x = (x - shift.view(1, 3, 1, 1)) / scale.view(1, 3, 1, 1)
        return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()

    return pixels


class PredictionStats:
    """Bounded per-class accumulators of an evaluation over ``num_classes`` classes; see the module doc."""

    def __init__(
        self,
        num_classes: int,
        top_mistakes: int = DEFAULT_MISTAKES,
        to_pixels: Callable[[torch.Tensor], np.ndarray] | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes, self.top_mistakes, self.to_pixels = num_classes, top_mistakes, to_pixels
        self.confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64)
        self.top5 = torch.zeros(num_classes, dtype=torch.int64)
        self.loss_sum = 0.0
        self.mistakes: list[Mistake] = []  # a min-heap: mistakes[0] is the least confident kept
        self._seen = 0

    def update(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        images: torch.Tensor | None = None,
        indices: Sequence[int] | None = None,
    ) -> None:
        """Count one batch: ``logits`` [N, C], ``labels`` [N]; ``images`` (the model's input) and ``indices`` (the
        samples' positions in the evaluated list) only feed the mistakes kept."""
        c = self.num_classes
        if logits.ndim != 2 or logits.shape[1] != c:
            raise ValueError(f"logits of shape {tuple(logits.shape)} for {c} classes")
        labels = labels.to(logits.device, torch.long)
        logits = logits.float()
        if self.confusion.device != logits.device:  # counts stay where the logits are: no host sync per batch
            self.confusion, self.top5 = self.confusion.to(logits.device), self.top5.to(logits.device)
        pred = logits.argmax(dim=1)
        self.confusion += torch.bincount(labels * c + pred, minlength=c * c)
        hit5 = (logits.topk(min(5, c), dim=1).indices == labels[:, None]).any(dim=1)
        self.top5 += torch.bincount(labels[hit5], minlength=c)
        self.loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
        if self.top_mistakes > 0:
            self._keep_mistakes(logits, labels, pred, images, indices)

    def _keep_mistakes(self, logits, labels, pred, images, indices) -> None:
        """Push this batch's most confident mistakes that beat the heap's weakest; only those are copied to the host."""
        base, self._seen = self._seen, self._seen + logits.shape[0]  # stream positions stand in for missing indices
        prob = torch.softmax(logits, dim=1).gather(1, pred[:, None])[:, 0]
        score = torch.where(pred != labels, prob, torch.full_like(prob, -1.0))
        top = score.topk(min(self.top_mistakes, score.shape[0]))
        values, rows = top.values.cpu().tolist(), top.indices.cpu().tolist()
        floor = self.mistakes[0].probability if len(self.mistakes) >= self.top_mistakes else -1.0
        chosen = [(v, r) for v, r in zip(values, rows) if v >= 0 and v > floor]
        if not chosen:
            return
        picked = [r for _, r in chosen]
        pixels = self.to_pixels(images[picked]) if images is not None and self.to_pixels is not None else None
        true, guess = labels[picked].cpu().tolist(), pred[picked].cpu().tolist()
        for j, (v, r) in enumerate(chosen):
            index = int(indices[r]) if indices is not None else -1
            tiebreak = -index if indices is not None else -(base + r)
            image = pixels[j].copy() if pixels is not None else None
            self._push(Mistake(v, tiebreak, true[j], guess[j], index, image))

    def _push(self, mistake: Mistake) -> None:
        if len(self.mistakes) < self.top_mistakes:
            heapq.heappush(self.mistakes, mistake)
        elif mistake > self.mistakes[0]:
            heapq.heapreplace(self.mistakes, mistake)

    def merge(self, other: PredictionStats) -> None:
        """Add ``other``'s counts and keep the most confident mistakes of both."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class stats into {self.num_classes}-class stats")
        self.confusion = self.confusion.cpu() + other.confusion.cpu()
        self.top5 = self.top5.cpu() + other.top5.cpu()
        self.loss_sum += other.loss_sum
        for m in other.mistakes:
            self._push(m)

    def gather(self) -> None:
        """In a distributed run: sum every rank's counts and merge their mistakes (all ranks end equal).
        A no-op in a single process."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        where = self.confusion.device if dist.get_backend() == "nccl" else torch.device("cpu")
        counts = torch.cat((self.confusion, self.top5)).to(where)
        loss = torch.tensor([self.loss_sum], dtype=torch.float64, device=where)
        dist.all_reduce(counts)
        dist.all_reduce(loss)
        c = self.num_classes
        self.confusion, self.top5, self.loss_sum = counts[: c * c].cpu(), counts[c * c :].cpu(), float(loss.item())
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, self.mistakes)
        self.mistakes = []
        for part in parts:
            for m in part:
                self._push(m)

    def matrix(self) -> np.ndarray:
        """The C x C confusion counts (rows: true class, columns: predicted class)."""
        return self.confusion.cpu().numpy().reshape(self.num_classes, self.num_classes)

    def worst_mistakes(self) -> list[Mistake]:
        """The kept mistakes, most confident first."""
        return sorted(self.mistakes, reverse=True)

    def state_bytes(self) -> int:
        """Bytes this accumulator holds (tensors and kept images): what must not grow with the image count."""
        images = sum(m.image.nbytes for m in self.mistakes if m.image is not None)
        return self.confusion.nbytes + self.top5.nbytes + images
