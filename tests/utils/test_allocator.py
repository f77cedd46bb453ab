"""retain_freed_memory: freed tensors' pages are reused, not faulted in again (checked in a fresh process, since the
setting is process-wide)."""

import subprocess
import sys

import pytest

from vitkit.utils.allocator import glibc_malloc, retain_freed_memory

_CHURN = """
import resource, sys, torch
if sys.argv[1] == "retain":
    from vitkit.utils.allocator import retain_freed_memory
    assert retain_freed_memory()
def churn(start):
    # each round's blocks are a page larger than the last round's: glibc's defaults mmap every one of them afresh
    # (its threshold only rises to the size of a block freed before), a retaining heap reuses the freed pages
    for i in range(start, start + 20):
        blocks = [torch.ones(512 * 1024 + 1024 * i) for _ in range(4)]  # 4 x (2 MiB + i pages), every page written
        del blocks
churn(0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn(20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not glibc_malloc(), reason="glibc only")
def test_retained_memory_is_reused_without_page_faults():
    default, retained = _page_faults("default"), _page_faults("retain")
    # the 80 timed blocks are ~43,400 pages: glibc's defaults fault in every one, a retaining heap only its growth
    assert default > 40_000, f"glibc's defaults faulted only {default} pages: the test no longer shows the problem"
    assert retained < default / 20, f"{retained} page faults with retain_freed_memory vs {default} without"


def test_rejects_keep_below_the_mmap_threshold():
    with pytest.raises(ValueError, match="keep_bytes must be at least"):
        retain_freed_memory(keep_bytes=1024)


def test_inference_commands_retain_unless_opted_out(monkeypatch, tmp_path):
    from vitkit.cli import infer as infer_commands
    from vitkit.cli import main
    from vitkit.utils import allocator

    calls = []
    monkeypatch.setattr(allocator, "retain_freed_memory", lambda: calls.append("retain") or True)
    monkeypatch.setenv(allocator.INFERENCE_OPT_OUT, "1")
    assert allocator.retain_for_inference() is False and calls == []
    monkeypatch.delenv(allocator.INFERENCE_OPT_OUT)
    assert allocator.retain_for_inference() is True and calls == ["retain"]

    seen = []
    monkeypatch.setattr(infer_commands, "retain_for_inference", lambda: seen.append("predict"))
    # no images: the command stops early, but only after choosing the allocator
    assert main(["predict", str(tmp_path / "m.safetensors"), str(tmp_path / "none-*.png")]) == 2
    assert seen == ["predict"]
