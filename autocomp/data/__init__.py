"""Datasets streamed through a DataLoader, preprocessed the way the model expects, and recorded.

``load_data(spec)`` finds the raw splits (``autocomp.data.sources``), settles the preprocessing
(``autocomp.data.preprocess``: resize + center crop, normalization from ``--mean/--std``, else
the torchvision weights' own transforms, else statistics of a training sample) and returns a
``Data`` (``autocomp.data.bundle``) whose splits are tensors in memory when they are small and
unaugmented, and streamed otherwise (``autocomp.data.splits``).

Example::

    data = load_data(DataSpec("photos/", image_size=224, resize=256))
    data.preprocessing["eval_transform"]  # 'resize shorter side to 256 ... -> center crop 224x224 -> ...'
"""

from autocomp.data.bundle import Data, DataBundle
from autocomp.data.load import DataSpec, bundle_from, load_data
from autocomp.data.preprocess import AUGMENTS, Preprocess
from autocomp.data.sources import TORCHVISION_NAMES
from autocomp.data.splits import EvalSet, StreamSplit, TensorSplit

__all__ = ["AUGMENTS", "Data", "DataBundle", "DataSpec", "EvalSet", "Preprocess", "StreamSplit", "TORCHVISION_NAMES",
           "TensorSplit", "bundle_from", "load_data"]
