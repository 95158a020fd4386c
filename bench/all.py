"""Run every benchmark, each in a fresh process, and print one JSON object with all their results.

    python -m bench.all [--tiny] [--only inference cold_start fit ...]

Exits 1 when a benchmark fails (its entry then holds ``error``); the other results are
still printed. ``summary`` gathers every target and our p50 beside the retrieval baseline's.
"""

from __future__ import annotations

import json
import subprocess
import sys

from bench._common import REPO, emit, machine, parser

BENCHMARKS = ("inference", "cold_start", "fit", "train_throughput", "render_throughput", "retrieval")


def run_benchmark(name: str, extra: list[str]) -> dict:
    """Run ``bench.<name>`` in a new interpreter; its JSON, or ``{"error": ...}``."""
    proc = subprocess.run([sys.executable, "-m", f"bench.{name}", *extra], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        return {"error": f"exit code {proc.returncode}", "stderr": proc.stderr[-3000:]}
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as err:
        return {"error": f"not one JSON object on stdout ({err})", "stdout": proc.stdout[-3000:]}


def summarise(results: dict, tiny: bool = False) -> dict:
    """Every target with its pass/fail, and our end-to-end p50 beside the retrieval baseline's. With ``tiny`` (a random
    tiny model, the benchmarks' own test) ``all_pass`` is None: the targets are the shipped model's."""
    targets = {}
    for name, res in results.items():
        for key, value in res.get("targets", {}).items():
            targets[f"{name}.{key}"] = value
    summary = {"targets": targets, "all_pass": all(t["pass"] for t in targets.values()) if targets else None}
    if tiny:
        summary["all_pass"] = None
        summary["note"] = "--tiny times a random tiny model: its figures judge no target of the shipped model"
    inference, retrieval = results.get("inference", {}), results.get("retrieval", {})
    if "by_vertices" in inference and "total_ms" in retrieval:
        summary["p50_ms"] = {"ours_2562": inference["by_vertices"]["2562"]["end_to_end_ms"]["p50"],
                             "retrieval_baseline": retrieval["total_ms"]["p50"]}
    return summary


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    args = p.parse_args(argv)
    extra = (["--tiny"] if args.tiny else []) + ["--threads", str(args.threads)]
    results = {name: run_benchmark(name, extra) for name in (args.only or BENCHMARKS)}
    emit({"benchmark": "all", "tiny": args.tiny, "machine": machine(args.threads), "results": results,
          "summary": summarise(results, args.tiny)})
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
