"""Cold start: a fresh ``recon-mesh IMAGE -o out.stl`` process, from start to exit, and its peak memory.

    python -m bench.cold_start [--model models/default] [--repeats 3] [--tiny]

Runs the CLI ``--repeats`` times in new processes (``python -m recon_core.io.cli``, which
is what the ``recon-mesh`` entry point calls) and reports the median wall time and the
peak resident set size of each child (``os.wait4``'s ``ru_maxrss``). One extra run with
``python -X importtime`` lists the slowest imports of ``recon_core.io.inference``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import (REPO, check_model, emit, machine, parser, positive_int, target, tiny_model_stem,
                           write_example_png)

TARGET_SECONDS = 3.0
TARGET_RSS_MB = 1024.0


def run_cli(image: Path, out: Path, model: str | None, threads: int) -> tuple[float, float, int, str]:
    """One CLI process: (wall seconds, peak RSS MiB, exit code, stderr)."""
    cmd = [sys.executable, "-m", "recon_core.io.cli", str(image), "-o", str(out)]
    if model:
        cmd += ["--model", str(model)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    kib = usage.ru_maxrss / (1024.0 if sys.platform == "darwin" else 1.0)  # in bytes on macOS, KiB on Linux
    return wall, kib / 1024.0, proc.returncode, stderr


def slowest_imports(module: str = "recon_core.io.inference", top: int = 10) -> tuple[float, list[dict]]:
    """Import seconds of ``module`` in a fresh process, and the ``top`` packages by their own import time.

    A package's time is the sum of the self times of its modules (``python -X importtime``),
    so ``torch`` does not include ``sympy`` although torch imports it.
    """
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True,
                          text=True, cwd=REPO, check=True)
    own: dict[str, int] = {}
    total = 0
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cum_us, name = (part.strip() for part in line[len("import time:"):].split("|"))
        root = name.split(".")[0]
        own[root] = own.get(root, 0) + int(self_us)
        if name == module:
            total = int(cum_us)
    packages = sorted(own.items(), key=lambda kv: kv[1], reverse=True)[:top]
    return total / 1e6, [{"package": k, "seconds": round(v / 1e6, 3)} for k, v in packages]


def run(args) -> dict:
    repeats = args.repeats if args.repeats is not None else (1 if args.tiny else 3)
    model = args.model or (str(tiny_model_stem()) if args.tiny else None)
    with tempfile.TemporaryDirectory(prefix="bench_cold_") as tmp:
        image = Path(tmp) / "input.png"
        source = write_example_png(image)
        walls, rss, codes = [], [], []
        for i in range(repeats):
            out = Path(tmp) / f"out{i}.stl"
            wall, peak, code, stderr = run_cli(image, out, model, args.threads)
            if code not in (0, 3):  # 3: written, but not printable
                raise RuntimeError(f"recon-mesh failed with exit code {code}: {stderr[-2000:]}")
            if not out.is_file():
                raise RuntimeError(f"recon-mesh exited {code} without writing {out.name}")
            walls.append(wall)
            rss.append(peak)
            codes.append(code)
    import_seconds, imports = slowest_imports()
    median = statistics.median(walls)
    return {
        "benchmark": "cold_start",
        "machine": machine(args.threads),
        "command": "python -m recon_core.io.cli IMAGE -o out.stl" + (f" --model {model}" if model else ""),
        "image": source,
        "repeats": repeats,
        "wall_s": {"median": round(median, 3), "min": round(min(walls), 3), "all": [round(w, 3) for w in walls]},
        "peak_rss_mb": {"max": round(max(rss), 1), "all": [round(r, 1) for r in rss]},
        "exit_codes": codes,
        "import_s": round(import_seconds, 3),
        "slowest_imports": imports,
        "targets": {
            "wall_s": target(median, TARGET_SECONDS, "s"),
            "peak_rss_mb": target(max(rss), TARGET_RSS_MB, "MiB"),
        },
    }


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__)
    p.add_argument("--model", help="model stem (default: models/default; --tiny: a random tiny model)")
    p.add_argument("--repeats", type=positive_int, help="fresh processes to time (default 3; --tiny 1)")
    args = p.parse_args(argv)
    check_model(p, args.model)
    return emit(run(args))


if __name__ == "__main__":
    main()
