"""Deployable models: BatchNorm folded into the preceding convs, saved as TorchScript and ONNX with
``inference.json`` beside them (the model, its classes and its preprocessing spec; Paddle's ``--save_inference=True``).

Folding (eval mode): y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta is a conv with
W' = W * s and b' = (b - mean) * s + beta, where s = gamma / sqrt(var + eps) per output channel.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from imgcls.config import from_plain, to_plain
from imgcls.data.preprocess import PreprocessSpec
from imgcls.data.transforms import AugConfig
from imgcls.layers import ConvBNAct, set_fused

TORCHSCRIPT_FILE = "model.ts"
ONNX_FILE = "model.onnx"
PREPROCESS_FILE = "inference.json"


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv (with bias) equal to ``bn(conv(x))`` with ``bn`` in eval mode."""
    folded = copy.deepcopy(conv)
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    shape = (-1,) + (1,) * (conv.weight.dim() - 1)
    folded.weight = nn.Parameter(conv.weight.detach() * scale.reshape(shape))
    folded.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias.detach())
    return folded


def _fold_sequential(seq: nn.Sequential) -> int:
    """Fold every Conv2d directly followed by a BatchNorm2d inside a Sequential; returns how many."""
    names = list(seq._modules)
    count = 0
    for first, second in zip(names, names[1:]):
        conv, bn = seq._modules[first], seq._modules[second]
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
            seq._modules[first] = fold_conv_bn(conv, bn)
            seq._modules[second] = nn.Identity()
            count += 1
    return count


def fold_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with BN folded into the conv before it (``ConvBNAct`` blocks and Conv2d ->
    BatchNorm2d pairs in Sequentials); other BNs are kept. The input model is not modified."""
    model = set_fused(copy.deepcopy(model).eval(), False)  # fused kernels read bn.*; folded blocks have none
    folded = 0
    for module in model.modules():
        if isinstance(module, ConvBNAct) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv = fold_conv_bn(module.conv, module.bn)
            module.bn = nn.Identity()
            folded += 1
        elif isinstance(module, nn.Sequential):
            folded += _fold_sequential(module)
    model.folded_bn_count = folded
    return model


EXPORT_FORMAT = 2


@dataclass(frozen=True)
class InferenceInfo:
    """What a deployed model is: its name, class count and names, and the preprocessing its input needs (the
    ``PreprocessSpec`` it was trained with: RGB, resize short side, center crop, normalize, NCHW float32)."""

    model: str
    num_classes: int
    preprocess: PreprocessSpec
    label_names: tuple[str, ...] | None = None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"format": EXPORT_FORMAT, **to_plain(self)}, indent=1))

    @staticmethod
    def load(path: Path) -> InferenceInfo:
        """Read an ``inference.json`` (this format, or the flat format-1 one whose fields sat at the top level)."""
        data = json.loads(Path(path).read_text())
        if data.pop("format", 1) != EXPORT_FORMAT:
            return _format1_info(data)
        if data.get("label_names") is not None:
            data["label_names"] = tuple(data["label_names"])
        return from_plain(InferenceInfo, data)


def _format1_info(data: dict) -> InferenceInfo:
    """A format-1 ``inference.json``: model, num_classes, input_size, resize_short, mean, std, interpolation."""
    spec = PreprocessSpec(
        data["input_size"],
        data["resize_short"],
        tuple(data["mean"]),
        tuple(data["std"]),
        AugConfig(interpolation=data.get("interpolation", "linear")),
    )
    names = tuple(data["label_names"]) if data.get("label_names") else None
    return InferenceInfo(data["model"], data["num_classes"], spec, names)


def export_inference(model: nn.Module, out_dir: str | os.PathLike, info: InferenceInfo, onnx: bool = True) -> Path:
    """Fold BN, then write ``model.ts`` (TorchScript trace), ``model.onnx`` (checked with onnxruntime) and the
    preprocessing json into ``out_dir``. Raises if the exported graphs disagree with the folded model."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folded = fold_bn(model).cpu().float()
    size = info.preprocess.input_size
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    # TorchScript and the TorchScript-based ONNX exporter are deprecated in torch 2.9+, yet they are what C++
    # (libtorch) and onnxruntime deployments load today; keep the deprecation notices out of the user's log.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = folded(example)
        traced = torch.jit.trace(folded, example, check_trace=False)
        traced.save(str(out / TORCHSCRIPT_FILE))
        torch.testing.assert_close(traced(example), expected, rtol=1e-4, atol=1e-4)
        if onnx:
            export_onnx(folded, example, out / ONNX_FILE)
            got = OnnxRunner(out / ONNX_FILE)(example)
            torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)
    info.save(out / PREPROCESS_FILE)
    return out


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """ONNX with a dynamic batch dimension (input ``image``, output ``logits``)."""
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


class OnnxRunner:
    """Runs a model.onnx with onnxruntime on CPU; called like a module on an NCHW float tensor."""

    def __init__(self, path: Path) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        feed = {"image": np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)}
        return torch.from_numpy(self.session.run(["logits"], feed)[0])


def load_inference(model_dir: str | os.PathLike, backend: str = "torchscript") -> tuple[object, InferenceInfo]:
    """(callable model, what it is and needs) from a folder written by ``export_inference``; backend
    torchscript|onnx."""
    folder = Path(model_dir)
    if not (folder / PREPROCESS_FILE).is_file():
        raise FileNotFoundError(f"{folder}: no {PREPROCESS_FILE}; export one with --save_inference=True")
    info = InferenceInfo.load(folder / PREPROCESS_FILE)
    if backend == "onnx":
        return OnnxRunner(folder / ONNX_FILE), info
    if backend != "torchscript":
        raise ValueError(f"unknown inference backend {backend!r}; choose torchscript or onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(folder / TORCHSCRIPT_FILE), map_location="cpu").eval(), info
