"""torchrun with 2 CPU processes (gloo): the same weights as one process with the same global batch; a worker killed
with SIGKILL is restarted by torchrun and the run resumes by itself; two single-process "nodes" joined by a c10d
rendezvous on 127.0.0.1 train as one 2-process torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import yaml

import vitkit
from tests.helpers.train import FAULT_DRIVER, REPO, TINY, cli_sets, last_weights, max_abs_diff, tiny_config
from vitkit.train import train

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")

# No dropout, no augmentation: the 2 ranks' halves of each global batch then average to exactly the 1-process
# gradient. SGD with momentum keeps weight differences proportional to gradient differences (Adam's first steps
# amplify round-off of near-zero gradients). accum_steps=2 exercises DDP's no_sync on the inner micro-steps.
DDP_SAME = ["optim.name=sgd", "optim.lr=0.2", "optim.momentum=0.9", "train.max_steps=4", "data.batch_size=16",
            "train.accum_steps=2", "train.deterministic=true"]

TORCHRUN_TIMEOUT_S = 300


def _env() -> dict[str, str]:
    # TORCH_DISABLE_SHARE_RDZV_TCP_STORE: a fresh rendezvous store for each attempt. Shared with the agent (torch's
    # default), a restarted worker group may read the killed attempt's addresses and fail to connect
    # (pytorch/pytorch#135712); docs/training.md tells users the same.
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1",
            "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


def _torchrun_cmd(launcher: list[str], program: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launcher, *program]


def torchrun(args: list[str], cwd: Path, nproc: int = 2, launcher: tuple[str, ...] = ()
             ) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node N [launcher...] -m vitkit ARGS``."""
    cmd = _torchrun_cmd(["--standalone", f"--nproc_per_node={nproc}", *launcher], ["-m", "vitkit", *args])
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT_S)


def torchrun_killed(die_after_step: int, sets: list[str], cwd: Path, nproc: int = 2, driver: tuple[str, ...] = (),
                    launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """torchrun of tests/helpers/fault_driver.py: after optimizer step ``die_after_step`` every rank SIGKILLs itself,
    or those ``driver`` options (``--rank R``, ``--first-attempt-only``) say."""
    cmd = _torchrun_cmd(["--standalone", f"--nproc_per_node={nproc}", *launcher],
                        [str(FAULT_DRIVER), str(die_after_step), *driver, *cli_sets(sets)])
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT_S)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _only_run(out: Path) -> Path:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, f"expected one run directory in {out}, found {runs}"
    return runs[0]


def _logged_steps(run_dir: Path) -> list[int]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if r["kind"] == "step"]


@dataclass
class Reference:
    run_dir: Path
    stdout: str


@pytest.fixture(scope="module")
def two_process_reference(tmp_path_factory):
    """Uninterrupted ``torchrun --nproc_per_node 2`` runs of DDP_SAME, one per strategy, made once for the module:
    what the killed, restarted and two-node runs must reproduce."""
    made: dict[str, Reference] = {}

    def reference(strategy: str) -> Reference:
        if strategy not in made:
            tmp = tmp_path_factory.mktemp(f"reference-{strategy}")
            sets = [*TINY, *DDP_SAME, f"checkpoint.out_dir={tmp / 'out'}", f"dist.strategy={strategy}"]
            proc = torchrun(["train", *cli_sets(sets)], tmp)
            assert proc.returncode == 0, proc.stderr[-4000:]
            made[strategy] = Reference(_only_run(tmp / "out"), proc.stdout)
        return made[strategy]

    return reference


@pytest.fixture(scope="module")
def one_process_weights(tmp_path_factory) -> dict[str, torch.Tensor]:
    """DDP_SAME trained in this process: the weights a 2-process run must equal."""
    return last_weights(train(tiny_config(tmp_path_factory.mktemp("one-process"), *DDP_SAME))["run_dir"])


def test_ddp_two_processes_match_one(tmp_path, two_process_reference, one_process_weights):
    ddp = two_process_reference("ddp")
    assert ddp.stdout.count("test accuracy") == 1  # rank 0 alone reports
    start = train(tiny_config(tmp_path / "start", *DDP_SAME, "optim.lr=1e-30"))  # ~ the initial weights
    assert max_abs_diff(last_weights(start["run_dir"]), one_process_weights) > 1e-3
    diff = max_abs_diff(last_weights(ddp.run_dir), one_process_weights)
    assert diff < 1e-5, f"DDP weights differ from 1 process by {diff}"
    state = torch.load(ddp.run_dir / "last.pt", weights_only=True)
    assert state["geometry"] == [8, 2, 2]  # 8 images per process x 2 accumulation x 2 processes


