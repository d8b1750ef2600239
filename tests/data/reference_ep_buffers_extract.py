"""Make ``reference_ep_buffers.json`` from the reference cross-check harness's results.

The harness (kept outside this repository; docs/memory.md, "Checks") runs the DICE reference's
own code (Cobalt-27/DICE @ 292938d) on 2 gloo CPU ranks and walks its caches after every step,
adding the bytes of each tensor object held once per kind. This keeps, per case, the reference
flags, the run's sizes and the bytes each kind held on every rank at the end of one steady step.
Numbers only; no reference code.

    python3 tests/data/reference_ep_buffers_extract.py /work/harness/out > tests/data/reference_ep_buffers.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

#: harness case -> (dicesim preset, buffer policy): the runs without --auto-gc, whose buffers do not
#: depend on timing (with it, what is freed depends on which collectives gloo had finished)
CASES = {"displaced": ("displaced", "reference"), "interweaved": ("interweaved", "reference"),
         "interweaved_deep": ("interweaved-deep", "reference")}
KINDS = ("dispatch_send", "dispatch_recv", "combine_send", "combine_recv", "skip_cache")
STEP = "25"


def case(doc: dict, preset: str, policy: str) -> dict:
    cfg = doc["config"]
    return {"flags": " ".join(doc["reference_flags"]), "dicesim": {"strategy": preset, "buffer_policy": policy},
            "world_size": cfg["world_size"], "layers": cfg["depth"], "hidden": cfg["hidden"],
            "experts": cfg["experts"], "dtype": cfg["dtype"],
            "tokens_per_forward": doc["model_batch_per_forward"] * doc["tokens_per_image"],
            "steps": cfg["steps"], "step": int(STEP), "async_layers": doc["async_layers"],
            "bytes_by_rank": [{k: rank[STEP][k] for k in KINDS} for rank in doc["buffers"]["end_of_step_by_rank"]]}


def main(out_dir: str) -> None:
    doc = {"source": "harness dicecheck (Cobalt-27/DICE @ 292938d) on 2 gloo CPU ranks, "
                     "`python -m dicecheck run` default set; buffers held at the end of step 25 by kind",
           "cases": {}}
    for name, (preset, policy) in CASES.items():
        run = json.loads((Path(out_dir) / f"{name}.json").read_text())
        doc["cases"][name] = case(run, preset, policy)
    json.dump(doc, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
