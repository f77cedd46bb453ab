"""Knowledge distillation: the loss terms, the teacher's handling, and the switch inside the training loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers.train import REPO, TINY, cli_sets, tiny_config
from vitkit.train import train
from vitkit.train.config import ConfigError, load_config
from vitkit.train.distill import DistillConfig, Distiller


class Fixed(nn.Module):
    """A 'teacher' whose logits are a fixed linear map of the mean pixel, so the expected loss is computable."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.lin(self.drop(x.mean(dim=(2, 3))))


def _distiller(kind="soft", alpha=0.5, temperature=2.0, precision="fp32", **norms):
    torch.manual_seed(0)
    return Distiller(DistillConfig("unused", kind=kind, alpha=alpha, temperature=temperature), Fixed(),
                     nn.CrossEntropyLoss(), precision, **norms)


def test_soft_loss_is_weighted_ce_plus_scaled_kl():
    d = _distiller()
    x, y, out = torch.randn(5, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0]), torch.randn(5, 4)
    logits, loss = d(x, out, y)
    t = d.teacher(x)
    kl = (F.softmax(t / 2, 1) * (F.log_softmax(t / 2, 1) - F.log_softmax(out / 2, 1))).sum(1).mean() * 4
    assert torch.equal(logits, out)
    assert torch.allclose(loss, 0.5 * F.cross_entropy(out, y) + 0.5 * kl, atol=1e-6)


def test_hard_loss_uses_teacher_argmax_and_alpha_zero_is_plain_ce():
    x, y, out = torch.randn(5, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0]), torch.randn(5, 4)
    hard = _distiller("hard", alpha=1.0)
    assert torch.allclose(hard(x, out, y)[1], F.cross_entropy(out, hard.teacher(x).argmax(1)))
    assert torch.allclose(_distiller(alpha=0.0)(x, out, y)[1], F.cross_entropy(out, y))


def test_deit_tuple_sends_labels_to_class_head_and_teacher_to_distillation_head():
    d = _distiller("hard", alpha=0.5)
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    cls_logits, kd_logits = torch.randn(4, 4), torch.randn(4, 4)
    logits, loss = d(x, (cls_logits, kd_logits), y)
    expected = 0.5 * F.cross_entropy(cls_logits, y) + 0.5 * F.cross_entropy(kd_logits, d.teacher(x).argmax(1))
    assert torch.allclose(loss, expected) and torch.allclose(logits, (cls_logits + kd_logits) / 2)


def test_teacher_frozen_in_eval_mode_and_inference_precision():
    d = _distiller(precision="bf16").train()
    assert not d.teacher.training and d.teacher.lin.weight.dtype == torch.bfloat16
    assert not any(p.requires_grad for p in d.teacher.parameters())
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(d.teacher_logits(x), d.teacher_logits(x))  # dropout off: deterministic


def test_teacher_input_renormalised_to_its_own_statistics():
    d = _distiller(student_norm=((0.5,) * 3, (0.25,) * 3), teacher_norm=((0.0,) * 3, (1.0,) * 3))
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(d.teacher_logits(x), d.teacher(x * 0.25 + 0.5), atol=1e-6)


@pytest.mark.parametrize("bad,match", [
    ({"kind": "soft"}, "needs a teacher"), ({"teacher": "t.safetensors", "alpha": 2}, "alpha"),
    ({"teacher": "t.safetensors", "kind": "medium"}, "kind"), ({"teacher": "t.safetensors", "tau": 1}, "tau"),
    ({"teacher": "torchvision:resnet18"}, "teacher_weights"),
])
def test_bad_distill_config_names_the_key(bad, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [f"train.distill={json.dumps(bad)}"])


def _teacher_checkpoint(tmp_path: Path) -> Path:
    summary = train(tiny_config(tmp_path / "teacher", "train.epochs=3"))
    return Path(summary["run_dir"]) / "best.safetensors"


def test_distillation_in_the_loop_from_a_vitkit_teacher(tmp_path):
    teacher = _teacher_checkpoint(tmp_path)
    student = train(tiny_config(tmp_path / "student", "train.epochs=4", "log.every_steps=1",
                                f"train.distill={{teacher: {teacher}, kind: soft, temperature: 2.0, alpha: 0.7}}"))
    losses = [json.loads(line)["train_loss"] for line in (Path(student["run_dir"]) / "metrics.jsonl").open()
              if json.loads(line)["kind"] == "step"]
    assert all(map(torch.isfinite, torch.tensor(losses)))
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4  # the combined loss decreases


def test_deit_student_with_torchvision_teacher_hard_distillation(tmp_path):
    import torchvision

    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), path)
    summary = train(tiny_config(
        tmp_path, "model.name=deit_tiny_distilled_patch4_32", "model.kwargs={embed_dim: 32, depth: 1, num_heads: 2}",
        "train.epochs=1", f"train.distill={{teacher: 'torchvision:resnet18', teacher_weights: {path}, kind: hard}}"))
    assert summary["steps"] == 4 and summary["test_acc1"] is not None


def test_distillation_under_ddp_two_processes(tmp_path):
    import subprocess
    import sys

    teacher = _teacher_checkpoint(tmp_path)
    env = {"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vitkit",
           "train", *cli_sets([*TINY, f"checkpoint.out_dir={tmp_path / 'ddp'}", "train.max_steps=3",
                               f"train.distill={{teacher: {teacher}, kind: hard}}"])]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test accuracy" in proc.stdout
