"""Model adapters: attention modules swapped for forms whose projections the methods can reach.

Importing this package registers every adapter (``attention``: PyTorch's MHA; ``swin``: torchvision's
shifted-window attention).
"""

from autocomp.models.adapters import swin  # noqa: F401  (registers torchvision's Swin adapter)
from autocomp.models.adapters.attention import (
    ExplicitMultiheadAttention,
    explicit_attention,
    explicit_copy,
    prune_head_dims,
    register_adapter,
)

__all__ = ["ExplicitMultiheadAttention", "explicit_attention", "explicit_copy", "prune_head_dims", "register_adapter"]
