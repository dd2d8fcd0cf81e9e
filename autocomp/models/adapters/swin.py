"""torchvision's Swin attention with projections it calls.

``ShiftedWindowAttention.forward`` passes ``self.qkv.weight`` and ``self.proj.weight`` to a
function that runs ``F.linear`` on them: masks and quantization reach those weights, but low
rank cannot (a factorized pair that is never called would be replaced by its dense product).
``CalledShiftedWindowAttention`` is the same module with a forward that calls ``self.qkv`` and
``self.proj``; the rest is torchvision's ``shifted_window_attention`` step for step (V1 and
V2). The swap is checked on a random input, shifted windows included, and declined if the
outputs differ (a torchvision that changed the function).

Example::

    explicit_attention(swin)   # features.1.0.attn is now a CalledShiftedWindowAttention
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from autocomp.models.adapters.attention import register_adapter


def _windows_attention(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision's ``shifted_window_attention`` with module calls for the two projections."""
    rel_bias = self.get_relative_position_bias()
    window, heads, logit_scale = self.window_size, self.num_heads, getattr(self, "logit_scale", None)
    b, h, w, c = x.shape
    pad_r = (window[1] - w % window[1]) % window[1]
    pad_b = (window[0] - h % window[0]) % window[0]
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    _, ph, pw, _ = x.shape
    shift = list(self.shift_size)
    if window[0] >= ph:
        shift[0] = 0
    if window[1] >= pw:
        shift[1] = 0
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    n_windows = (ph // window[0]) * (pw // window[1])
    x = x.view(b, ph // window[0], window[0], pw // window[1], window[1], c)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b * n_windows, window[0] * window[1], c)
    qkv = self.qkv(x)
    bias = self.qkv.bias
    if logit_scale is not None and bias is not None:  # V2 zeroes the key bias on every call
        third = bias.numel() // 3
        qkv = qkv - torch.cat([torch.zeros_like(bias[:third]), bias[third:2 * third], torch.zeros_like(bias[:third])])
    qkv = qkv.reshape(x.size(0), x.size(1), 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    if logit_scale is not None:
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        attn = (q * (c // heads) ** -0.5).matmul(k.transpose(-2, -1))
    attn = attn + rel_bias
    if sum(shift) > 0:
        mask = x.new_zeros((ph, pw))
        h_slices = ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None))
        w_slices = ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None))
        count = 0
        for hs in h_slices:
            for ws in w_slices:
                mask[hs[0]:hs[1], ws[0]:ws[1]] = count
                count += 1
        mask = mask.view(ph // window[0], window[0], pw // window[1], window[1])
        mask = mask.permute(0, 2, 1, 3).reshape(n_windows, window[0] * window[1])
        mask = mask.unsqueeze(1) - mask.unsqueeze(2)
        mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
        attn = attn.view(x.size(0) // n_windows, n_windows, heads, x.size(1), x.size(1))
        attn = (attn + mask.unsqueeze(1).unsqueeze(0)).view(-1, heads, x.size(1), x.size(1))
    attn = F.dropout(F.softmax(attn, dim=-1), p=self.attention_dropout, training=self.training)
    x = attn.matmul(v).transpose(1, 2).reshape(x.size(0), x.size(1), c)
    x = F.dropout(self.proj(x), p=self.dropout, training=self.training)
    x = x.view(b, ph // window[0], pw // window[1], window[0], window[1], c)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c)
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
    return x[:, :h, :w, :].contiguous()


_CLASSES: dict[type, type] = {}


def _called_class(cls: type) -> type:
    """``Called<cls>``: ``cls`` with the forward above, made once and importable by its name."""
    if cls not in _CLASSES:
        name = f"Called{cls.__name__}"
        _CLASSES[cls] = globals()[name] = type(name, (cls,), {"forward": _windows_attention, "__module__": __name__})
    return _CLASSES[cls]


def _called(module: nn.Module) -> nn.Module | None:
    """The same module under a class whose forward calls its projections (its parameters,
    buffers and attributes untouched); None, and the module unchanged, if the outputs differ."""
    ref = module.qkv.weight
    gen = torch.Generator().manual_seed(0)
    side = 2 * max(module.window_size)  # two windows a side: shifted windows and their mask run
    x = torch.randn(1, side, side, module.qkv.in_features, generator=gen).to(ref)
    original, was = type(module), module.training
    module.eval()
    try:
        with torch.no_grad():
            expected = module(x)
            module.__class__ = _called_class(original)
            same = torch.allclose(module(x), expected, atol=1e-5 * max(1.0, float(expected.abs().max())))
        if not same:
            module.__class__ = original
    finally:
        module.train(was)
    return module if same else None


register_adapter("torchvision.models.swin_transformer.ShiftedWindowAttention", _called)
register_adapter("torchvision.models.swin_transformer.ShiftedWindowAttentionV2", _called)
