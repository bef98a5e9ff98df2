"""Duration sketches: DDSketch with a fixed number of bins, its add done inline
(the hot part of recording a run), and its rows in snapshots."""

from __future__ import annotations

import math
from typing import Any

from ddsketch.ddsketch import BaseDDSketch
from ddsketch.mapping import LogarithmicMapping
from ddsketch.store import CollapsingLowestDenseStore, DenseStore

RELATIVE_ACCURACY = 0.02  # a reported percentile is within 2% of the true one
SKETCH_BINS = 256  # per job: at 2%, 256 bins span durations over a 25,000x range

_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
_NO_NEGATIVES = DenseStore(chunk_size=1)  # durations are never negative: shared, never written


def _sketch() -> BaseDDSketch:
    return BaseDDSketch(
        _MAPPING, CollapsingLowestDenseStore(SKETCH_BINS, chunk_size=16), _NO_NEGATIVES, 0.0
    )


_MULTIPLIER = _MAPPING._multiplier
_KEY_OFFSET = _MAPPING._offset
_MIN_POSITIVE = _MAPPING.min_possible
KEYS_KEPT = 1 << 16  # distinct durations whose sketch key is remembered
_KEYS: dict[float, int] = {}


def _add(sketch: BaseDDSketch, value: float) -> None:
    """``sketch.add(value)`` for positive values, on the hot path of every
    completed run: the same key and bins as DDSketch's (tests compare), with
    the common case (a bin already in range) done inline, and each value's key
    remembered (durations repeat)."""
    if value > _MIN_POSITIVE:
        key = _KEYS.get(value)
        if key is None:
            key = int(math.ceil(math.log(value, 2) * _MULTIPLIER) + _KEY_OFFSET)
            if len(_KEYS) >= KEYS_KEPT:
                _KEYS.clear()
            _KEYS[value] = key
        store = sketch._store
        if store.min_key <= key <= store.max_key and store.count:
            store.bins[key - store.offset] += 1.0
            store.count += 1.0
        else:
            store.add(key)
    else:
        sketch._zero_count += 1.0
    sketch._count += 1.0
    sketch._sum += value
    if value < sketch._min:
        sketch._min = value
    if value > sketch._max:
        sketch._max = value


def _sketch_row(sketch: BaseDDSketch) -> list[Any]:
    store = sketch._store
    return [
        store.offset,
        store.bins,
        store.min_key,
        store.max_key,
        store.count,
        sketch._zero_count,
        sketch._count,
        sketch._sum,
        sketch._min,
        sketch._max,
    ]


def _sketch_from_row(row: list[Any]) -> BaseDDSketch:
    sketch = _sketch()
    store = sketch._store
    (store.offset, store.bins, store.min_key, store.max_key, store.count) = row[:5]
    (sketch._zero_count, sketch._count, sketch._sum, sketch._min, sketch._max) = row[5:]
    return sketch


def _percentiles(sketch: BaseDDSketch) -> dict[str, Any]:
    if sketch.count == 0:
        return {"runs": 0, "p50": None, "p90": None, "p99": None}
    return {
        "runs": int(sketch.count),
        **{
            name: _rounded(sketch.get_quantile_value(q))
            for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
        },
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
