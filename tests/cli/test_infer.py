"""`vitkit predict | bench | export` end to end, in process, on a tiny checkpoint."""

from __future__ import annotations

import json

import onnx

from tests.helpers.infer import save_tiny_checkpoint, write_images
from vitkit.cli import main


def test_cli_predict_json(tmp_path, capsys):
    ckpt = save_tiny_checkpoint(tmp_path / "m.safetensors")
    images = write_images(tmp_path / "imgs", 2)
    (tmp_path / "imgs" / "bad.png").write_bytes(b"nope")
    rc = main(["predict", str(ckpt), str(tmp_path / "imgs"), "--format", "json", "--topk", "2", "--batch-size", "2"])
    out, err = capsys.readouterr()
    assert rc == 0
    rows = json.loads(out)
    assert [r["path"] for r in rows] == [str(p) for p in images] and all(len(r["top"]) == 2 for r in rows)
    assert "skipped" in err and "bad.png" in err
    assert main(["predict", str(ckpt), str(tmp_path / "imgs" / "bad.png"), "--strict"]) == 2
    assert "bad.png" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "nope.safetensors"), str(images[0])]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_cli_bench_writes_json(tmp_path, capsys):
    ckpt = save_tiny_checkpoint(tmp_path / "m.safetensors", depth=1)
    out = tmp_path / "bench.json"
    assert main(["bench", str(ckpt), "--backends", "eager_fp32,torch_int8", "--batch-size", "2", "--reps", "2",
                 "--latency-reps", "2", "--warmup", "1", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "torch_int8" in table and "p50 ms b1" in table
    data = json.loads(out.read_text())
    assert data["backends"]["torch_int8"]["throughput_img_s"] > 0 and data["batch_size"] == 2
    assert data["command"].startswith("vitkit")


def test_cli_export_onnx_with_int8(tiny_checkpoint, tmp_path, capsys):
    write_images(tmp_path / "imgs", 3)
    out = tmp_path / "model.onnx"
    assert main(["export", str(tiny_checkpoint), "--format", "onnx", "--out", str(out), "--check-images",
                 str(tmp_path / "imgs"), "--int8"]) == 0
    text = capsys.readouterr().out
    assert "real_images" in text and "verified: max abs diff" in text
    int8 = tmp_path / "model.int8.onnx"
    assert int8.exists()
    proto = onnx.load(str(int8))
    assert any(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul") for n in proto.graph.node)
    assert main(["export", str(tiny_checkpoint), "--format", "onnx", "--out", str(out), "--force", "--check-images",
                 str(tmp_path / "nothing-here")]) == 2


def test_cli_export_static_int8_checks_agreement(tiny_checkpoint, tmp_path, capsys):
    write_images(tmp_path / "imgs", 3)
    write_images(tmp_path / "calib", 4)
    out = tmp_path / "model.onnx"
    base = ["export", str(tiny_checkpoint), "--format", "onnx", "--out", str(out), "--force", "--check-images",
            str(tmp_path / "imgs")]
    assert main(base + ["--int8", "static"]) == 2
    assert "--calib-images" in capsys.readouterr().err
    assert main(base + ["--int8", "static", "--calib-images", str(tmp_path / "calib"), "--min-agreement", "0"]) == 0
    text = capsys.readouterr().out
    assert "static, minmax calibration on 4 images" in text and "top-1 agreement with eager fp32 on 3" in text
    int8 = tmp_path / "model.int8.onnx"
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(int8)).graph.node)
    int8.unlink()
    assert main(base + ["--int8", "static", "--calib-images", str(tmp_path / "calib"), "--min-agreement", "1.01"]) == 2
    assert "< --min-agreement 1.01" in capsys.readouterr().err and not int8.exists() and out.exists()
