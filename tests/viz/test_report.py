"""report.html: written after every `vitkit train` run, self-contained, and rendered by a real browser (headless Chromium).

Chromium is Debian's ``chromium`` package; ``make test`` installs it when it is missing (Makefile target
``chromium``: root + apt-get only). Without it the rendering test is skipped, saying why.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from tests.helpers.train import TINY, cli_sets
from vitkit.cli import main
from vitkit.viz.report import SECTIONS, prediction_order, write_run_report

REPORT_RUN = ["log.report=true", "log.curves=true", "log.every_steps=1",
              "model.kwargs={embed_dim: 32, depth: 2, num_heads: 2, reg_tokens: 1}"]


class Outline(HTMLParser):
    """Section ids, headings, images (data: URIs only) and the prediction grid's right/wrong order."""

    def __init__(self) -> None:
        super().__init__()
        self.sections, self.headings, self.images, self.cells, self.external = [], [], 0, [], []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        elif tag == "h2":
            self._in_h2 = True
        elif tag == "img":
            src = attrs.get("src", "")
            if src.startswith("data:image/png;base64,"):
                self.images += 1
            else:
                self.external.append(src)
        elif tag == "figure":
            self.cells.append(attrs.get("class"))
        elif tag in ("link", "script") and (attrs.get("href") or attrs.get("src")):
            self.external.append(attrs.get("href") or attrs.get("src"))

    def handle_endtag(self, tag):
        self._in_h2 = self._in_h2 and tag != "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data)


def train_command(out_dir: Path, *overrides: str) -> Path:
    """`vitkit train` on the tiny config (the command, not the engine, writes report.html); the new run directory."""
    assert main(["train", *cli_sets([*TINY, f"checkpoint.out_dir={out_dir}", *overrides])]) == 0
    (run_dir,) = out_dir.iterdir()
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train_command(tmp_path_factory.mktemp("runs"), *REPORT_RUN)


def outline(path: Path) -> Outline:
    parser = Outline()
    parser.feed(path.read_text())
    return parser


def test_training_run_writes_a_self_contained_report(run_dir):
    page = outline(run_dir / "report.html")
    assert page.headings == list(SECTIONS)
    assert page.sections == [s.lower().replace(" ", "-") for s in SECTIONS]
    assert page.external == []  # nothing to fetch: readable from the file system alone
    # curves + confusion + 48 grid images + 4 attention figures
    assert page.images == 2 + 48 + 4
    assert len(page.cells) == 48
    first_right = page.cells.index("right") if "right" in page.cells else len(page.cells)
    assert "wrong" not in page.cells[first_right:]  # mistakes first
    text = (run_dir / "report.html").read_text()
    assert "on all 128 validation images" in text and "class token" in text
    assert "vit_digits_patch2_8" in text  # the summary and the config are in the page


def test_report_without_weights_or_data_says_what_is_missing(run_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run_dir / "summary.json", bare / "summary.json")
    write_run_report(bare)
    text = (bare / "report.html").read_text()
    assert text.count("Not available: no best.safetensors") == 3
    assert "No metrics logged" in text and "No config.yaml" in text
    with pytest.raises(FileNotFoundError, match="run directory not found"):
        write_run_report(tmp_path / "nope")


def test_viz_report_command_rebuilds_the_report_of_a_run(run_dir, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "report.html").unlink()
    assert main(["viz", "report", str(copy)]) == 0
    assert outline(copy / "report.html").images == 2 + 48 + 4
    assert main(["viz", "report", str(tmp_path)]) == 2
    assert "config.yaml not found" in capsys.readouterr().err


def test_report_can_be_switched_off(tmp_path):
    run_dir = train_command(tmp_path, "train.epochs=1", "log.report=false")
    assert (run_dir / "summary.json").is_file() and not (run_dir / "report.html").exists()


def test_prediction_order_puts_confident_mistakes_first():
    predictions = torch.tensor([0, 1, 1, 2, 0])
    labels = torch.tensor([0, 0, 1, 1, 1])
    confidence = torch.tensor([0.9, 0.6, 0.5, 0.8, 0.7])
    # mistakes 1 (0.6), 3 (0.8), 4 (0.7) by falling confidence, then correct 2 (0.5), 0 (0.9) by rising confidence
    assert prediction_order(predictions, labels, confidence).tolist() == [3, 4, 1, 2, 0]


CHECK_SCRIPT = """<script>window.addEventListener("load", () => {
  const images = [...document.images];
  const decoded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  const mark = document.createElement("div");
  mark.id = "render-check";
  mark.textContent = `decoded ${decoded}/${images.length} sections ${document.querySelectorAll("section h2").length}`;
  document.body.appendChild(mark);
});</script></body>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None, reason="headless Chromium not installed (Debian package 'chromium'; "
                    "`make test` installs it when run as root with apt-get)")
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    from torchvision.io import decode_png, read_file

    browser = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}"]
    # a copy with a probe that records, after loading, how many images the browser decoded
    probe = tmp_path / "probe.html"
    probe.write_text((run_dir / "report.html").read_text().replace("</body>", CHECK_SCRIPT))
    dom = subprocess.run([*browser, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    mark = re.search(r'<div id="render-check">decoded (\d+)/(\d+) sections (\d+)</div>', dom.stdout)
    assert mark, dom.stdout[-2000:]
    decoded, total, sections = map(int, mark.groups())
    assert total == 54 and decoded == total and sections == len(SECTIONS)
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in dom.stdout

    shot = tmp_path / "report.png"
    done = subprocess.run([*browser, f"--screenshot={shot}", "--window-size=1280,2400",
                           (run_dir / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    image = decode_png(read_file(str(shot)))[:3].float()
    assert tuple(image.shape[1:]) == (2400, 1280)
    rows_with_ink = (image.std(dim=(0, 2)) > 5).float().mean()  # rows that are not one flat colour
    assert rows_with_ink > 0.3, f"only {rows_with_ink:.0%} of the screenshot's rows show anything"
