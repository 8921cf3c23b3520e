"""Where a filtered exact search should scan every row instead of gathering the allowed ones
(``ranking.filtered._SCAN_ALL_ABOVE`` and ``_SCAN_ALL_ABOVE_TRANSPOSED``).

For random (A, 66) float32 rows (Recommend's dimensions: 64 factors plus the bias and norm
columns) and filters of 1% to 25% of A, the median milliseconds of one query's scores, BLAS on one
thread, four ways: the allowed rows gathered from the (A, D) layout (an Annoy-method version), the
allowed columns gathered from the (D, A) transpose (the exact layout keeps only the transpose),
and one full scan of the transpose then a gather of the allowed scores. Prints a table; the
crossovers are read off it.

    .venv/bin/python scripts/filtered_scan_threshold.py [ARTISTS ...]
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

SHARES = (0.01, 0.02, 0.05, 0.1, 0.25)
DIMS = 66
REPEATS = 30


def median_ms(run) -> float:
    run()
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or [17_632, 160_000]
    rng = np.random.default_rng(0)
    print("| artists | share | gather (A, D) ms | gather (D, A) ms | scan (D, A) then gather ms |")
    print("|---|---|---|---|---|")
    with threadpool_limits(limits=1, user_api="blas"):
        for artists in sizes:
            rows = rng.standard_normal((artists, DIMS)).astype(np.float32)
            rows_t = np.ascontiguousarray(rows.T)
            query = rng.standard_normal(DIMS).astype(np.float32)
            for share in SHARES:
                allowed = np.sort(rng.choice(artists, max(1, int(artists * share)), replace=False)).astype(np.int64)
                gather_c = median_ms(lambda: rows[allowed] @ query)
                gather_t = median_ms(lambda: query @ rows_t[:, allowed])
                scan = median_ms(lambda: (query @ rows_t)[allowed])
                print(f"| {artists:,} | {share:.0%} | {gather_c:.3f} | {gather_t:.3f} | {scan:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
