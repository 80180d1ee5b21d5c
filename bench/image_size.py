"""What each Python package weighs in an environment, from the files its RECORD lists (the bytes on disk),
largest first, with the packages that require it. Made to run inside the image (no project import):

    podman run --rm -i --entrypoint python whatsmyage - < bench/image_size.py     # or docker run
    .venv/bin/python bench/image_size.py                                          # this venv, for comparison
"""

from __future__ import annotations

import platform
import re
import sys
from collections import defaultdict
from importlib import metadata


def name_of(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def main() -> None:
    sizes: dict[str, tuple[str, int]] = {}
    required_by: dict[str, set[str]] = defaultdict(set)
    for dist in metadata.distributions():
        name = dist.metadata["Name"].lower().replace("_", "-")
        total = 0
        for file in dist.files or []:
            path = file.locate()
            if path.is_file():
                total += path.stat().st_size
        sizes[name] = (dist.version, total)
        for requirement in dist.requires or []:
            if "extra ==" not in requirement:
                required_by[name_of(requirement)].add(name)
    print(f"Python {platform.python_version()} at {sys.prefix}, {platform.machine()}")
    print("| package | version | MB | required by |")
    print("|---|---|---:|---|")
    for name, (version, size) in sorted(sizes.items(), key=lambda item: -item[1][1]):
        print(f"| {name} | {version} | {size / 1e6:.1f} | {', '.join(sorted(required_by[name])) or '-'} |")
    print(f"| **all {len(sizes)}** | | **{sum(s for _, s in sizes.values()) / 1e6:.0f}** | |")


if __name__ == "__main__":
    main()
