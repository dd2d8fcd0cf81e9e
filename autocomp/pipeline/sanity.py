"""Is the teacher worth compressing? Warnings a user should see before trusting a front.

Every accuracy drop is measured against the teacher's artifact. A teacher near chance (too few
epochs; BatchNorm with a tiny momentum whose running statistics never settled, as MNASNet's
0.0003 after one epoch) makes "within 1 point of the teacher" meaningless; so do students that
beat the teacher by several points (brief fine-tunes keep training an undertrained teacher).

Example::

    chance = chance_accuracy(val_y)                  # 11.35 for MNIST's validation split
    for line in teacher_warnings(8.6, chance):
        print("warning:", line)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BEATEN_BY = 3.0  # points a student may beat the teacher by before the teacher looks undertrained
FIX = ("train it longer (--teacher-epochs), or pass a trained --checkpoint; if it has BatchNorm layers with a "
       "small momentum, their running statistics may not have settled (train longer, or raise their momentum)")


def chance_accuracy(labels: Sequence[int] | np.ndarray) -> float:
    """Top-1 (%) of always answering the most common class of ``labels``."""
    y = np.asarray(labels).reshape(-1)
    if y.size == 0:
        return 0.0
    return float(np.bincount(y.astype(np.int64)).max() / y.size * 100.0)


def near_chance(accuracy: float, chance: float) -> bool:
    """Within a tenth of the way from chance to 100 % (at least 5 points): 19 % or less on 10 balanced classes."""
    return accuracy <= chance + max(5.0, 0.1 * (100.0 - chance))


def teacher_warnings(teacher_accuracy: float, chance: float, best_student: float | None = None) -> list[str]:
    """One line per problem with the teacher (none when it looks fine)."""
    out = []
    if near_chance(teacher_accuracy, chance):
        out.append(f"the teacher scores {teacher_accuracy:.1f}% on the validation split, near chance "
                   f"({chance:.1f}%): accuracy drops measured against it mean little; {FIX}")
    if best_student is not None and best_student - teacher_accuracy > BEATEN_BY:
        out.append(f"students beat the teacher by {best_student - teacher_accuracy:.1f} points "
                   f"({best_student:.1f}% vs {teacher_accuracy:.1f}%): the teacher looks undertrained; {FIX}")
    return out
