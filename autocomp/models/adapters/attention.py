"""Attention modules whose projections the methods can reach.

``nn.MultiheadAttention`` keeps its input projection as a bare Parameter (``in_proj_weight``)
and calls ``F.multi_head_attention_forward`` with ``out_proj.weight``: no knob can reach the
first, and replacing the second (low rank) breaks the callers that read it. ``explicit_attention``
swaps every such module for ``ExplicitMultiheadAttention``, an equivalent module with four
``nn.Linear`` children (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``) that it *calls*, so
pruning, quantization and low rank apply to each projection like to any other Linear. Each
swap is checked on random inputs to give the outputs of the module it replaces.

The contract callers rely on is kept: the same call signature and ``(output, weights)``
return as ``nn.MultiheadAttention`` (torchvision's ViT ``EncoderBlock`` calls
``self_attention(x, x, x, need_weights=False)``), the attributes ``embed_dim``, ``num_heads``,
``batch_first``, ``dropout``, ``in_proj_weight``/``in_proj_bias`` (concatenated from the
projections), ``out_proj.weight``; and ``_qkv_same_embed_dim = False``, which keeps
``nn.TransformerEncoderLayer`` off its fused fast path (that path would run the packed weights
and skip the projections). State dicts of the original layout load into it.

Channel pruning keeps heads consistent (``prune_head_dims``): every head loses the same number
of query/key dimensions (the same ones in q and k, which are multiplied together) and of value
dimensions (with the matching input columns of ``out_proj``); the score scale stays that of
the original head size, so the kept dimensions compute what they computed before.

Example::

    model = nn.TransformerEncoderLayer(64, 4, batch_first=True)
    explicit_attention(model)        # model.self_attn.q_proj is an nn.Linear(64, 64)
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


def _last_linear(module: nn.Module) -> nn.Linear:
    """The Linear whose outputs a projection produces (the second factor after low rank)."""
    return module if isinstance(module, nn.Linear) else [m for m in module.modules() if isinstance(m, nn.Linear)][-1]


def _first_linear(module: nn.Module) -> nn.Linear:
    return module if isinstance(module, nn.Linear) else next(m for m in module.modules() if isinstance(m, nn.Linear))


def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Boolean masks (True = not allowed) as additive float masks, as ``nn.MultiheadAttention`` reads them."""
    if mask is None or mask.is_floating_point():
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))


class ExplicitMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` with its q/k/v/out projections as ``nn.Linear`` children.

    Example::

        attn = ExplicitMultiheadAttention.from_mha(nn.MultiheadAttention(64, 4, batch_first=True))
        out, _ = attn(x, x, x, need_weights=False)
    """

    # Read by nn.TransformerEncoderLayer: False keeps it off the fused kernel, which would
    # use in_proj_weight and bypass the (possibly pruned or factorized) projections.
    _qkv_same_embed_dim = False
    bias_k = None
    bias_v = None
    add_zero_attn = False

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 kdim: int | None = None, vdim: int | None = None, batch_first: bool = False) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.dropout, self.batch_first = embed_dim, num_heads, dropout, batch_first
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self.head_dim = embed_dim // num_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)  # kept when head dims are pruned
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(self.kdim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(self.vdim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> ExplicitMultiheadAttention | None:
        """The equivalent module with ``mha``'s weights, or None for layouts it does not cover
        (``add_bias_kv``, ``add_zero_attn``)."""
        if mha.bias_k is not None or mha.bias_v is not None or mha.add_zero_attn:
            return None
        new = cls(mha.embed_dim, mha.num_heads, mha.dropout, mha.out_proj.bias is not None, mha.kdim, mha.vdim,
                  mha.batch_first)
        new.load_state_dict(mha.state_dict())
        ref = mha.in_proj_weight if mha.in_proj_weight is not None else mha.q_proj_weight
        return new.to(ref.device, ref.dtype).train(mha.training)

    # -- the attributes callers of nn.MultiheadAttention read ----------------------------------
    @property
    def in_proj_weight(self) -> torch.Tensor | None:
        weights = [p.weight for p in (self.q_proj, self.k_proj, self.v_proj)]
        return torch.cat(weights) if len({w.shape[1] for w in weights}) == 1 else None

    @property
    def in_proj_bias(self) -> torch.Tensor | None:
        biases = [p.bias for p in (self.q_proj, self.k_proj, self.v_proj)]
        return None if any(b is None for b in biases) else torch.cat(biases)

    def merge_masks(self, attn_mask, key_padding_mask, query):  # noqa: ANN001, ANN201
        return nn.MultiheadAttention.merge_masks(self, attn_mask, key_padding_mask, query)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        """Accept nn.MultiheadAttention's layout (``in_proj_weight`` packed, or ``q_proj_weight``...)."""
        packed = state_dict.pop(prefix + "in_proj_weight", None)
        if packed is not None:
            for name, part in zip("qkv", packed.chunk(3), strict=True):
                state_dict[f"{prefix}{name}_proj.weight"] = part
        for name in "qkv":
            separate = state_dict.pop(f"{prefix}{name}_proj_weight", None)
            if separate is not None:
                state_dict[f"{prefix}{name}_proj.weight"] = separate
        bias = state_dict.pop(prefix + "in_proj_bias", None)
        if bias is not None:
            for name, part in zip("qkv", bias.chunk(3), strict=True):
                state_dict[f"{prefix}{name}_proj.bias"] = part
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- forward: nn.MultiheadAttention's semantics, step by step -------------------------------
    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint")
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        n, tgt, src, h = query.shape[0], query.shape[1], key.shape[1], self.num_heads
        q = self.q_proj(query).reshape(n, tgt, h, -1).transpose(1, 2)
        k = self.k_proj(key).reshape(n, src, h, -1).transpose(1, 2)
        v = self.v_proj(value).reshape(n, src, h, -1).transpose(1, 2)
        scores = torch.matmul(q * self.scale, k.transpose(-2, -1))  # (n, h, tgt, src)
        mask = _additive(attn_mask, scores.dtype)
        if mask is not None:
            scores = scores + (mask.reshape(n, h, tgt, src) if mask.dim() == 3 else mask)
        pad = _additive(key_padding_mask, scores.dtype)
        if pad is not None:
            scores = scores + pad.reshape(n, 1, 1, src)
        weights = torch.softmax(scores, dim=-1)
        if self.training and self.dropout > 0:
            weights = F.dropout(weights, p=self.dropout)
        out = self.out_proj(torch.matmul(weights, v).transpose(1, 2).reshape(n, tgt, -1))
        if not batched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = weights.mean(dim=1)
        return out, weights.squeeze(0) if not batched else weights


def _same_outputs(old: nn.Module, new: nn.Module, dims: tuple[int, int, int], batch_first: bool) -> bool:
    """Both modules give the same outputs (and weights) on a random batch, masks included."""
    gen = torch.Generator().manual_seed(0)
    embed, kdim, vdim = dims
    ref = next(old.parameters())
    shape = (lambda n, length, d: (n, length, d)) if batch_first else (lambda n, length, d: (length, n, d))
    q = torch.randn(*shape(2, 3, embed), generator=gen).to(ref)
    k = torch.randn(*shape(2, 5, kdim), generator=gen).to(ref)
    v = torch.randn(*shape(2, 5, vdim), generator=gen).to(ref)
    pad = torch.tensor([[False] * 4 + [True], [False] * 5], device=ref.device)
    was = old.training, new.training
    old.eval(), new.eval()
    try:
        with torch.no_grad():
            a = old(q, k, v, key_padding_mask=pad, need_weights=True)
            b = new(q, k, v, key_padding_mask=pad, need_weights=True)
    finally:
        old.train(was[0]), new.train(was[1])
    tol = 1e-4 * max(1.0, float(a[0].abs().max()))
    return bool(torch.allclose(a[0], b[0], atol=tol) and torch.allclose(a[1], b[1], atol=1e-5))


def _swap_mha(module: nn.Module) -> nn.Module | None:
    new = ExplicitMultiheadAttention.from_mha(module)
    if new is None:
        return None
    if not _same_outputs(module, new, (module.embed_dim, module.kdim, module.vdim), module.batch_first):
        log.warning("left %s as it is: its explicit form did not reproduce its outputs", type(module).__name__)
        return None
    return new


# Qualified class name -> a function returning the module's explicit form (or the module itself,
# changed in place), or None to leave it alone. By name, so no adapter imports its library.
ADAPTERS: dict[str, Callable[[nn.Module], nn.Module | None]] = {"torch.nn.modules.activation.MultiheadAttention":
                                                                _swap_mha}


def register_adapter(qualified_name: str, adapter: Callable[[nn.Module], nn.Module | None]) -> None:
    """Make ``explicit_attention`` swap modules of the class ``qualified_name`` with ``adapter``."""
    ADAPTERS[qualified_name] = adapter


def explicit_attention(model: nn.Module) -> list[str]:
    """Swap, in place, every attention module an adapter covers; return the swapped names.

    Idempotent: a model already swapped has nothing left to swap.
    """
    swapped = []
    for name, module in list(model.named_modules()):
        cls = type(module)
        adapter = ADAPTERS.get(f"{cls.__module__}.{cls.__qualname__}")
        if not name or adapter is None:
            continue
        new = adapter(module)
        if new is None:
            continue
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
        swapped.append(name)
    return swapped


def explicit_copy(model: nn.Module) -> nn.Module:
    """``model`` itself when it has nothing to swap, else a deep copy with its attention swapped
    (a model handed in through the Python API is the user's: it is never changed)."""
    def covered(m: nn.Module) -> bool:
        return f"{type(m).__module__}.{type(m).__qualname__}" in ADAPTERS

    if not any(covered(m) for m in model.modules()):
        return model
    clone = copy.deepcopy(model)
    explicit_attention(clone)
    return clone


# -- head-consistent channel pruning ---------------------------------------------------------------
def _keep_per_head(score: torch.Tensor, heads: int, n_cut: int) -> torch.Tensor:
    """Indices (flat, sorted) that keep the ``size - n_cut`` best dims of every head."""
    per_head = score.reshape(heads, -1)
    size = per_head.shape[1]
    keep = torch.argsort(per_head, dim=1, descending=True, stable=True)[:, : size - n_cut]
    return (keep.sort(dim=1).values + torch.arange(heads)[:, None] * size).reshape(-1)


def _rows(layer: nn.Linear, idx: torch.Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight.detach()[idx].clone())
    if layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.detach()[idx].clone())
    layer.out_features = len(idx)


def _columns(layer: nn.Linear, idx: torch.Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight.detach()[:, idx].clone())
    layer.in_features = len(idx)


def prune_head_dims(attn: ExplicitMultiheadAttention, qk_ratio: float, v_ratio: float, norm: int = 1) -> None:
    """Remove ``round(ratio * head size)`` query/key and value dims from every head.

    Importance of a q/k dim: the norm of its q row plus its k row; of a v dim: its v row plus
    the ``out_proj`` column it feeds. Every head keeps at least one dim of each.
    """
    h = attn.num_heads
    with torch.no_grad():
        q, k, v, o = (_last_linear(attn.q_proj), _last_linear(attn.k_proj), _last_linear(attn.v_proj),
                      _first_linear(attn.out_proj))
        _cut_per_head(q, k, qk_ratio, h, norm, partner_rows=True)  # q/k dims pair up: rows of both
        _cut_per_head(v, o, v_ratio, h, norm, partner_rows=False)  # a v dim feeds a column of out_proj


def _cut_per_head(rows: nn.Linear, partner: nn.Linear, ratio: float, heads: int, norm: int, partner_rows: bool) -> None:
    """Remove ``round(ratio * head size)`` output dims of ``rows`` per head, scored by their row norm
    plus the norm of the partner's row (``partner_rows``) or column that goes with each."""
    size = rows.out_features // heads
    n_cut = min(int(round(ratio * size)), size - 1)
    paired = partner.out_features if partner_rows else partner.in_features
    if n_cut <= 0 or paired != rows.out_features:
        return
    score = rows.weight.norm(p=norm, dim=1) + partner.weight.norm(p=norm, dim=1 if partner_rows else 0)
    idx = _keep_per_head(score.cpu(), heads, n_cut).to(rows.weight.device)
    _rows(rows, idx)
    (_rows if partner_rows else _columns)(partner, idx)
