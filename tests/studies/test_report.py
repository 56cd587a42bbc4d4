"""The HTML report of a data-set run, read back from its HTML: the table agrees with
table.csv, every item and map is there as an embedded picture of the right content, nothing
points outside the page, data is escaped, volumes get a slider, the page is replaced
atomically. (Its behaviour in a browser: test_report_browser.py.)"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from torch import nn

from interpret_segmentation.core.io import OutputDirectory
from interpret_segmentation.studies.report import write_report
from interpret_segmentation.studies.runner import explain_dataset
from interpret_segmentation.studies.work import MethodRun

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from oracles import PatchModel  # noqa: E402

FAST = {"hdm": {"circle_size": 9, "offset": 8}, "rise": {"n_masks": 16}}
MESSAGE = "bad <script>alert(1)</script> & co"
VOID = {"img", "input", "meta", "link", "br", "hr", "source", "col", "wbr"}


# -- reading the page -----------------------------------------------------------------------------

class Node:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent, self.children, self.parts = tag, attrs, parent, [], []

    @property
    def text(self) -> str:
        return "".join(part if isinstance(part, str) else part.text for part in self.parts)

    def all(self, tag=None, **attrs) -> list[Node]:
        """Descendants with ``tag`` whose attributes include ``attrs`` (``class_`` is one of
        the classes)."""
        found = []
        for child in self.children:
            classes = (child.attrs.get("class") or "").split()
            if (tag is None or child.tag == tag) and all(
                    (value in classes) if key == "class_" else child.attrs.get(key) == value
                    for key, value in attrs.items()):
                found.append(child)
            found += child.all(tag, **attrs)
        return found

    def one(self, tag=None, **attrs) -> Node:
        found = self.all(tag, **attrs)
        assert len(found) == 1, (tag, attrs, len(found))
        return found[0]


class Page(HTMLParser):
    """The page as a tree of nodes (text unescaped, as a browser reads it)."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.root = self.node = Node("#document", {})
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.node)
        self.node.children.append(node)
        self.node.parts.append(node)
        if tag not in VOID:
            self.node = node

    def handle_endtag(self, tag):
        node = self.node
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is not self.root:
            self.node = node.parent

    def handle_data(self, data):
        self.node.parts.append(data)


def _picture(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
                      .convert("RGB")).astype(int)


def _cards(page: Page) -> list[Node]:
    return page.root.all("article", class_="card")


def _captions(card: Node) -> list[str]:
    return [figure.one("figcaption").text for figure in card.all("figure", class_="panel")]


# -- runs -----------------------------------------------------------------------------------------

class Picky(nn.Module):
    """PatchModel, but raising (with markup in the message) on an image whose corner is 7."""

    def __init__(self):
        super().__init__()
        self.patch = PatchModel()

    def forward(self, x):
        if bool((x[:, 0, 0, 0] == 7).any()):
            raise ValueError(MESSAGE)
        return self.patch(x)


def _images(folder: Path, count: int = 4, bad: int | None = None) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(count):
        image = rng.random((48, 48)).astype(np.float32) * 0.4
        image[30:38, 30:38] = 0.6 + 0.1 * index
        if index == bad:
            image[0, 0] = 7
        np.save(folder / f"img{index}.npy", image)
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """4 images, HDM and RISE; the run's report."""
    root = tmp_path_factory.mktemp("report")
    masks = root / "masks"
    masks.mkdir()
    for index, shift in ((0, 0), (2, 5)):  # ground truth of two: the box, the box moved down
        mask = np.zeros((48, 48), bool)
        mask[5 + shift:15 + shift, 5:15] = True
        np.save(masks / f"img{index}.npy", mask)
    out = root / "run"
    explain_dataset(PatchModel(), _images(root / "data"), FAST, out, masks=masks,
                    progress=False, log=lambda *_: None)
    write_report(out)
    return out


# -- tests ----------------------------------------------------------------------------------------

def test_summary_table_is_table_csv(run):
    page = Page((run / "report.html").read_text())
    body = page.root.one("table", id="summary").one("tbody")
    shown = [[cell.attrs.get("data-value") for cell in row.all("td")] for row in body.all("tr")]
    with open(run / "table.csv", newline="") as file:
        table = list(csv.DictReader(file))
    assert [row[:2] for row in shown] == [[t["method"], t["threshold"]] for t in table] == [
        ["hdm", "-"], ["rise", "0.2"], ["rise", "0.4"]]
    heads = [head.text for head in page.root.one("table", id="summary").all("th")]
    assert heads == ["method", "threshold", "Dice explained", "perturbation ratio",
                     "seconds per item", "items"]  # no context masks: no hit rate column
    for row, expected in zip(shown, table):
        for value, field in zip(row[2:], ("dice_explained", "perturbation_ratio",
                                          "seconds_per_image", "images")):
            if expected[field] == "":
                assert value == ""
            else:
                assert float(value) == pytest.approx(float(expected[field]), rel=1e-12)


