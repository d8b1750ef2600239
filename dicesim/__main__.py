import sys

from dicesim.cli import main

sys.exit(main())
