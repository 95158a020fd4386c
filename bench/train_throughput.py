"""Training throughput: images per second of a training step at a training config, on synthetic data.

    python -m bench.train_throughput [--config training/configs/default.yaml] [--steps 3] [--tiny]
    python -m bench.train_throughput --config training/configs/occupancy_share.yaml   (the occupancy network)
    python -m bench.train_throughput --config training/configs/device.yaml --cuda-only --batch-size 128
    python -m bench.train_throughput --config training/configs/device.yaml --loader 40   (the data loader alone)
    python -m bench.train_throughput --views --init models/default loss.silhouette=0.2 loss.rasteriser=torch

One step is what :func:`training.train.train` does per batch: forward under the
configured autocast, :func:`training.train.compute_loss`, backward, gradient clipping
and an AdamW step. Batches come from :class:`training.synthetic.SyntheticViews`
(ellipsoids: no data set needed) and are made before timing, so data loading is not
counted. Runs on the CPU with ``--threads`` threads, and also on CUDA when one is present.

``--views``: the batches are the config's training views instead (the renders or the pack, with its augmentation;
still made before timing), and ``--init MODEL`` starts from a trained network's weights. The rendered losses cost
what the predicted meshes' faces cover, so a trained network on real crops is what a training run pays; an
untrained one on ellipsoids can be far cheaper.

``--loader N`` times the configured data loader instead (the pack or the renders, the config's
augmentation and ``data.workers``): pictures a second over N batches after the first, no model. A
training run can go no faster than the slower of the two.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch

from bench._common import REPO, TINY_MODEL, check_file, check_model, emit, machine, parser, positive_int

DEFAULT_CONFIG = REPO / "training" / "configs" / "default.yaml"


_TINY_OCCUPANCY = dict(coarse="occupancy", occupancy_resolution=8, occupancy_depth_bins=12)
"""--tiny with an occupancy config: the tiny model with a small frustum grid."""


def load_config(path, tiny: bool, overrides: list[str] = ()):
    from recon_core.network.config import ModelConfig
    from training.config import load_train_config

    cfg = load_train_config(path, list(overrides))
    if tiny:
        cfg = dataclasses.replace(
            cfg,
            model=ModelConfig(**TINY_MODEL, **(_TINY_OCCUPANCY if cfg.model.coarse == "occupancy" else {})),
            data=dataclasses.replace(cfg.data, num_points=128),
            loss=dataclasses.replace(cfg.loss, num_samples=128, render_size=16),
            optim=dataclasses.replace(cfg.optim, batch_size=2),
        )
    return cfg


def measure(cfg, device: torch.device, steps: int, warmup: int, views: bool = False, init: str | None = None) -> dict:
    """Seconds per training step (after ``warmup`` steps) and images per second on ``device``; ``views``: batches of
    the config's training views (else synthetic ellipsoids); ``init``: a saved model's weights (else random)."""
    from recon_core.network.model import build_model
    from training.synthetic import SyntheticViews
    from training.train import _collate, _frozen_backbone_parts, _load_init_weights, train_step, training_views

    torch.manual_seed(cfg.run.seed)
    b = cfg.optim.batch_size
    if views:  # drawn as training draws them (category-weighted; the unknown categories' views not at all)
        from training.sampling import category_item_weights

        data = training_views(cfg)
        weights = category_item_weights(data.categories, cfg.data.category_balance, cfg.data.category_weights)
        draw = torch.Generator().manual_seed(cfg.run.seed)
        picks = torch.multinomial(weights, 2 * b, replacement=True, generator=draw)
        items = [data[i] for i in picks.tolist()]
    else:
        data = SyntheticViews(b * 2, cfg.model.image_size, cfg.data.num_points, cfg.run.seed,
                              occupancy=cfg.model.grid_spec if cfg.model.coarse == "occupancy" else None,
                              occupancy_share=cfg.data.occupancy_share)
        items = [data[i] for i in range(2 * b)]
    batches = [_collate(items[k * b : (k + 1) * b]) for k in range(2)]
    batches = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in x.items()} for x in batches]
    model = build_model(cfg.model)
    if init is not None:
        from recon_core.io.weights import load_model

        _load_init_weights(model, load_model(init, overrides={"category_branch": False})[0])
    model = model.to(device).train()
    if cfg.run.channels_last:  # as train.py lays them out
        model.encoder.to(memory_format=torch.channels_last)
    for part in _frozen_backbone_parts(model, cfg.optim.freeze_stages):  # as train.py freezes them
        part.requires_grad_(False)
        part.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if cfg.run.amp and device.type == "cuda" else None

    def step(batch):
        train_step(model, model, batch, optimizer, scaler, cfg, device)
        if device.type == "cuda":
            torch.cuda.synchronize()

    for i in range(warmup):
        step(batches[i % 2])
    times = []
    for i in range(steps):
        start = time.perf_counter()
        step(batches[i % 2])
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"device": str(device), "batch_size": b, "steps": steps, "warmup": warmup,
            "step_s": {"median": round(median, 4), "min": round(min(times), 4), "all": [round(t, 4) for t in times]},
            "images_per_s": round(b / median, 3)}


def measure_loader(cfg, batches: int) -> dict:
    """Pictures a second of the configured training data loader over ``batches`` batches (after the first)."""
    from training.train import training_loader, training_views

    it = iter(training_loader(cfg, training_views(cfg), batches + 1))
    next(it)  # workers started, first batch made
    start = time.perf_counter()
    n = sum(len(batch["image"]) for batch in it)
    seconds = time.perf_counter() - start
    return {"batches": batches, "batch_size": cfg.optim.batch_size, "workers": cfg.data.workers, "pictures": n,
            "seconds": round(seconds, 4), "images_per_s": round(n / seconds, 1)}


def run(args, cfg) -> dict:
    """The benchmark of ``args`` on ``cfg`` (:func:`load_config` of the arguments' config and overrides)."""
    from training.train import amp_enabled

    torch.set_num_threads(args.threads)
    if args.batch_size is not None:
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, batch_size=args.batch_size))
    steps = args.steps if args.steps is not None else (1 if args.tiny else 3)
    warmup = 1
    if args.loader is not None:
        results = {"loader": measure_loader(cfg, args.loader)}
    else:
        results = {} if args.cuda_only else {"cpu": measure(cfg, torch.device("cpu"), steps, warmup, args.views,
                                                               args.init)}
        if torch.cuda.is_available() and not args.cpu_only:
            results["cuda"] = measure(cfg, torch.device("cuda"), max(steps, 10), 3, args.views, args.init)
        elif args.cuda_only:
            raise ValueError("--cuda-only: no CUDA device here; run it on a machine with one, or drop --cuda-only")
    m = cfg.model
    return {
        "benchmark": "train_throughput",
        "machine": machine(args.threads),
        "config": str(args.config) + (" (tiny model)" if args.tiny else ""),
        "overrides": list(args.overrides),
        "model": {"backbone": m.backbone, "image_size": m.image_size, "coarse": m.coarse, "vertices": m.vertices},
        "freeze_stages": cfg.optim.freeze_stages,
        "channels_last": cfg.run.channels_last,
        "amp": cfg.run.amp,
        "amp_on_cpu": amp_enabled(cfg, torch.device("cpu")),
        "loss": {"num_samples": cfg.loss.num_samples, "silhouette": cfg.loss.silhouette, "depth": cfg.loss.depth},
        "data": ("the config's data loader, no model" if args.loader
                 else "the config's training views (batches made before timing)" if args.views
                 else "training.synthetic.SyntheticViews (batches made before timing)"),
        "init": args.init,
        "results": results,
    }


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__)
    p.add_argument("--config", default=str(DEFAULT_CONFIG.relative_to(REPO)), help="training config YAML")
    p.add_argument("--steps", type=positive_int, help="timed steps after one warm-up step (default 3; --tiny 1)")
    p.add_argument("--cpu-only", action="store_true", help="skip CUDA even when present")
    p.add_argument("--cuda-only", action="store_true", help="time CUDA alone (an error without one)")
    p.add_argument("--batch-size", type=int, help="pictures a step (default: the config's)")
    p.add_argument("--loader", type=int, metavar="N", help="time the config's data loader over N batches instead")
    p.add_argument("--views", action="store_true", help="batches of the config's training views, not ellipsoids")
    p.add_argument("--init", metavar="MODEL", help="start from this saved model's weights (e.g. models/default)")
    p.add_argument("overrides", nargs="*", help="section.key=value config overrides, as training/train.py takes "
                   "(e.g. loss.silhouette=0)")
    args = p.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        p.error("--batch-size must be at least 1")
    if args.loader is not None and (args.loader < 1 or args.cuda_only or args.cpu_only or args.steps is not None
                                    or args.views or args.init):
        p.error("--loader N takes N >= 1 batches and times no model: drop --cuda-only, --cpu-only, --steps, "
                "--views and --init")
    if not str(args.config).startswith("/"):
        args.config = str(REPO / args.config)
    check_file(p, "--config", args.config)
    check_model(p, args.init, "--init")
    try:
        cfg = load_config(args.config, args.tiny, args.overrides)
    except (ValueError, TypeError) as exc:
        p.error(f"the config with {' '.join(args.overrides) or 'no overrides'}: {exc}")
    try:
        return emit(run(args, cfg))
    except (ValueError, FileNotFoundError) as exc:  # no renders for --views or no pack, an --init that does not fit,
        p.exit(2, f"error: {exc}\n")  # no CUDA for --cuda-only: bad input for this machine, as the other benches say


if __name__ == "__main__":
    main()