def test_every_item_and_map_is_an_embedded_picture(run):
    page = Page((run / "report.html").read_text())
    cards = _cards(page)
    assert [card.attrs["data-key"] for card in cards] == ["img0", "img1", "img2", "img3"]
    with open(run / "rows.csv", newline="") as file:
        all_rows = list(csv.DictReader(file))
    for card in cards:
        truth = " + ground truth" if card.attrs["data-key"] in ("img0", "img2") else ""
        assert _captions(card) == ["input" + truth, "prediction", "hdm", "rise"]
        scores = json.loads(card.attrs["data-scores"])
        rows = [row for row in all_rows if row["item"] == card.attrs["data-key"]]
        rise = {row["threshold"]: row for row in rows if row["method"] == "rise"}
        assert set(rise) == {"0.2", "0.4"}
        assert scores["perturbation_ratio|1|0.2"] == float(rise["0.2"]["perturbation_ratio"])
        # the larger view: every map again, the rows, the parameters
        detail = card.one("template")
        assert [figure.one("figcaption").text for figure in detail.all("figure")] == [
            "input" + truth, "prediction", "hdm", "rise"]
        assert len(detail.one("table", class_="rows").one("tbody").all("tr")) == len(rows) == 3
        parameters = {section.one("h4").text: {r.one("th").text: r.one("td").text
                                               for r in section.all("tr")}
                      for section in detail.all("section")}
        assert parameters["hdm (hdm)"]["circle_size"] == "9"
        assert parameters["rise (rise)"]["n_masks"] == "16"

    # the pictures: the input scaled to grey, the prediction tinted where the model's box is
    # (PatchModel: rows and columns 5:15), each map in "jet" over the input
    card = cards[2]
    image = np.load(run / "items" / "img2" / "image.npy")
    thumbnails = [figure.one("img") for figure in card.all("figure", class_="panel")]
    # the larger view shows the same pictures (2-D: one copy, referred to by id)
    assert [figure.one("img").attrs["data-ref"] for figure in card.one("template").all(
        "figure")] == [img.attrs["id"] for img in thumbnails]
    pictures = [_picture(img.attrs["src"]) for img in thumbnails]
    assert all(p.shape == (48, 48, 3) for p in pictures)
    grey = np.round((image - image.min()) / (image.max() - image.min()) * 255)
    truth = np.zeros((48, 48), bool)
    truth[10:20, 5:15] = True
    border = truth & ~ndimage.binary_erosion(truth)
    assert np.abs(pictures[0][~border] - grey[~border][:, None]).max() <= 1
    assert (pictures[0][border] == (255, 217, 26)).all()  # the ground truth's outline, amber
    box = np.zeros((48, 48), bool)
    box[5:15, 5:15] = True
    prediction = pictures[1]
    assert np.abs(prediction[~box] - grey[~box][:, None]).max() <= 1  # grey outside
    green = prediction[..., 1] - prediction[..., [0, 2]].max(axis=-1)
    assert (green[box] > 40).all() and (green[~box] <= 1).all()
    explanation = np.load(run / "items" / "img2" / "hdm.npz")
    shown = explanation["array_worse_only"]
    hdm = pictures[2]
    high, low = np.unravel_index(shown.argmax(), shown.shape), (40, 2)
    assert shown[low] == shown.min() and not box[high]
    assert hdm[high][0] > hdm[high][2] and hdm[low][2] > hdm[low][0]  # red high, blue low


def test_ground_truth_dice_is_a_score(run):
    page = Page((run / "report.html").read_text())
    options = {o.text: o.attrs["value"]
               for o in page.root.one("select", id="sort-key").all("option")}
    key = options["prediction Dice (ground truth)"]
    scores = {card.attrs["data-key"]: json.loads(card.attrs["data-scores"]).get(key)
              for card in _cards(page)}
    assert scores == {"img0": 1.0, "img1": None, "img2": 0.5, "img3": None}  # 50 of 100 + 100
    def heads(card):
        return [head.text for head in card.one("template").one("table", class_="rows")
                .one("thead").all("th")]

    assert "prediction Dice (ground truth)" in heads(_cards(page)[2])
    assert "class" not in heads(_cards(page)[2])  # one class: no class column
    assert "prediction Dice (ground truth)" not in heads(_cards(page)[1])  # no mask


