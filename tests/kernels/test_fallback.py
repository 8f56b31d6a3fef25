"""Without a GPU and without the interpreter, fused blocks run their reference path after exactly one warning line."""

from __future__ import annotations

import torch

from imgcls.layers import ChannelShuffle, DWConvBNAct, SqueezeExcite, fused


def test_fallback_warns_once_and_matches_reference(monkeypatch, capsys):
    monkeypatch.setattr(fused, "interpreter_enabled", lambda: False)
    monkeypatch.setattr(fused, "_warned", False)
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 5)
    blocks = [DWConvBNAct(6, 3, act="swish"), ChannelShuffle(2), SqueezeExcite(6, 2)]
    expected = [b(x) for b in blocks]
    capsys.readouterr()
    for _ in range(2):
        got = [fused.set_fused(b, True)(x) for b in blocks]
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and not captured.out, captured
    assert lines[0].startswith("imgcls: warning: fused kernels requested but "), lines
    assert "TRITON_INTERPRET=1" in lines[0]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)
