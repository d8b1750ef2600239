"""``python -m validate``: see :mod:`validate.cli`."""

import os
import sys

from validate.cli import main

if __name__ == "__main__":
    code = main()
    from validate.executor.rendezvous import torchrun_requested

    if torchrun_requested():
        # A torchrun rank has written and flushed everything once main returns. Interpreter teardown
        # after destroy_process_group can still abort on a gloo thread ("terminate called without an
        # active exception", SIGABRT; pytorch/pytorch#190489), and torchrun then reports the whole run
        # failed: leave without teardown, as the spawned ranks do (validate/executor/launch.py _worker).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)
    sys.exit(code)