def test_nothing_points_outside_the_page(run):
    text = (run / "report.html").read_text()
    page = Page(text)
    nodes = page.root.all()
    links = [value for node in nodes for key, value in node.attrs.items()
             if key in ("src", "href", "action", "poster", "data") and value]
    assert links and all(v.startswith(("data:", "#")) for v in links), set(links) - {
        v for v in links if v.startswith("data:")}
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text.replace("data:image", ""),
                         re.IGNORECASE)
    assert not re.search(r"url\(|@import", text)
    assert page.root.one("meta", name="generator")


def test_data_is_escaped_and_errors_are_listed(tmp_path):
    out = tmp_path / "run"
    runs = [MethodRun("rise <b>&amp;", "rise", {"n_masks": 16}),
            MethodRun("hdm", "hdm", FAST["hdm"])]
    explain_dataset(Picky(), _images(tmp_path / "data", count=3, bad=1), runs, out,
                    progress=False, log=lambda *_: None)
    text = write_report(out, title="<i>mine</i>").read_text()
    assert "<script>alert" not in text and "<b>" not in text and "<i>" not in text
    page = Page(text)
    assert page.root.one("title").text == "<i>mine</i>"
    cards = _cards(page)
    assert [card.attrs["data-key"] for card in cards] == ["img0", "img1", "img2"]
    assert _captions(cards[0]) == ["input", "prediction", "rise <b>&amp;", "hdm"]
    assert _captions(cards[1]) == ["input"]  # both explanations failed
    assert cards[1].one("span", class_="badge").text == "2 errors"
    failed = cards[1].one("template").one("table", class_="rows").all("td", class_="error")
    assert len(failed) == 2 and all(MESSAGE in cell.text for cell in failed)
    errors = page.root.one("section", id="errors")
    listed = [[cell.text for cell in row.all("td")] for row in errors.one("tbody").all("tr")]
    assert [row[:2] for row in listed] == [["img1", "rise <b>&amp;"], ["img1", "hdm"]]
    with open(out / "rows.csv", newline="") as file:
        messages = [row["error"] for row in csv.DictReader(file) if row["error"]]
    assert [row[3] for row in listed] == messages and all(MESSAGE in m for m in messages)
    filters = [box.parent.text.strip() for box in page.root.all("input", class_="run-filter")]
    assert filters == ["rise <b>&amp;", "hdm"]
    options = [option.text for option in page.root.one("select", id="sort-key").all("option")]
    assert "rise <b>&amp;: Dice explained @0.2" in options


def test_volumes_get_a_slice_slider(tmp_path):
    class Cube(nn.Module):
        def forward(self, x):  # the cube [2:7]^3 is foreground iff [9:13]^3 is bright
            brightness = x[:, 0, 9:13, 9:13, 9:13].mean((1, 2, 3))
            out = torch.full((x.shape[0], 1, *x.shape[2:]), -10.0)
            out[:, :, 2:7, 2:7, 2:7] = ((brightness - 0.5) * 20)[:, None, None, None, None]
            return out

    data = tmp_path / "volumes"
    data.mkdir()
    volume = np.zeros((1, 16, 16, 16), np.float32)
    volume[0, 9:13, 9:13, 9:13] = 1.0
    np.save(data / "cube.npy", volume)
    out = tmp_path / "run"
    explain_dataset(Cube(), data, FAST, out, explainer_options={"spatial_dims": 3},
                    progress=False, log=lambda *_: None)
    page = Page(write_report(out).read_text())
    card = _cards(page)[0]
    assert _captions(card) == ["input", "prediction", "hdm", "rise"]
    detail = card.one("template")
    slider = detail.one("input", type="range")
    slices = json.loads(slider.attrs["data-z"])
    assert slices == [2, 3, 4, 5, 6] and slider.attrs["max"] == "4"  # the target's slices
    stacks = detail.all("div", class_="stack")
    assert len(stacks) == 4
    for stack in stacks:
        pictures = stack.all("img")
        assert [img.attrs["data-slice"] for img in pictures] == ["0", "1", "2", "3", "4"]
        assert ["hidden" in img.attrs for img in pictures].count(False) == 1
        assert all(_picture(img.attrs["src"]).shape == (16, 16, 3) for img in pictures)
    # the prediction's slices: the cube's square [2:7]^2 tinted on each
    for img in stacks[1].all("img"):
        picture = _picture(img.attrs["src"])
        tinted = picture[..., 1] - picture[..., [0, 2]].max(axis=-1) > 40
        assert tinted[2:7, 2:7].all() and tinted.sum() == 25


