"""Writes tests/durations.json, the seconds each test group took (setup, call and teardown of its tests), from the
JUnit XML of a full run: `bash scripts/test.sh --junitxml=/tmp/junit.xml`, then
`.venv/bin/python tests/durations.py /tmp/junit.xml`. tests/conftest.py starts the longest groups first."""
from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from conftest import DURATIONS, group_of  # noqa: E402


def group_seconds(junit: Path) -> dict[str, float]:
    seconds: dict[str, float] = defaultdict(float)
    for case in ET.parse(junit).getroot().iter("testcase"):
        # classname is the module as a dotted name ("tests.roles.test_noop_rerun"), the class appended when there is one.
        parts = case.get("classname", "").split(".")
        module = "/".join(p for p in parts if not p[:1].isupper()) + ".py"
        seconds[group_of(module)] += float(case.get("time", 0))
    return {group: round(total, 1) for group, total in sorted(seconds.items(), key=lambda kv: -kv[1])}


if __name__ == "__main__":
    DURATIONS.write_text(json.dumps(group_seconds(Path(sys.argv[1])), indent=1) + "\n")
    print(f"wrote {DURATIONS}")
