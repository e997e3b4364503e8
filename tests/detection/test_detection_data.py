"""ObjectDetectionData: the readers, bad input caught before training, boxes moved with the pixels."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from detection_fixtures import make_images, voc_xml, write_voc

from flash.image import ObjectDetectionData
from flash.image.detection.transforms import DetectionCollate, DetectionPipeline, fitted_size


def test_from_voc_reads_the_bccd_layout_with_negatives_and_val_split(tmp_path):
    root = write_voc(tmp_path / "train", 8)
    (root / "annotations" / "img_000.xml").write_text(voc_xml("img_000.png", 96, 64, [], []))  # a negative
    data = ObjectDetectionData.from_voc(train_folder=root, val_split=0.25, batch_size=2)
    assert data.labels == ["blue", "red"] and data.num_classes == 2
    assert len(data.splits["train"]) == 6 and len(data.splits["val"]) == 2
    targets = [t for split in ("train", "val") for t in data.splits[split].targets]
    assert sum(len(t["boxes"]) == 0 for t in targets) == 1
    batch = next(iter(data.train_dataloader()))
    assert batch["input"]["images"].shape[0] == 2 and len(batch["target"]) == 2
    assert ObjectDetectionData.from_folders == ObjectDetectionData.from_voc


def test_malformed_xml_names_the_file_and_line(tmp_path):
    root = write_voc(tmp_path / "train", 3)
    bad = root / "annotations" / "img_001.xml"
    bad.write_text(
        "<annotation>\n<filename>img_001.png</filename>\n<object><name>red</object>\n</annotation>"
    )
    with pytest.raises(ValueError, match=r"img_001\.xml, line 3, column \d+: malformed XML"):
        ObjectDetectionData.from_voc(train_folder=root)


def test_an_annotation_naming_a_missing_image_is_named(tmp_path):
    root = write_voc(tmp_path / "train", 3)
    (root / "annotations" / "ghost.xml").write_text(voc_xml("ghost.png", 10, 10, [[1, 1, 5, 5]], ["red"]))
    with pytest.raises(ValueError, match=r"ghost\.xml names image 'ghost\.png', which .* does not hold"):
        ObjectDetectionData.from_voc(train_folder=root)


def test_non_numeric_coordinates_are_named(tmp_path):
    root = write_voc(tmp_path / "train", 2)
    (root / "annotations" / "img_000.xml").write_text(
        voc_xml("img_000.png", 96, 64, [["a", 1, 5, 5]], ["red"])
    )
    with pytest.raises(ValueError, match=r"img_000\.xml: the <xmin> of a 'red' box is 'a', not a number"):
        ObjectDetectionData.from_voc(train_folder=root)


def test_boxes_sticking_out_are_clipped_and_counted_empty_ones_refused_or_skipped(tmp_path):
    items = make_images(tmp_path / "img", 3)
    files = [path for path, _, _ in items]
    targets = [{"boxes": boxes, "labels": labels} for _, boxes, labels in items]
    width = 96  # img_000 is 96 x 64
    targets[0] = {"boxes": [[80, 10, width + 15, 30], [10, 10, 20, 20]], "labels": ["red", "blue"]}
    with pytest.warns(UserWarning, match="1 train box"):
        data = ObjectDetectionData.from_files(files, targets)
    assert data.splits["train"].targets[0]["boxes"][0].tolist() == [80, 10, width, 30]

    targets[1] = {"boxes": [[30, 30, 30, 40], [200, 10, 220, 20]], "labels": ["red", "red"]}
    with pytest.raises(
        ValueError, match=r"(?s)2 train box\(es\) have zero or negative size.*img_001\.png.*on_bad_box='skip'"
    ):
        ObjectDetectionData.from_files(files, targets)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = ObjectDetectionData.from_files(files, targets, on_bad_box="skip")
    assert any("They are left out" in str(w.message) for w in caught)
    assert len(data.splits["train"].targets[1]["boxes"]) == 0


def test_val_classes_that_training_lacks_are_refused_by_name(tmp_path):
    items = make_images(tmp_path / "img", 4)
    files = [path for path, _, _ in items]
    targets = [{"boxes": boxes, "labels": labels} for _, boxes, labels in items]
    val_targets = [{"boxes": [[1, 1, 9, 9]], "labels": ["green"]}]
    with pytest.raises(
        ValueError, match=r"val annotations name class\(es\) .*'green' \(e\.g\. in .*img_000\.png\)"
    ):
        ObjectDetectionData.from_files(files, targets, val_files=files[:1], val_targets=val_targets)


def test_from_csv_groups_rows_per_image_and_names_bad_rows(tmp_path):
    items = make_images(tmp_path / "img", 4)
    rows = [
        {
            "image": f"img/{p.split('/')[-1]}",
            "xmin": b[0],
            "ymin": b[1],
            "xmax": b[2],
            "ymax": b[3],
            "label": n,
        }
        for p, boxes, labels in items
        for b, n in zip(boxes, labels)
    ]
    rows.append({"image": "img/img_003.png"})  # no box: allowed (a negative when it is the only row)
    pd.DataFrame(rows).to_csv(tmp_path / "boxes.csv", index=False)
    data = ObjectDetectionData.from_csv(train_file=tmp_path / "boxes.csv")
    assert len(data.splits["train"]) == 4
    assert sum(len(t["boxes"]) for t in data.splits["train"].targets) == sum(len(b) for _, b, _ in items)

    rows[1]["ymax"] = "oops"
    pd.DataFrame(rows).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"bad\.csv, row 2: box .* not a number"):
        ObjectDetectionData.from_csv(train_file=tmp_path / "bad.csv")
    rows[1]["ymax"], rows[2]["label"] = 30, None
    pd.DataFrame(rows).to_csv(tmp_path / "half.csv", index=False)
    with pytest.raises(ValueError, match=r"half\.csv, row 3: label empty"):
        ObjectDetectionData.from_csv(train_file=tmp_path / "half.csv")


def test_from_coco_converts_xywh_and_names_bad_json_lines(tmp_path):
    items = make_images(tmp_path / "img", 3)
    coco = {
        "images": [{"id": i, "file_name": p.split("/")[-1]} for i, (p, _, _) in enumerate(items)],
        "categories": [{"id": 7, "name": "red"}, {"id": 9, "name": "blue"}],
        "annotations": [
            {"id": 1, "image_id": 0, "category_id": 7, "bbox": [10, 12, 20, 8]},
            {"id": 2, "image_id": 1, "category_id": 9, "bbox": [5, 5, 10, 10]},
            {"id": 3, "image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2], "iscrowd": 1},
        ],
    }
    (tmp_path / "train.json").write_text(json.dumps(coco, indent=1))
    data = ObjectDetectionData.from_coco(
        train_folder=tmp_path / "img", train_ann_file=tmp_path / "train.json"
    )
    targets = data.splits["train"].targets
    assert data.labels == ["blue", "red"]
    assert targets[0]["boxes"].tolist() == [[10, 12, 30, 20]] and targets[0]["labels"].tolist() == [1]
    assert len(targets[1]["boxes"]) == 1 and len(targets[2]["boxes"]) == 0  # crowd left out; a negative
    (tmp_path / "bad.json").write_text('{"images": [],\n "annotations": [\n  {"id": 1,}\n]}')
    with pytest.raises(ValueError, match=r"bad\.json, line 3, column \d+: malformed JSON"):
        ObjectDetectionData.from_coco(train_folder=tmp_path / "img", train_ann_file=tmp_path / "bad.json")


def test_training_without_any_box_is_refused(tmp_path):
    items = make_images(tmp_path / "img", 2)
    with pytest.raises(ValueError, match="hold no boxes"):
        ObjectDetectionData.from_files([p for p, _, _ in items], [{"boxes": [], "labels": []}] * 2)


def test_flips_and_scale_crop_move_boxes_with_the_pixels():
    image = np.zeros((40, 60, 3), np.uint8)
    image[10:20, 5:25] = 255  # a white box at x 5-25, y 10-20
    boxes, labels = np.array([[5, 10, 25, 20]], np.float32), np.array([0])
    torch.manual_seed(0)
    flipped, moved, _ = DetectionPipeline(60, True, hflip=1.0, vflip=1.0)(image, boxes, labels)
    ys, xs = torch.nonzero(flipped[0] > 0, as_tuple=True)
    assert moved.tolist() == [[xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]]
    for seed in range(5):
        torch.manual_seed(seed)
        cropped, kept, kept_labels = DetectionPipeline(60, True, crop_scale=(0.3, 0.6), hflip=0)(
            image, boxes, labels
        )
        assert cropped.shape == (3, 40, 60) and len(kept) == len(kept_labels)
        for box in kept:  # the box still frames the white pixels
            x0, y0, x1, y1 = (round(float(v)) for v in box)
            assert 0 <= x0 < x1 <= 60 and 0 <= y0 < y1 <= 40
            assert cropped[0, (y0 + y1) // 2, (x0 + x1) // 2] > 200


def test_collate_pads_to_a_multiple_of_32_and_keeps_original_sizes():
    items = [
        {"index": 0, "size": (480, 640), "input": torch.zeros(3, 48, 64, dtype=torch.uint8)},
        {"index": 1, "size": (100, 50), "input": torch.zeros(3, 64, 32, dtype=torch.uint8)},
    ]
    batch = DetectionCollate([0.5] * 3, [0.5] * 3)(items)
    assert batch["input"]["images"].shape == (2, 3, 64, 64)
    assert batch["input"]["image_sizes"].tolist() == [[480, 640], [100, 50]]
    assert fitted_size(480, 640, 64) == (48, 64) and fitted_size(100, 50, 64) == (64, 32)
