"""Hypervolume of an (accuracy, size, latency) front: exact, in a box whose corner is a reference point.

The reference point is the teacher made slightly worse in accuracy: (teacher accuracy - 2
points, teacher bytes, teacher latency). A point adds volume only when it is more accurate than
that, smaller and faster than the teacher. The volume is normalized: divided by the box from the
reference point to the ideal point (100 %, 0 bytes, 0 ms), so 0 = nothing better than the
reference, 1 = perfect. The report's history (``autocomp.report.hypervolume``) and the order of
promotions (``autocomp.study.promotion``) both measure a front here.

Example::

    scaled, ref = to_minimization(points, reference_point(teacher))  # rows of (accuracy, bytes, ms)
    hypervolume(scaled, ref)   # 0.31
"""

from __future__ import annotations

import numpy as np

from autocomp.study.pareto import unique_front

ACCURACY_MARGIN = 2.0  # points below the teacher where a point stops counting


def reference_point(teacher: dict[str, float], margin: float = ACCURACY_MARGIN) -> tuple[float, float, float]:
    """(accuracy, bytes, ms) of the reference: the teacher, ``margin`` points less accurate."""
    return (teacher["accuracy"] - margin, teacher["size_bytes"], teacher["latency_ms"])


def to_minimization(points: np.ndarray, reference: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of (accuracy, bytes, ms) -> rows to minimize, scaled so the reference box is the unit cube."""
    acc_ref, size_ref, lat_ref = reference
    span = np.array([100.0 - acc_ref, size_ref, lat_ref], dtype=float)
    pts = np.asarray(points, dtype=float).reshape(-1, 3)
    scaled = np.column_stack([(100.0 - pts[:, 0]), pts[:, 1], pts[:, 2]]) / span
    return scaled, np.ones(3)


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Exact volume dominated by ``points`` (to minimize, shape (n, d), d <= 3) inside ``reference``.

    Slices along the first axis: between consecutive first coordinates the dominated region is
    the (d-1)-dimensional volume of the points seen so far.
    """
    pts = np.asarray(points, dtype=float)
    ref = np.asarray(reference, dtype=float)
    if pts.size == 0:
        return 0.0
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    if pts.shape[1] == 1:
        return float(ref[0] - pts[:, 0].min())
    if pts.shape[1] == 2:
        order = np.argsort(pts[:, 0], kind="stable")
        xs, best_y = pts[order, 0], np.minimum.accumulate(pts[order, 1])
        widths = np.diff(np.append(xs, ref[0]))
        return float(np.sum(widths * (ref[1] - best_y)))
    order = np.argsort(pts[:, 0], kind="stable")
    pts = pts[order]
    edges = np.append(pts[:, 0], ref[0])
    total = 0.0
    for i in range(len(pts)):
        width = edges[i + 1] - edges[i]
        if width > 0:
            total += width * hypervolume(pts[: i + 1, 1:], ref[1:])
    return total


def contribution(point: np.ndarray, front: np.ndarray, reference: np.ndarray) -> float:
    """Volume ``point`` adds to ``front``: its box minus what the front already covers of it."""
    box = float(np.prod(np.clip(reference - point, 0.0, None)))
    if box == 0.0 or len(front) == 0:
        return box
    return box - hypervolume(unique_front(np.maximum(front, point)), reference)
