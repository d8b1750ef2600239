import sys

from dicesim.collector import started

with started():  # the program's start-up (dicesim/collector.py): typer, rich and the CLI's modules
    from dicesim.cli import main

sys.exit(main())
