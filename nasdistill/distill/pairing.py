"""Which student stage is compared with which teacher stage.

A space-built student has 6 stages, a CIFAR ResNet teacher 3: feature methods need a rule.

Rule (same relative depth, deepest stages always paired): with ``n = min(n_s, n_t)`` pairs and
``L = max(n_s, n_t)`` stages on the longer side, pair ``k`` (0-based) uses stage ``k`` of the shorter
side and stage ``ceil((k + 1) * L / n) - 1`` of the longer side, i.e. the stage whose relative depth
``(j + 1) / L`` is the smallest one not below ``(k + 1) / n``. Pairs are strictly increasing on both
sides and the last stages are always paired. Equal counts give the identity pairing.
Example: 6 student stages, 3 teacher stages -> ``[(1, 0), (3, 1), (5, 2)]``.
"""
from __future__ import annotations

__all__ = ["pair_stages"]


def pair_stages(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """``[(student_stage, teacher_stage), ...]`` of length ``min(n_student, n_teacher)``."""
    for role, n in (("student", n_student), ("teacher", n_teacher)):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"pair_stages: the {role} must have at least one stage, got {n!r}")
    n = min(n_student, n_teacher)
    longest = max(n_student, n_teacher)
    longer = [-(-(k + 1) * longest // n) - 1 for k in range(n)]  # ceil((k+1)*L/n) - 1
    if n_student >= n_teacher:
        return [(j, k) for k, j in enumerate(longer)]
    return [(k, j) for k, j in enumerate(longer)]
