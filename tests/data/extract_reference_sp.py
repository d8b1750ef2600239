"""Write tests/data/reference_sp.json: the numbers the reference harness measured for sequence parallelism.

The harness (dicecheck, kept outside this repository; docs/sequence-parallel.md describes it) runs
the DICE reference's own ``seqpara/`` code on gloo CPU ranks and records one JSON file per run.
This script keeps, per run, only numbers derived from those files (lags, buffer bytes, collective
counts), nothing of the reference's code:

    python tests/data/extract_reference_sp.py /work/harness/out > tests/data/reference_sp.json

The harness runs it reads were produced by (docs/sequence-parallel.md, "Cross-check"):

    python -m dicecheck run                                  # W=2, L=8, T=50: sp, distrifusion, ... (default set)
    python -m dicecheck run --strategies sync,displaced,interweaved,dice,sp,distrifusion \\
        --world-size 4 --experts 8 --depth 8 --steps 20 --suffix _w4
    python -m dicecheck run --strategies sp,distrifusion,distrifusion_legacy --dtype float32 --attention plain \\
        --suffix _plain
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RUNS = ("sp", "distrifusion", "distrifusion_warmup", "sp_w4", "distrifusion_w4", "sp_single_img",
        "distrifusion_single_img", "distrifusion_plain", "distrifusion_legacy", "sp_ep")
HARNESS_COMMANDS = (
    "cd /work/harness && . /work/venv-ref/bin/activate && python -m dicecheck run",
    "python -m dicecheck run --strategies sync,displaced,interweaved,dice,sp,distrifusion --world-size 4 "
    "--experts 8 --depth 8 --steps 20 --suffix _w4",
    "python -m dicecheck run --strategies sp,distrifusion,distrifusion_legacy --dtype float32 --attention plain "
    "--suffix _plain",
)
KV_KINDS = ("kv_buffer_own", "kv_buffer_others", "kv_send", "kv_recv_own_slot", "kv_recv_others")


def _by_step(per_rank: list, rank: int = 0) -> list:
    d = per_rank[rank]
    return [d[str(s)] for s in range(len(d))] if isinstance(d, dict) else d


def _collectives(step: list[dict]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for c in step:
        key = f"{c['op']}:{c['phase']}:{'async' if c['async'] else 'sync'}"
        out[key] = {"count": c["count"], "bytes_local": c["bytes_local"]}
    return out


def extract(run: dict) -> dict:
    cfg = run["config"]
    T = cfg["steps"]
    end = _by_step(run["buffers"]["end_of_step_by_rank"])
    coll = run["collectives_by_rank"][0] if isinstance(run["collectives_by_rank"], list) \
        else run["collectives_by_rank"]["0"]
    reported = _by_step(run["buffers"]["reference_reported_by_rank"])
    return {
        "reference_flags": run["reference_flags"], "status": run["status"], "ranks_agree": run["sp"]["ranks_agree"],
        "world_size": cfg["world_size"], "depth": cfg["depth"], "steps": T, "hidden": cfg["hidden"],
        "dtype": cfg["dtype"], "attention": cfg["attention"], "sampler": cfg["sampler"],
        "per_proc_batch": cfg["per_proc_batch"], "images_per_forward": run["model_batch_per_forward"],
        "tokens_per_image": run["tokens_per_image"], "kv_local_shape": run["sp"]["kv_local_shape"],
        "kv_lag_others": run["sp"]["kv_lag_others"],
        "kv_lag_own_max": max(max(row) for row in run["sp"]["kv_lag_own"]),
        "kv_held_end_of_step": {k: [step[k] for step in end] for k in KV_KINDS},
        "sp_cached_tensors_size": [r.get("sp_cached_tensors_size") for r in reported],
        "collectives": {str(s): _collectives(coll[str(s)]) for s in (0, 1, 2, 3, T - 1) if str(s) in coll},
        "kv_groups": [g for g in run.get("kv_groups_rank0", []) if g["step"] <= 2],
    }


def main(out_dir: str) -> None:
    runs = {name: extract(json.loads((Path(out_dir) / f"{name}.json").read_text())) for name in RUNS}
    doc = {"source": "the dicecheck harness running Cobalt-27/DICE @ 292938d (seqpara/, models.py, sample_ddp.py "
                     "flag checks) on gloo CPU ranks; rank 0's view",
           "harness_commands": list(HARNESS_COMMANDS), "extracted_by": "python tests/data/extract_reference_sp.py "
           "/work/harness/out", "runs": runs}
    json.dump(doc, sys.stdout, indent=None, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/harness/out")
