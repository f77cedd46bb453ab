"""`vitkit models` and `vitkit smoke` over the whole registry, and the README's table of it."""

import json
import re
from pathlib import Path

import vitkit
from vitkit.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"
TABLE_ROW = re.compile(r"^\| `(?P<name>[^`]+)` \| (?P<params>[\d.]+) \| (?P<gflops>[\d.]+) \| (?P<input>\d+x\d+) \| "
                       r"(?P<classes>\d+) \|")


def test_models_and_smoke_commands_cover_every_registered_model(capsys):
    """`vitkit models` and `vitkit smoke` must handle every architecture, resolution-free ones included, and the
    README's "Registered models" table must be what `vitkit models` prints: every name, the same figures."""
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(vitkit.list_models())
    readme = {m["name"]: m.groupdict() for m in map(TABLE_ROW.match, README.read_text().splitlines()) if m}
    assert sorted(readme) == sorted(r["name"] for r in rows), "README's model table differs from vitkit models"
    for r in rows:
        row = readme[r["name"]]
        assert row["params"] == f"{r['params_m']:.2f}" and row["gflops"] == f"{r['gflops']:.3f}", (row, r)
        assert row["input"] == "x".join(map(str, r["img_size"])) and int(row["classes"]) == r["num_classes"], row
    assert main(["smoke", "navit_*"]) == 0 and "navit_tiny_patch4_32" in capsys.readouterr().out
