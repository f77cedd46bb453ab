"""`vitkit cache`: builds an image folder's cache once, then reuses it."""

from __future__ import annotations

from tests.helpers.data import make_image_folder


def test_cache_cli_builds_then_reuses(tmp_path, capsys):
    from vitkit.cli import main

    root = tmp_path / "data"
    make_image_folder(root, bad=False)
    args = ["cache", str(root), "--cache-dir", str(tmp_path / "cache"), "--workers", "0", "--splits", "train", "val"]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("train") and "built at" in out[0] and "val" in out[1]
    assert main(args) == 0
    assert all("reused" in line for line in capsys.readouterr().out.splitlines())
