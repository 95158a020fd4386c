#!/usr/bin/env bash
# Train the network on a GPU machine, from the pack of views, and leave its last snapshot in the folder $OUT in
# parts of at most 16 MiB each, small enough to copy back. Run there from the repository root, data/pack copied there:
#
#     bash scripts/device_train.sh [STEPS] [MINUTES] [key=value ...]     # defaults: 3000 steps, at most 8 minutes
#
# Training ends at STEPS or after MINUTES - 1.5 of training (optim.minutes, its learning rate decayed by the clock),
# whichever comes first; the minute and a half left is for starting and saving (a hard stop at MINUTES).
#
# When the pack carries a network (training/pack_views.py --init MODEL), training starts from it.
# docs/GPU.md says what to do before (the pack; the shipped model, 55 MB, set
# aside so that the copy of the working tree stays small) and after (joining the parts, attaching the shape bank).
# Exit codes: 0 a snapshot is in $OUT; 2 the run cannot start (OUT not a folder, the machine lacks CUDA or a package,
# no data/pack, a carried network that cannot be unpacked), one sentence; 1 no snapshot was written.
set -uo pipefail
steps=${1:-3000}
minutes=${2:-8}
shift $(( $# < 2 ? $# : 2 ))
if [ -z "${OUT:-}" ]; then
    echo "OUT must name the folder to leave the snapshot in: OUT=FOLDER bash scripts/device_train.sh [STEPS] [MINUTES]" >&2
    exit 2
fi
if [ ! -d "$OUT" ]; then
    echo "OUT $OUT is not a folder: create it first" >&2
    exit 2
fi
out=$OUT
run=runs/device
export PYTHONUNBUFFERED=1
python3 - <<'PY' || exit 2
import sys
try:
    import numpy, PIL, safetensors, scipy, torch, torch_geometric, yaml  # what training needs there
except Exception as err:  # noqa: BLE001 - ImportError, or an OSError of a library torch cannot load
    sys.exit(f"this machine lacks what training needs: {err}")
if not torch.cuda.is_available():
    sys.exit("this machine has no CUDA device: run it on the GPU machine")
print("torch", torch.__version__, "numpy", numpy.__version__, "on", torch.cuda.get_device_name(0))
PY
if [ ! -f data/pack/views.npz ]; then
    echo "data/pack/views.npz is missing: write it with training/pack_views.py and carry data/pack" >&2
    exit 2
fi
rm -rf "$run"
budget=$(python3 -c "print(max(0.5, $minutes - 1.5))")   # optim.minutes: ends decayed, with time to save
init=()
if [ -f data/pack/init.json ]; then   # the pack carries a network to start from (pack_views.py --init)
    python3 training/pack_views.py --unpack-init data/pack --out runs/init/model || exit 2
    init=(--init-from runs/init/model)
fi
timeout --signal=INT "$((minutes * 60))" python3 training/train.py --config training/configs/device.yaml "${init[@]}" \
    "optim.steps=$steps" "optim.minutes=$budget" "run.out=$run" "$@" > "$out/train.log" 2>&1
echo "train.py ended with $? (124: stopped at $minutes minutes)"
tail -5 "$out/train.log"
last=$(ls "$run"/snapshots/step_*.safetensors 2>/dev/null | sort | tail -1)
if [ -z "$last" ]; then
    echo "no snapshot was written" >&2
    exit 1
fi
cp "$run/log.csv" "$out/log.csv"
cp "${last%.safetensors}.json" "$out/snapshot.json"
split -b 15000000 -d -a 1 "$last" "$out/snapshot.safetensors.part"
ls -l "$out"
