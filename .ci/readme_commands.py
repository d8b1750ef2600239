"""Print the README's set-up commands: the shell code blocks under "Set up and run", one per line.

The first is the main job, the second the tests. CI runs them from here, so the README cannot
drift from what CI checks (tests/test_readme_commands.py holds both to that).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

BLOCK = re.compile(r"```sh\n(.*?)\n```", re.S)


def setup_commands(readme: str) -> list[str]:
    """The commands of the ```sh blocks in the "Set up and run" section, in order."""
    section = readme.split("## Set up and run", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in BLOCK.findall(section)]


if __name__ == "__main__":
    commands = setup_commands(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md").read_text(encoding="utf-8"))
    which = sys.argv[2] if len(sys.argv) > 2 else "all"
    print({"main": commands[0], "test": commands[1]}.get(which, "\n".join(commands)))
