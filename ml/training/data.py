"""UTKFace-style folders and the train / validation / test split.

File names are `AGE_GENDER_RACE_DATE*.jpg` (gender 0 male, 1 female; race 0 White, 1 Black,
2 Asian, 3 Indian, 4 Other; race is missing in a few originals; `x` marks a field that is not
known, as in submissions exported from the service, which ask for neither). Any number of folders
can be mixed, e.g. the shared UTKFace set and exported submissions.

The split is decided per group of byte-identical images, by a hash of the group's key and a seed,
so it does not depend on which other files are present: a file lands on the same side whatever
folder it is read from and whatever is added later. It is written to a CSV and reused.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ml.paths import SPLIT_FILE

NAME = re.compile(r"^(\d{1,3})_([01x])_(?:([0-4x])_)?(\d+)\S*\.(?:jpe?g|png|webp)$", re.IGNORECASE)
SPLITS = ("train", "val", "test")
DEFAULT_SEED = 20261126
# Shares of the groups; "test" is measured once at the end, never tuned on.
DEFAULT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


@dataclass(frozen=True, slots=True)
class Sample:
    path: Path
    age: int
    gender: int | None  # None when not known
    race: int | None  # None when not known

    @property
    def name(self) -> str:
        return self.path.name


def parse_name(name: str) -> tuple[int, int | None, int | None] | None:
    """(age, gender, race) from a UTKFace file name, or None if the name does not follow it."""
    m = NAME.match(name)
    if not m or int(m.group(1)) > 120:
        return None

    def field(value: str | None) -> int | None:
        return int(value) if value is not None and value.isdigit() else None

    return int(m.group(1)), field(m.group(2)), field(m.group(3))


def scan(folders: list[Path]) -> tuple[list[Sample], int]:
    """Every well-named image in `folders` (recursively), and how many files were skipped."""
    samples: list[Sample] = []
    skipped = 0
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if not path.is_file() or path.suffix.lower() in (".csv", ".md", ".txt", ".json"):
                continue
            parsed = parse_name(path.name)
            if parsed is None:
                skipped += 1
                continue
            samples.append(Sample(path, *parsed))
    return samples, skipped


def read_duplicate_groups(folders: list[Path]) -> dict[str, str]:
    """File name -> group key, from a `duplicates.csv` (columns group,file,age) in each folder or its
    parent (the shared set keeps it beside `images/`)."""
    groups: dict[str, str] = {}
    for folder in folders:
        dup = next((d for d in (Path(folder) / "duplicates.csv", Path(folder).parent / "duplicates.csv")
                    if d.exists()), None)
        if dup is not None:
            with dup.open(newline="") as f:
                for row in csv.DictReader(f):
                    groups[row["file"]] = f"{Path(folder).resolve()}#{row['group']}"
    return groups


def _bucket(key: str, seed: int, fractions: dict[str, float]) -> str:
    h = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64
    edge = 0.0
    for split in SPLITS:
        edge += fractions.get(split, 0.0)
        if h < edge:
            return split
    return SPLITS[-1]


@dataclass(frozen=True, slots=True)
class Split:
    assignment: dict[str, str]  # file name -> "train" | "val" | "test" | "dropped"

    def of(self, samples: list[Sample], split: str) -> list[Sample]:
        return [s for s in samples if self.assignment.get(s.name) == split]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for v in self.assignment.values():
            out[v] += 1
        return dict(out)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "split"])
            for name in sorted(self.assignment):
                w.writerow([name, self.assignment[name]])

    @classmethod
    def read(cls, path: Path) -> Split:
        with path.open(newline="") as f:
            return cls({row["file"]: row["split"] for row in csv.DictReader(f)})


def make_split(samples: list[Sample], groups: dict[str, str], seed: int = DEFAULT_SEED,
               fractions: dict[str, float] | None = None) -> Split:
    """Assign each sample to a side. A duplicate group stays on one side; one copy is kept; a group
    whose copies disagree on the age is dropped whole (its label is unknown)."""
    fractions = fractions or DEFAULT_FRACTIONS
    by_group: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_group[groups.get(s.name, s.name)].append(s)
    assignment: dict[str, str] = {}
    for key, members in by_group.items():
        members = sorted(members, key=lambda s: s.name)
        if len({s.age for s in members}) > 1:
            for s in members:
                assignment[s.name] = "dropped"
            continue
        side = _bucket(key, seed, fractions)
        assignment[members[0].name] = side
        for s in members[1:]:
            assignment[s.name] = "dropped"  # an identical copy adds nothing
    return Split(assignment)


def load_split(samples: list[Sample], folders: list[Path], split_file: Path | None = SPLIT_FILE,
               seed: int = DEFAULT_SEED) -> Split:
    """The recorded split, extended (never changed) for files it does not list yet."""
    recorded = Split.read(split_file) if split_file and split_file.exists() else Split({})
    fresh = make_split(samples, read_duplicate_groups(folders), seed)
    merged = {**fresh.assignment, **{k: v for k, v in recorded.assignment.items()}}
    return Split(merged)


RACES = {0: "White", 1: "Black", 2: "Asian", 3: "Indian", 4: "Other"}
GENDERS = {0: "male", 1: "female"}

