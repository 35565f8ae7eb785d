"""Loading annotated image folders: each annotation format, corrupt files, clipping, errors."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from sycam.data.annotations import decode_coco_counts
from sycam.data.folder import load_folder
from sycam.data.labels import resolve_label
from sycam.data.sample import DataWarning
from sycam.errors import DataError, UnknownNameError

TABBY, GOLDFISH = 282, 1  # "tiger cat", "goldfish"


def _image(path, w=40, h=30, colour=(200, 30, 30)):
    Image.new("RGB", (w, h), colour).save(path)
    return path


def _mask(path, w, h, box):
    a = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    a[y0:y1, x0:x1] = 255
    Image.fromarray(a).save(path)


def test_labels_by_index_name_and_loose_spelling():
    assert resolve_label(TABBY) == TABBY
    assert resolve_label("282") == TABBY
    assert resolve_label("Tiger Cat") == TABBY
    assert resolve_label("tiger_cat") == TABBY
    assert resolve_label("crane bird") == 134 and resolve_label("crane") == 517
    with pytest.raises(DataError):
        resolve_label(1000)
    with pytest.raises(UnknownNameError) as err:
        resolve_label("tigr cat")
    assert "tiger cat" in err.value.close


def test_voc_xml_boxes_are_converted_from_one_based_inclusive(tmp_path):
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations").mkdir()
    _image(tmp_path / "JPEGImages" / "a.jpg")
    (tmp_path / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><size><width>40</width><height>30</height></size>"
        "<object><name>tiger cat</name><bndbox><xmin>11</xmin><ymin>6</ymin><xmax>20</xmax><ymax>15</ymax>"
        "</bndbox></object><object><name>Goldfish</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>")
    s = load_folder(tmp_path)
    (sample,) = s.samples
    assert sample.image.shape == (3, 30, 40) and 0 <= sample.image.min() and sample.image.max() <= 1
    assert [o.label for o in sample.objects] == [TABBY, GOLDFISH]
    assert sample.objects[0].box == (10, 5, 20, 15)
    assert sample.objects[0].mask is None


def _runs(mask):
    """COCO's uncompressed RLE of a (H,W) bool mask: column-major run lengths, zeros first."""
    counts, cur, n = [], False, 0
    for v in mask.T.reshape(-1):
        if v != cur:
            counts.append(n)
            cur, n = v, 0
        n += 1
    return counts + [n]


def _coco_encode(mask):
    """pycocotools' compressed RLE string of a (H,W) bool mask (rleToString, re-implemented)."""
    counts = _runs(mask)
    out = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = (x != -1) if (ch & 0x10) else (x != 0)
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def test_coco_json_polygon_rle_and_label_map(tmp_path):
    _image(tmp_path / "img.png", 40, 30)
    m = np.zeros((30, 40), bool)
    m[3:9, 20:35] = True
    coco = {"images": [{"id": 7, "file_name": "img.png", "width": 40, "height": 30}],
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "goldfish"}],
            "annotations": [
                {"image_id": 7, "category_id": 1, "bbox": [2, 10, 10, 12],
                 "segmentation": [[2, 10, 12, 10, 12, 22, 2, 22]]},
                {"image_id": 7, "category_id": 2, "bbox": [20, 3, 15, 6],
                 "segmentation": {"size": [30, 40], "counts": _coco_encode(m)}}]}
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    (sample,) = load_folder(tmp_path, label_map={"cat": "tiger cat"}).samples
    cat, fish = sample.objects
    assert (cat.label, fish.label) == (TABBY, GOLDFISH)
    assert cat.box == (2, 10, 12, 22)
    assert cat.mask[10:22, 2:12].float().mean() > 0.9 and not cat.mask[:8].any()
    assert torch.equal(fish.mask, torch.from_numpy(m))


def test_coco_compressed_rle_round_trip():
    rng = np.random.default_rng(0)
    m = rng.random((23, 17)) > 0.6
    assert decode_coco_counts(_coco_encode(m)) == _runs(m)


def test_simple_json_with_mask_files_and_distractor(tmp_path):
    _image(tmp_path / "a.png", 40, 30)
    _mask(tmp_path / "a_m.png", 40, 30, (5, 6, 15, 20))
    (tmp_path / "boxes.json").write_text(json.dumps({"images": [{"file": "a.png", "objects": [
        {"label": "goldfish", "mask": "a_m.png"},
        {"label": None, "box": [20, 0, 30, 10], "name": "person"}]}]}))
    s = load_folder(tmp_path)
    fish, person = s.samples[0].objects
    assert fish.box == (5, 6, 15, 20) and int(fish.mask.sum()) == 10 * 14
    assert person.label is None and person.name == "person"
    assert s.items() == [(s.samples[0], 0)]


def test_csv_rows_grouped_per_file(tmp_path):
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png")
    (tmp_path / "boxes.csv").write_text("file,label,x0,y0,x1,y1\n"
                                        "a.png,282,1,2,10,12\nb.png,goldfish,0,0,5,5\na.png,tench,20,2,30,9\n")
    s = load_folder(tmp_path)
    assert [x.name for x in s.samples] == ["a.png", "b.png"]
    assert [o.label for o in s.samples[0].objects] == [TABBY, 0]
    assert s.samples[0].objects[1].box == (20, 2, 30, 9)


def test_corrupt_images_are_skipped_with_reason_and_count(tmp_path):
    _image(tmp_path / "good.png")
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    _image(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    rows = "".join(f"{f},goldfish,0,0,5,5\n" for f in ("good.png", "junk.jpg", "cut.png", "missing.png"))
    (tmp_path / "boxes.csv").write_text("file,label,x0,y0,x1,y1\n" + rows)
    with pytest.warns(DataWarning) as rec:
        s = load_folder(tmp_path)
    assert any("skipped 3 of 4" in str(w.message) for w in rec)
    assert [x.name for x in s.samples] == ["good.png"]
    assert len(s.skipped) == 3
    assert {f.split("/")[-1] for f, _ in s.skipped} == {"junk.jpg", "cut.png", "missing.png"}
    assert any("not found" in why for _, why in s.skipped)


def test_boxes_outside_the_image_are_clipped_with_a_warning(tmp_path):
    _image(tmp_path / "a.png", 40, 30)
    (tmp_path / "b.csv").write_text("file,label,x0,y0,x1,y1\na.png,goldfish,-5,10,50,40\n"
                                    "a.png,tench,100,100,120,120\n")
    with pytest.warns(DataWarning) as rec:
        s = load_folder(tmp_path)
    (obj,) = s.samples[0].objects
    assert obj.box == (0, 10, 40, 30)
    text = " ".join(str(w.message) for w in rec)
    assert "clipped" in text and "outside" in text


def test_empty_or_unannotated_sets_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no annotations"):
        load_folder(tmp_path)
    (tmp_path / "junk.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "b.csv").write_text("file,label,x0,y0,x1,y1\njunk.png,goldfish,0,0,5,5\n")
    with pytest.warns(DataWarning), pytest.raises(DataError, match="no usable"):
        load_folder(tmp_path)


def test_unknown_class_name_lists_close_matches(tmp_path):
    _image(tmp_path / "a.png")
    (tmp_path / "b.csv").write_text("file,label,x0,y0,x1,y1\na.png,goldfsh,0,0,5,5\n")
    with pytest.raises(UnknownNameError, match="goldfish"):
        load_folder(tmp_path)
