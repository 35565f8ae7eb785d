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


def _simple(tmp_path, images):
    _image(tmp_path / "a.png")
    (tmp_path / "ann.json").write_text(json.dumps({"images": images}))
    return tmp_path


@pytest.mark.parametrize("entry, message", [
    ({"file": "a.png", "objects": None}, "image 0: 'objects' must be a list of objects, got null"),
    ({"file": "a.png", "objects": 5}, "'objects' must be a list of objects, got 5"),
    ({"file": 123, "objects": []}, "image 0: 'file' must be a file name, got 123"),
    ({"file": None, "objects": []}, "'file' must be a file name, got null"),
    ({"objects": []}, "'file' is missing"),
    ({"file": "a.png", "objects": [{"label": 1, "box": "1234"}]},
     "object 0 'box': box must be a list of 4 numbers, got \"1234\""),
    ({"file": "a.png", "objects": [{"label": 1, "box": [1, 2, 3]}]}, "box must be a list of 4 numbers"),
    ({"file": "a.png", "objects": [{"label": 1, "box": [1, 2, "3", 4]}]}, "must be a finite number, got \"3\""),
    ({"file": "a.png", "objects": [{"label": 1, "box": [1, 2, True, 4]}]}, "must be a finite number, got true"),
    ({"file": "a.png", "objects": [{"label": 1.5, "box": [1, 2, 3, 4]}]}, "'label' must be a class index"),
    ({"file": "a.png", "objects": [{"label": 1, "mask": 5}]}, "'mask' must be a mask file name or null"),
    ({"file": "a.png", "objects": [{"label": 1, "box": None}]}, "needs a 'box' and/or a 'mask'"),
    ({"file": "a.png", "objects": ["cat"]}, "object 0: must be an object"),
    ("a.png", "image 0: each image must be an object"),
    ({"file": "/etc/passwd", "objects": []}, "'/etc/passwd' is an absolute path"),
    ({"file": "../../secret.png", "objects": []}, "'../../secret.png' leaves the dataset folder"),
    ({"file": "a.png", "objects": [{"label": 1, "mask": "sub/../../m.png"}]}, "leaves the dataset folder"),
])
def test_simple_json_schema_errors_name_the_file_and_field(tmp_path, entry, message):
    folder = _simple(tmp_path, [entry])
    with pytest.raises(DataError, match="ann.json") as err:
        load_folder(folder)
    assert message in str(err.value)


def test_paths_that_stay_inside_the_folder_are_fine(tmp_path):
    (tmp_path / "sub").mkdir()
    folder = _simple(tmp_path, [{"file": "sub/../a.png", "objects": [{"label": 1, "box": [0, 0, 5, 5]}]}])
    assert len(load_folder(folder)) == 1


def _coco(tmp_path, segmentation=None, **annotation):
    _image(tmp_path / "img.png", 40, 30)
    ann = {"image_id": 7, "category_id": 1, "bbox": [2, 2, 5, 5], **annotation}
    if segmentation is not None:
        ann["segmentation"] = segmentation
    coco = {"images": [{"id": 7, "file_name": "img.png", "width": 40, "height": 30}],
            "categories": [{"id": 1, "name": "goldfish"}], "annotations": [ann]}
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    return tmp_path


@pytest.mark.parametrize("segmentation, annotation, message", [
    ({"counts": 5, "size": [30, 40]}, {}, "'counts' must be a list of run lengths or a compressed RLE string, got 5"),
    ({"counts": "`", "size": [30, 40]}, {}, "compressed RLE counts end inside a number"),
    ({"counts": "0~", "size": [30, 40]}, {}, "compressed RLE counts hold '~'"),
    ({"counts": [10, -3, 1193], "size": [30, 40]}, {}, "'counts' must hold non-negative integers"),
    ({"size": [30, 40]}, {}, "'counts' is missing"),
    ([[1, 2, "x", 4, 5, 6]], {}, "each polygon coordinate must be a finite number"),
    ("polygon", {}, "'segmentation' must be a list of polygons or an RLE object"),
    (None, {"bbox": "1234"}, "'bbox': box must be a list of 4 numbers"),
    (None, {"image_id": 8}, "image_id 8 is not one of the images"),
    (None, {"category_id": 3}, "category_id 3 is not one of the categories"),
])
def test_coco_schema_errors_name_the_file_and_field(tmp_path, segmentation, annotation, message):
    with pytest.raises(DataError, match="instances.json annotations\\[0\\]") as err:
        load_folder(_coco(tmp_path, segmentation, **annotation))
    assert message in str(err.value)


def test_coco_rle_of_the_wrong_length_skips_the_image_with_the_reason(tmp_path):
    with pytest.warns(DataWarning), pytest.raises(DataError, match="img.png object 0: RLE counts sum to 10"):
        load_folder(_coco(tmp_path, {"counts": [4, 6], "size": [30, 40]}, bbox=[]))


@pytest.mark.parametrize("text, message", [("`", "end inside a number"), ("\x00", "hold"), ("~", "hold"),
                                           ("O", "negative run")])
def test_bad_compressed_rle_strings_are_data_errors(text, message):
    with pytest.raises(DataError, match=message):
        decode_coco_counts(text)


def test_voc_and_csv_values_are_checked(tmp_path):
    _image(tmp_path / "a.png")
    (tmp_path / "b.csv").write_text("file,label,x0,y0,x1,y1\na.png,goldfish,0,zero,5,5\n")
    with pytest.raises(DataError, match="b.csv line 2: each box coordinate must be a finite number, got \"zero\""):
        load_folder(tmp_path)
    (tmp_path / "b.csv").write_text("file,label,x0,y0,x1,y1\n/tmp/a.png,goldfish,0,0,5,5\n")
    with pytest.raises(DataError, match="b.csv line 2 'file': '/tmp/a.png' is an absolute path"):
        load_folder(tmp_path)
    (tmp_path / "b.csv").unlink()
    (tmp_path / "a.xml").write_text("<annotation><filename>../a.png</filename><object><name>goldfish</name>"
                                    "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>"
                                    "</object></annotation>")
    with pytest.raises(DataError, match="a.xml <filename>: '../a.png' leaves the dataset folder"):
        load_folder(tmp_path)
    (tmp_path / "a.xml").write_text("<annotation><filename>a.png</filename><object><name>goldfish</name>"
                                    "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>nan</xmax><ymax>5</ymax></bndbox>"
                                    "</object></annotation>")
    with pytest.raises(DataError, match="must be a finite number, got \"nan\""):
        load_folder(tmp_path)