def test_two_dimensional_report_has_no_slider(run):
    assert not Page((run / "report.html").read_text()).root.all("input", type="range")


def test_rewriting_replaces_the_page_atomically(tmp_path):
    out = tmp_path / "run"
    explain_dataset(PatchModel(), _images(tmp_path / "data", count=2), {"hdm": FAST["hdm"]},
                    out, progress=False, log=lambda *_: None)
    with OutputDirectory(out, "explain-dataset") as output:  # the run's own file
        first = write_report(out, title="first", output=output)
    manifest = json.loads((out / ".interpret-segmentation.json").read_text())
    assert "report.html" in manifest["commands"]["explain-dataset"]["files"]
    before = sorted(os.listdir(out))
    with open(first, "rb") as reader:  # a reader of the old page keeps all of it
        second = write_report(out, title="second")
        old = reader.read()
    assert second == first and sorted(os.listdir(out)) == before  # no temporary left
    assert old.endswith(b"</html>\n") and b"<title>first</title>" in old
    assert b"<title>second</title>" in second.read_bytes()

    # a report.html the library did not write is not replaced, and is left as it was
    mine = tmp_path / "other"
    mine.mkdir()
    (mine / "rows.csv").write_text((out / "rows.csv").read_text())
    (mine / "report.html").write_text("my notes")
    with pytest.raises(FileExistsError, match="not written by write_report"):
        write_report(mine)
    assert (mine / "report.html").read_text() == "my notes"


def test_caps_and_bad_input(run, tmp_path):
    text = write_report(run, max_items=2).read_text()
    page = Page(text)
    assert [card.attrs["data-key"] for card in _cards(page)] == ["img0", "img1"]
    assert "first 2 of 4 items" in text
    assert len(page.root.one("table", id="summary").one("tbody").all("tr")) == 3
    tiny = Page(write_report(run, max_megabytes=1e-6).read_text())
    assert len(_cards(tiny)) == 1  # the grid stops once past the size
    write_report(run)
    with pytest.raises(ValueError, match="run_dir: expected the rows"):
        write_report(tmp_path)
    with pytest.raises(ValueError, match="run_dir: expected a directory"):
        write_report(tmp_path / "missing")
    with pytest.raises(ValueError, match="max_items"):
        write_report(run, max_items=-1)
    with pytest.raises(ValueError, match="max_megabytes"):
        write_report(run, max_megabytes=0)
    with pytest.raises(ValueError, match="max_megabytes: expected a positive number, got '5'"):
        write_report(run, max_megabytes="5")
    with pytest.raises(ValueError, match="max_items"):
        write_report(run, max_items=True)
    assert "first 2 of 4 items" in write_report(run, max_items=np.int64(2)).read_text()


def test_several_classes_get_a_column_each(tmp_path):
    from oracles import ThreeClassModel

    data = _images(tmp_path / "data", count=2)
    for path in data.iterdir():  # class 1: where the left half is bright
        image = np.load(path)
        image[20:30, 4:16] = 0.9
        np.save(path, image)
    out = tmp_path / "run"
    explain_dataset(ThreeClassModel(), data, {"hdm": FAST["hdm"]}, out, classes=(1, 2),
                    progress=False, log=lambda *_: None)
    page = Page(write_report(out).read_text())
    for card in _cards(page):
        assert _captions(card) == ["input", "prediction · class 1", "prediction · class 2",
                                   "hdm · class 1", "hdm · class 2"]
        key = card.attrs["data-key"]
        # each class's prediction is its explanation's target: class 2 the patch model's box
        pictures = [_picture(figure.one("img").attrs["src"])
                    for figure in card.all("figure", class_="panel")]
        for picture, name in zip(pictures[1:3], ("hdm_class1", "hdm_class2")):
            target = np.load(out / "items" / key / f"{name}.npz")["array_target_pixels"]
            green = picture[..., 1] - picture[..., [0, 2]].max(axis=-1)
            assert target.any() and ((green > 40) == target).all()
    assert [o.text for o in page.root.one("select", id="sort-key").all("option")] == [
        "item key", "hdm · class 1: seconds", "hdm · class 2: seconds"]
