"""Per-label confidence calibration (paper §2.7): calibrated = w * historical accuracy of the label + (1 - w) * raw.

The historical accuracy of a predicted label is its pass rate among judged traces; w grows with the
number of judged traces for that label (w = n / (n + k)), so a label with little history keeps its raw
confidence.
"""

from __future__ import annotations

import sqlalchemy as sa

PRIOR_STRENGTH = 20


def weight(n: int, k: int = PRIOR_STRENGTH) -> float:
    return n / (n + k) if n > 0 else 0.0


def calibrate(raw: float, label_accuracy: float | None, n: int, k: int = PRIOR_STRENGTH) -> float:
    if label_accuracy is None:
        return raw
    w = weight(n, k)
    return w * label_accuracy + (1 - w) * raw


def label_history(engine: sa.Engine, model_prefix: str | None = None) -> dict[str, tuple[float, int]]:
    """Predicted label -> (pass rate, judged count) over effective verdicts (human overrides win)."""
    where = "WHERE verdict IS NOT NULL" + (" AND model_id LIKE :prefix" if model_prefix else "")
    sql = sa.text(f"SELECT prediction, AVG(CASE WHEN verdict = 'pass' THEN 1.0 ELSE 0.0 END), COUNT(*) "
                  f"FROM effective_traces {where} GROUP BY prediction")
    with engine.connect() as conn:
        rows = conn.execute(sql, {"prefix": f"{model_prefix}%"} if model_prefix else {}).fetchall()
    return {r[0]: (float(r[1]), int(r[2])) for r in rows if r[0] is not None}
