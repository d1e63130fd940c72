"""Speed and memory of the project's cells, as ratios against references (see run.py).

    python -m benchmarks [--quick] [--device cuda] [--repeats N] [--out results.json]
"""
