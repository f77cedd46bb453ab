"""NaViT: packing images of mixed sizes gives each image the output it gets alone; collate, dropout, training."""

import pytest
import torch

import vitkit
from tests.helpers.models import training_losses
from vitkit.models.navit import NaViT, PackCollate, pack_images

TINY = dict(patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=4, max_grid=8, max_seq_len=40)


def _model():
    torch.manual_seed(0)
    return NaViT(**TINY).eval()


def _images():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(3, h, w, generator=g) for h, w in ((32, 32), (16, 48), (24, 24), (8, 64), (40, 16))]


def test_packing_gives_the_same_per_image_outputs_as_running_each_image_alone():
    model, images = _model(), _images()
    packed = pack_images(images, 8, max_seq_len=40)
    assert packed.patches.shape[0] < len(images)  # several images really share sequences
    assert (packed.image_index >= 0).sum(1).max() > 1
    with torch.no_grad():
        together = model(packed)
        alone = torch.cat([model(img[None]) for img in images])
    assert together.shape == (5, 4)
    assert torch.allclose(together, alone, atol=1e-5)


def test_first_fit_packing_layout_and_padding():
    packed = pack_images(_images(), 8, max_seq_len=40)
    tokens = [16, 12, 9, 8, 10]
    for s in range(packed.slots.shape[0]):
        for k, i in enumerate(packed.image_index[s].tolist()):
            if i >= 0:
                assert int((packed.slots[s] == k).sum()) == tokens[i]
    assert int((packed.slots >= 0).sum()) == sum(tokens)
    assert (packed.patches[packed.slots < 0] == 0).all()


def test_collate_token_dropout_and_too_large_images():
    collate = PackCollate(8, 40, token_keep_rate=0.5, seed=0)
    packed, labels = collate([(img, i) for i, img in enumerate(_images())])
    assert labels.tolist() == [0, 1, 2, 3, 4]
    assert int((packed.slots >= 0).sum()) == sum(round(t * 0.5) for t in (16, 12, 9, 8, 10))
    with pytest.raises(ValueError, match="more than max_seq_len"):
        pack_images([torch.zeros(3, 64, 64)], 8, max_seq_len=40)
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        pack_images([torch.zeros(3, 30, 32)], 8, max_seq_len=40)


def test_training_on_mixed_resolutions_decreases_the_loss_with_checkpointing():
    model = _model().train()
    model.set_grad_checkpointing(True)
    images, labels = _images(), torch.tensor([0, 1, 2, 3, 0])
    packed = pack_images(images, 8, 40)
    losses = training_losses(model, packed, labels, lr=3e-3)
    assert losses[-1] < 0.6 * losses[0], losses


def test_registry_and_checkpoint_round_trip(tmp_path):
    model = vitkit.create_model("navit_tiny_patch4_32", depth=1).eval()
    vitkit.save_checkpoint(model, tmp_path / "n.safetensors")
    again = vitkit.load_checkpoint(tmp_path / "n.safetensors").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_torch_compile_on_a_packed_batch():
    model = _model()
    packed = pack_images(_images(), 8, 40)
    compiled = torch.compile(model, backend="aot_eager")  # the max_grid check is a graph break, not fullgraph
    with torch.no_grad():
        assert torch.allclose(compiled(packed), model(packed), atol=1e-5)


def test_onnx_export_of_fixed_size_batches(tmp_path):
    """A plain (B, C, H, W) batch exports (packing is traced for that size); packed batches stay in PyTorch."""
    ort = pytest.importorskip("onnxruntime")
    model, x = _model(), torch.randn(2, 3, 32, 32)
    torch.onnx.export(model, (x,), str(tmp_path / "navit.onnx"), dynamo=False, input_names=["images"])
    session = ort.InferenceSession(str(tmp_path / "navit.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        assert (torch.from_numpy(session.run(None, {"images": x.numpy()})[0]) - model(x)).abs().max() <= 1e-4


def test_the_training_engine_trains_navit_on_plain_batches(tmp_path):
    from tests.helpers.train import tiny_config
    from vitkit.train import train

    summary = train(tiny_config(tmp_path, "model.name=navit_tiny_patch4_32", "train.epochs=1",
                                "model.kwargs={embed_dim: 32, depth: 1, num_heads: 2}"))
    assert summary["steps"] == 4 and summary["test_acc1"] is not None
