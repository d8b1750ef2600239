"""Make ``reference_cond_28x50.json`` from the reference cross-check harness's results.

The harness (kept outside this repository; docs/strategies.md, "Conditional communication")
runs the DICE reference's own code (Cobalt-27/DICE @ 292938d) on 2 gloo CPU ranks and writes
one ``<case>.json`` per run. This keeps, per case, the reference flags, whether and where the
run failed, and, per group of layers with the same columns, the steps whose dispatch sent one
copy per token and the lags of the kept and dropped copies, and how many layers held a
skip-cache entry after each step. Numbers only; no reference code.

    python3 tests/data/reference_cond_extract.py /work/harness/out > tests/data/reference_cond_28x50.json
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

#: case -> harness result file (runs of the real code: 28 layers x 50 steps, n = 5 at 8 x 50)
CASES = {"dice": "dice_28x50", "interweaved_cond": "interweaved_cond_28x50", "displaced_cond": "displaced_cond_28x50",
         "dice_n3": "dice_n3_28x50", "displaced_cond_n3": "displaced_cond_n3_28x50", "dice_n4": "dice_n4_28x50",
         "displaced_cond_n4": "displaced_cond_n4_28x50", "displaced_cond_n5": "displaced_cond_n5"}


def case(doc: dict) -> dict:
    L, T = doc["config"]["depth"], doc["config"]["steps"]
    out = {"flags": " ".join(doc["reference_flags"]), "layers": L, "steps": T, "async_layers": doc["async_layers"],
           "status": doc["status"], "failure": None, "columns": []}
    if doc["errors"]:
        e = doc["errors"][0]
        out["failure"] = {"step": e["at_step"], "layer": e["at_layer"], "error": e["error"]}
        return out
    ep = doc["ep"]
    groups: dict[str, dict] = {}
    for l in range(L):
        col = {"skip_steps": [s for s in range(T) if ep["skip"][s][l]],
               "lag_kept": [ep["lag_kept"][s][l] for s in range(T)],
               "lag_dropped": [ep["lag_dropped"][s][l] for s in range(T)]}
        groups.setdefault(json.dumps(col, sort_keys=True), {"layers": [], **col})["layers"].append(l)
    out["columns"] = list(groups.values())
    # layers holding a skip-cache entry after each step (rank 0's bytes / one entry's; all hold one after step 0)
    skip_nbytes = [doc["buffers"]["end_of_step_by_rank"][0][str(s)]["skip_cache"] for s in range(T)]
    out["skip_cache_entries"] = [b // (skip_nbytes[0] // L) for b in skip_nbytes]
    return out


def main(out_dir: str) -> None:
    docs = {name: json.loads((Path(out_dir) / f"{file}.json").read_text()) for name, file in CASES.items()}
    first = next(iter(docs.values()))
    text = json.dumps({
        "made_by": "python3 tests/data/reference_cond_extract.py /work/harness/out",
        "reference": f"{first['reference']['repo']} @ {first['reference']['commit']}",
        "runs": "the reference's own code on 2 gloo CPU ranks (harness dicecheck, outside this repository); "
                "steps s = 0..T-1 in execution order (the reference's counter is i = T - s)",
        "cases": {name: case(doc) for name, doc in docs.items()},
    }, indent=1)
    # one line per list of numbers
    print(re.sub(r"\[[\d,\s]*\]", lambda m: "[" + ", ".join(m.group(0)[1:-1].split()).replace(",,", ",") + "]", text))


if __name__ == "__main__":
    main(sys.argv[1])
