"""Without a GPU and without the interpreter, fused blocks run their reference path after exactly one warning."""

from __future__ import annotations

import warnings

import torch

from imgcls.layers import ChannelShuffle, DWConvBNAct, SqueezeExcite, fused


def test_fallback_warns_once_and_matches_reference(monkeypatch):
    monkeypatch.setattr(fused, "interpreter_enabled", lambda: False)
    monkeypatch.setattr(fused, "_warned", False)
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 5)
    blocks = [DWConvBNAct(6, 3, act="swish"), ChannelShuffle(2), SqueezeExcite(6, 2)]
    expected = [b(x) for b in blocks]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            got = [fused.set_fused(b, True)(x) for b in blocks]
    messages = [str(w.message) for w in caught if "fused kernels requested" in str(w.message)]
    assert len(messages) == 1, messages
    assert "TRITON_INTERPRET=1" in messages[0]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)
