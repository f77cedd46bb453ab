"""`vitkit models` and `vitkit smoke` over the whole registry."""

import vitkit


def test_models_and_smoke_commands_cover_every_registered_model(capsys):
    """`vitkit models` and `vitkit smoke` must handle every architecture, resolution-free ones included."""
    from vitkit.cli import main

    assert main(["models", "--json"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(vitkit.list_models())
    assert main(["smoke", "navit_*"]) == 0 and "navit_tiny_patch4_32" in capsys.readouterr().out