def test_fsdp2_two_processes_match_one(two_process_reference, one_process_weights):
    """FSDP2 (fully_shard) on CPU/gloo: the same weights as 1 process (its kill and resume: the test below)."""
    fsdp = two_process_reference("fsdp")
    diff = max_abs_diff(last_weights(fsdp.run_dir), one_process_weights)
    assert diff < 1e-5, f"FSDP2 weights differ from 1 process by {diff}"
    best = vitkit.load_checkpoint(fsdp.run_dir / "best.safetensors")  # gathered full weights rebuild the model
    assert best.num_classes == 4


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_killed_worker_is_restarted_and_the_run_resumes_by_itself(tmp_path, strategy, two_process_reference):
    """kill -9 of rank 1 mid-epoch under ``torchrun --max-restarts``: torchrun restarts the worker group, which
    continues the same run from its last checkpoint (step 2 of epoch 1's 4) to the same weights, bit for bit, as an
    uninterrupted 2-process run.

    Two restarts are allowed, not one: on a loaded 2-core machine a rank of the restarted group has been seen to
    abort within seconds of starting (std::terminate in native code, exit -6, nothing from Python), and another
    restart is what torchrun is for. A resume that fails every time still fails the test."""
    out = tmp_path / "out"
    sets = [*TINY, *DDP_SAME, f"checkpoint.out_dir={out}", f"dist.strategy={strategy}", "checkpoint.every_steps=2",
            "log.every_steps=1", "log.progress=plain"]
    proc = torchrun_killed(3, sets, tmp_path, driver=("--rank", "1", "--first-attempt-only"),
                           launcher=("--max-restarts=2",))
    assert proc.returncode == 0, proc.stderr[-12000:]
    run_dir = _only_run(out)  # the restarted group continued this run instead of starting a second one
    assert proc.stdout.count(f"run {run_dir}:") >= 2, proc.stdout[-4000:]  # rank 0 of each attempt announces it
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["checkpoint"]["resume"] == str(run_dir)
    assert _logged_steps(run_dir) == [1, 2, 3, 4]  # steps 1-3 of the killed attempt above step 2 were dropped
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 4
    reference = last_weights(two_process_reference(strategy).run_dir)
    resumed = last_weights(run_dir)
    assert all(torch.equal(resumed[k], reference[k]) for k in reference), \
        f"restarted run differs from the uninterrupted one by {max_abs_diff(resumed, reference)}"


def two_nodes(tmp_path: Path, programs: list[list[str]], timeout: float = TORCHRUN_TIMEOUT_S,
              logs: str = "node") -> list[subprocess.Popen]:
    """One ``torchrun --nnodes 2 --nproc-per-node 1`` per program, started together and joined by a c10d rendezvous
    on 127.0.0.1, as two machines would be; returns the finished torchruns, their output in ``<logs><n>.out/.err``."""
    port = _free_port()
    launcher = ["--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
                f"--rdzv-id=vitkit-two-nodes-{port}", "--local-addr=127.0.0.1"]
    nodes = []
    try:
        for n, program in enumerate(programs):  # files, not pipes: an unread pipe could stall a node
            with open(tmp_path / f"{logs}{n}.out", "w") as so, open(tmp_path / f"{logs}{n}.err", "w") as se:
                nodes.append(subprocess.Popen(_torchrun_cmd(launcher, program), cwd=tmp_path, env=_env(), stdout=so,
                                              stderr=se))
        for node in nodes:
            node.wait(timeout=timeout)
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()
    return nodes


# What torchrun does to the program of a restarted worker group: TORCHELASTIC_RESTART_COUNT counts this agent's
# restarts, so a machine that joins a restarted group afresh (a replacement for a lost one) says 0 where the others
# say 1.
_RESTARTED = """
import os, runpy, sys
os.environ["TORCHELASTIC_RESTART_COUNT"] = "1"
sys.argv = ["vitkit", *sys.argv[1:]]
runpy.run_module("vitkit", run_name="__main__", alter_sys=True)
"""


def test_two_single_process_nodes_train_like_one_two_process_run(tmp_path, two_process_reference):
    """Two torchrun invocations (--nnodes 2, one process each) meet at a c10d rendezvous on 127.0.0.1, as two
    machines would, and both die after step 3. A restarted group of two machines continues the run from its step-2
    last.pt: one machine restarted (restart count 1), one a fresh replacement (count 0). The weights at the end are
    those of one uninterrupted ``torchrun --nproc_per_node 2``."""
    out = tmp_path / "out"
    sets = [*TINY, *DDP_SAME, f"checkpoint.out_dir={out}", "checkpoint.every_steps=2", "log.every_steps=1"]
    killed = two_nodes(tmp_path, [[str(FAULT_DRIVER), "3", *cli_sets(sets)]] * 2, logs="killed")
    assert all(node.returncode != 0 for node in killed)
    run_dir = _only_run(out)
    state = torch.load(run_dir / "last.pt", weights_only=True)
    assert (state["step"], state["geometry"]) == (2, [8, 2, 2])  # 8 images per process x 2 accumulation x 2 nodes

    restarted = tmp_path / "restarted_worker.py"
    restarted.write_text(_RESTARTED)
    program = ["train", *cli_sets(sets)]
    nodes = two_nodes(tmp_path, [[str(restarted), *program], ["-m", "vitkit", *program]], logs="continued")
    for n, node in enumerate(nodes):
        assert node.returncode == 0, (tmp_path / f"continued{n}.err").read_text()[-4000:]
    stdouts = [(tmp_path / f"continued{n}.out").read_text() for n in range(2)]
    assert sum(stdout.count("test accuracy") for stdout in stdouts) == 1  # one rank 0 over both nodes
    assert _only_run(out) == run_dir  # no second run: the replacement continued the same one
    assert _logged_steps(run_dir) == [1, 2, 3, 4]
    diff = max_abs_diff(last_weights(run_dir), last_weights(two_process_reference("ddp").run_dir))
    assert diff < 1e-5, f"two nodes differ from one 2-process torchrun by {diff}"
