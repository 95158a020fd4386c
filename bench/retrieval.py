"""Inference time of the nearest-view retrieval baseline (training/baselines.py), to set beside ours.

    python -m bench.retrieval [--index runs/cache/baselines_X.npz] [--size 7000] [--runs 30] [--tiny]

One query is :func:`training.baselines.embed_image` of the decoded example image plus
:meth:`training.baselines.RetrievalIndex.query` against the train split's index: the
newest ``runs/cache/baselines_*.npz`` when there is one, else a random index of
``--size`` views (the train split's size, ~7,000 views). Loading and posing the
retrieved model's mesh (disk I/O) is not counted.
"""

from __future__ import annotations

import time

import numpy as np

from bench._common import REPO, check_file, emit, example_image, machine, parser, positive_int, stats_ms

TRAIN_VIEWS = 7000


def synthetic_index(size: int, seed: int = 0):
    """A :class:`training.baselines.RetrievalIndex` of ``size`` random unit embeddings."""
    from training.baselines import EMBED_SIZE, RetrievalIndex

    rng = np.random.default_rng(seed)
    feats = np.abs(rng.normal(size=(size, 2 * EMBED_SIZE**2))).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    ids = np.array([f"m{i // 24:05d}" for i in range(size)])
    return RetrievalIndex(feats.astype(np.float16), ids, np.full(size, "03001627"),
                          np.array([f"{i % 24:03d}" for i in range(size)]), np.tile(np.eye(3), (size, 1, 1)))


def run(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from training.baselines import BaselineIndex, embed_image

    path = args.index
    if path is None and not args.tiny:
        cached = sorted((REPO / "runs" / "cache").glob("baselines_*.npz"), key=lambda p: p.stat().st_mtime)
        path = cached[-1] if cached else None
    if path is not None:
        index, source = BaselineIndex.load(path).retrieval, str(path)
    else:
        size = args.size if args.size is not None else (500 if args.tiny else TRAIN_VIEWS)
        index, source = synthetic_index(size), f"synthetic ({size} random views)"
    rgb, alpha, image = example_image()
    runs = args.runs if args.runs is not None else (3 if args.tiny else 30)
    for _ in range(2):
        index.query(embed_image(rgb, alpha))
    embed, query, total = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        feature = embed_image(rgb, alpha)
        t1 = time.perf_counter()
        index.query(feature)
        t2 = time.perf_counter()
        embed.append(t1 - t0)
        query.append(t2 - t1)
        total.append(t2 - t0)
    return {
        "benchmark": "retrieval",
        "machine": machine(args.threads),
        "index": source,
        "index_views": len(index),
        "embedding_dim": int(index.features.shape[1]),
        "image": image,
        "embed_ms": stats_ms(embed),
        "query_ms": stats_ms(query),
        "total_ms": stats_ms(total),
    }


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__)
    p.add_argument("--index", help="a baseline index .npz (default: the newest runs/cache/baselines_*.npz)")
    p.add_argument("--size", type=positive_int,
                   help=f"views of the synthetic index (default {TRAIN_VIEWS}; --tiny 500)")
    p.add_argument("--runs", type=positive_int, help="timed queries (default 30; --tiny 3)")
    args = p.parse_args(argv)
    check_file(p, "--index", args.index)
    if args.index is not None:
        from training.baselines import BaselineIndex
        from training.npz import NPZ_ERRORS

        try:
            BaselineIndex.load(args.index)
        except NPZ_ERRORS as err:  # not an index, or cut short
            p.error(f"--index {args.index} is not a baseline index that can be read ({type(err).__name__}); give one "
                    "that training/evaluate.py wrote (runs/cache/baselines_*.npz)")
    return emit(run(args))


if __name__ == "__main__":
    main()
