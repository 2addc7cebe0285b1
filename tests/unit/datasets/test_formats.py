"""Reading datasets in each format into a manifest, and refusing broken ones with a clear code.

Datasets are small trees written into tmp_path; image files are tiny PNGs that are never decoded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from services.datasets.formats import (
    Box,
    FormatError,
    Manifest,
    Problem,
    detect,
    read_manifest,
)
from tests.unit.datasets.fixtures_formats import (
    coco_dataset,
    coco_json,
    csv_dataset,
    folder_dataset,
    image,
    text,
    yolo_dataset,
)


def rows(manifest: Manifest) -> list[tuple[str, str | None, str | None]]:
    return [(e.name, e.label, e.split) for e in manifest.entries]


def refused(root: Path, fmt: str = "auto") -> FormatError:
    with pytest.raises(FormatError) as caught:
        read_manifest(root, fmt)
    assert caught.value.status == 422
    return caught.value


# -- folder -----------------------------------------------------------------------------------


def test_folder_reads_one_folder_per_class(tmp_path: Path) -> None:
    # Given class folders, one of them with a nested folder
    image(tmp_path / "dog" / "b.png")
    image(tmp_path / "cat" / "a.jpg")
    image(tmp_path / "cat" / "indoor" / "c.JPEG")
    # When the folder is read
    manifest = read_manifest(tmp_path, "folder")
    # Then every image has its class folder's label, sorted by name, with an absolute path
    assert manifest.format == "folder"
    assert rows(manifest) == [
        ("cat/a.jpg", "cat", None),
        ("cat/indoor/c.JPEG", "cat", None),
        ("dog/b.png", "dog", None),
    ]
    assert manifest.classes == ["cat", "dog"]
    assert manifest.entries[0].path == (tmp_path / "cat" / "a.jpg").resolve()
    assert manifest.entries[0].path.is_absolute()


def test_folder_reads_splits_and_valid_means_val(tmp_path: Path) -> None:
    # Given train/ and valid/ folders, each holding class folders
    folder_dataset(tmp_path)
    # When it is read
    manifest = read_manifest(tmp_path)
    # Then the split comes from the top level, and the class from the level below
    assert rows(manifest) == [
        ("train/cat/cat1.png", "cat", "train"),
        ("train/dog/dog1.png", "dog", "train"),
        ("valid/cat/cat1.png", "cat", "val"),
        ("valid/dog/dog1.png", "dog", "val"),
    ]


def test_folder_reports_loose_images_and_unsupported_files(tmp_path: Path) -> None:
    # Given a class folder, an image loose at the top and a text file
    image(tmp_path / "cat" / "a.png")
    image(tmp_path / "loose.png")
    text(tmp_path / "cat" / "notes.txt", "hi")
    text(tmp_path / "README", "hi")
    # When it is read
    manifest = read_manifest(tmp_path, "folder")
    # Then the loose image is a label problem and the other files are skipped
    assert rows(manifest) == [("cat/a.png", "cat", None)]
    assert manifest.label_problems == [Problem("loose.png", "not inside a class folder")]
    assert manifest.skipped == [
        Problem("README", "unsupported file type (no extension)"),
        Problem("cat/notes.txt", "unsupported file type .txt"),
    ]


def test_folder_ignores_hidden_files_and_mac_clutter_silently(tmp_path: Path) -> None:
    # Given hidden files and folders and a __MACOSX folder beside a class
    image(tmp_path / "cat" / "a.png")
    image(tmp_path / "cat" / ".hidden.png")
    image(tmp_path / ".git" / "x" / "b.png")
    image(tmp_path / "__MACOSX" / "cat" / "._a.png")
    # When it is read, then only the real image appears, and nothing is reported
    manifest = read_manifest(tmp_path)
    assert rows(manifest) == [("cat/a.png", "cat", None)]
    assert manifest.skipped == manifest.label_problems == []


def test_looks_through_a_single_wrapping_folder(tmp_path: Path) -> None:
    # Given a dataset wrapped in one folder, as ZIPs often are
    folder_dataset(tmp_path / "my-dataset")
    # When it is read
    manifest = read_manifest(tmp_path)
    # Then names are relative to the wrapped dataset, and splits are still found
    assert manifest.entries[0].name == "train/cat/cat1.png"
    assert manifest.entries[0].split == "train"


def test_a_single_folder_of_images_is_a_class_not_a_wrapper(tmp_path: Path) -> None:
    # Given one folder holding only images
    image(tmp_path / "cat" / "a.png")
    # When it is read, then the folder is the class of its images
    assert rows(read_manifest(tmp_path)) == [("cat/a.png", "cat", None)]


def test_never_follows_links_out_of_the_dataset(tmp_path: Path) -> None:
    # Given links inside the dataset to a file and a folder outside it
    outside = tmp_path / "outside"
    image(outside / "secret.png")
    root = tmp_path / "root"
    image(root / "cat" / "a.png")
    (root / "cat" / "b.png").symlink_to(outside / "secret.png")
    (root / "dog").symlink_to(outside, target_is_directory=True)
    # When it is read
    manifest = read_manifest(root)
    # Then neither link is imported, and both are reported
    assert rows(manifest) == [("cat/a.png", "cat", None)]
    assert manifest.skipped == [
        Problem("cat/b.png", "link pointing outside the dataset"),
        Problem("dog", "linked folder, not followed"),
    ]


def test_the_manifest_is_the_same_every_time(tmp_path: Path) -> None:
    # Given a dataset with problems of several kinds
    folder_dataset(tmp_path)
    image(tmp_path / "train" / "loose.png")
    text(tmp_path / "train" / "cat" / "x.txt", "")
    # When it is read twice, then both manifests are equal
    assert read_manifest(tmp_path) == read_manifest(tmp_path)


# -- csv --------------------------------------------------------------------------------------


def test_csv_with_a_header_and_splits(tmp_path: Path) -> None:
    # Given labels.csv with a header row and a split column
    csv_dataset(tmp_path)
    # When it is read
    manifest = read_manifest(tmp_path, "csv")
    # Then each listed image has its label and split
    assert rows(manifest) == [("a.png", "cat", "train"), ("b.jpg", "dog", "val")]


def test_csv_without_a_header_finds_images_in_an_images_folder(tmp_path: Path) -> None:
    # Given a headerless CSV whose file names are relative to images/ beside it
    image(tmp_path / "images" / "a.png")
    image(tmp_path / "images" / "sub" / "b.png")
    text(tmp_path / "labels.csv", "a.png,cat\nsub/b.png,dog,validation\n")
    # When it is read
    manifest = read_manifest(tmp_path)
    # Then the first row is data, and names are the images' paths in the dataset
    assert manifest.format == "csv"
    assert rows(manifest) == [("images/a.png", "cat", None), ("images/sub/b.png", "dog", "val")]


def test_csv_names_files_that_do_not_exist(tmp_path: Path) -> None:
    # Given a CSV listing 24 files that are not there and one that lies outside the dataset
    root = tmp_path / "root"
    image(root / "a.png")
    image(tmp_path / "outside.png")
    listed = "".join(f"gone{i}.png,cat\n" for i in range(24))
    text(root / "labels.csv", f"a.png,cat\n{listed}../outside.png,cat\n")
    # When it is read
    error = refused(root)
    # Then the error counts them all and lists the first 20
    assert error.code == "MISSING_FILES"
    assert "25 file(s)" in error.message
    assert "gone0.png" in error.message and "gone19.png" in error.message
    assert "gone20.png" not in error.message and "and 5 more" in error.message


def test_csv_refuses_an_unknown_split(tmp_path: Path) -> None:
    # Given a row whose split is not train, val or test
    image(tmp_path / "a.png")
    text(tmp_path / "labels.csv", "file,class,split\na.png,cat,holdout\n")
    # When it is read, then the error names the row and the value
    error = refused(tmp_path)
    assert error.code == "INVALID_DATASET"
    assert "row 2" in error.message and "'holdout'" in error.message


def test_csv_refuses_rows_with_the_wrong_columns(tmp_path: Path) -> None:
    # Given a CSV separated by semicolons, so each row is one column
    image(tmp_path / "a.png")
    text(tmp_path / "labels.csv", "a.png;cat\n")
    # When it is read, then the error says what a row should look like
    error = refused(tmp_path)
    assert "row 1" in error.message and "filename,label[,split]" in error.message


def test_csv_skips_unlisted_images_and_reports_label_problems(tmp_path: Path) -> None:
    # Given an unlisted image, an empty label and a file listed with two labels
    for name in ("a.png", "b.png", "c.png", "d.png"):
        image(tmp_path / name)
    text(tmp_path / "labels.csv", "a.png,cat\nb.png,\nc.png,cat\nc.png,dog\nc.png,cat\n")
    # When it is read
    manifest = read_manifest(tmp_path)
    # Then only a.png is imported, and every other image says why not
    assert rows(manifest) == [("a.png", "cat", None)]
    assert manifest.skipped == [Problem("d.png", "not listed in the CSV")]
    assert manifest.label_problems == [
        Problem("b.png", "empty label"),
        Problem("c.png", "listed with labels cat and dog"),
    ]


# -- coco -------------------------------------------------------------------------------------


def test_coco_reads_labels_boxes_and_splits_from_file_names(tmp_path: Path) -> None:
    # Given a train and a val JSON beside train/ and val/ image folders
    coco_dataset(tmp_path)
    image(tmp_path / "val" / "b.png")
    images = [{"id": 7, "file_name": "b.png", "width": 10, "height": 10}]
    boxes = [{"id": 1, "image_id": 7, "category_id": 2, "bbox": [5, 5, 10, 10]}]
    text(tmp_path / "annotations" / "instances_val.json", coco_json(images, boxes))
    # When it is read
    manifest = read_manifest(tmp_path, "coco")
    # Then labels come from categories, splits from the JSON names, and boxes are normalised
    assert rows(manifest) == [("train/a.png", "cat", "train"), ("val/b.png", "dog", "val")]
    assert manifest.entries[0].boxes == (Box("cat", 0.1, 0.1, 0.2, 0.2),)
    # And a box overshooting the image edge is clipped to it
    assert manifest.entries[1].boxes == (Box("dog", 0.5, 0.5, 0.5, 0.5),)
    assert manifest.classes == ["cat", "dog"]


def test_coco_reports_bad_json_with_its_position(tmp_path: Path) -> None:
    # Given a JSON file with a syntax error on its second line
    image(tmp_path / "images" / "a.png")
    text(tmp_path / "instances.json", '{"images": [],\n "annotations": [,]}')
    # When it is read, then the error names the file, line and column
    error = refused(tmp_path)
    assert error.code == "INVALID_JSON"
    assert "instances.json" in error.message and "line 2, column 18" in error.message


def test_coco_refuses_wrong_types(tmp_path: Path) -> None:
    # Given a COCO file whose images are not a list
    image(tmp_path / "images" / "a.png")
    doc = {"images": {"id": 1}, "annotations": [], "categories": []}
    text(tmp_path / "coco.json", json.dumps(doc))
    # When it is read, then the error says what is wrong
    error = refused(tmp_path, "coco")
    assert error.code == "INVALID_DATASET"
    assert "'images' must be a list" in error.message


def test_coco_names_missing_image_files(tmp_path: Path) -> None:
    # Given a COCO file naming an image that is not there
    image(tmp_path / "images" / "a.png")
    images = [
        {"id": 1, "file_name": "a.png", "width": 8, "height": 8},
        {"id": 2, "file_name": "gone.png", "width": 8, "height": 8},
    ]
    text(tmp_path / "coco.json", coco_json(images, []))
    # When it is read, then the missing file is named
    error = refused(tmp_path)
    assert error.code == "MISSING_FILES"
    assert "gone.png" in error.message


def test_coco_refuses_an_unknown_category(tmp_path: Path) -> None:
    # Given an annotation whose category_id is not among the categories
    image(tmp_path / "a.png")
    images = [{"id": 1, "file_name": "a.png"}]
    text(tmp_path / "coco.json", coco_json(images, [{"id": 1, "image_id": 1, "category_id": 9}]))
    # When it is read, then the error names the annotation and the id
    error = refused(tmp_path)
    assert error.code == "UNKNOWN_CATEGORY"
    assert "annotations[0]" in error.message and "9" in error.message


def test_coco_refuses_an_annotation_of_an_unknown_image(tmp_path: Path) -> None:
    # Given an annotation whose image_id is not among the images
    image(tmp_path / "a.png")
    images = [{"id": 1, "file_name": "a.png"}]
    text(tmp_path / "coco.json", coco_json(images, [{"id": 1, "image_id": 5, "category_id": 1}]))
    # When it is read, then the dataset is invalid
    error = refused(tmp_path)
    assert error.code == "INVALID_DATASET"
    assert "image 5" in error.message


def test_coco_refuses_a_box_it_cannot_scale(tmp_path: Path) -> None:
    # Given a box on an image whose width and height the JSON does not give
    image(tmp_path / "a.png")
    images = [{"id": 1, "file_name": "a.png"}]
    boxes = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}]
    text(tmp_path / "coco.json", coco_json(images, boxes))
    # When it is read, then that is refused rather than guessed
    assert "width and height" in refused(tmp_path).message


def test_coco_reports_images_with_several_categories_or_none(tmp_path: Path) -> None:
    # Given an image with a cat and a dog, one with no annotation and one not listed
    for name in ("a.png", "b.png", "c.png", "d.png"):
        image(tmp_path / "images" / name)
    images = [{"id": i, "file_name": n} for i, n in enumerate(("a.png", "b.png", "c.png"))]
    notes = [
        {"id": n, "image_id": i, "category_id": c}
        for n, (i, c) in enumerate([(0, 1), (0, 2), (2, 1), (2, 1)])
    ]
    text(tmp_path / "coco.json", coco_json(images, notes))
    # When it is read
    manifest = read_manifest(tmp_path)
    # Then only the image with one category is imported
    assert rows(manifest) == [("images/c.png", "cat", None)]
    assert manifest.label_problems == [
        Problem("images/a.png", "several categories: cat, dog"),
        Problem("images/b.png", "no annotation"),
    ]
    assert manifest.skipped == [Problem("images/d.png", "not listed in the COCO annotations")]


# -- yolo -------------------------------------------------------------------------------------


def test_yolo_reads_boxes_and_splits_with_names_from_a_yaml_list(tmp_path: Path) -> None:
    # Given images/train and labels/train, with class names listed in data.yaml
    yolo_dataset(tmp_path)
    # When it is read
    manifest = read_manifest(tmp_path, "yolo")
    # Then boxes are turned from centres into top-left corners
    assert rows(manifest) == [("images/train/a.jpg", "dog", "train")]
    (box,) = manifest.entries[0].boxes
    assert (box.label, box.w, box.h) == ("dog", 0.2, 0.4)
    assert box.x == pytest.approx(0.4) and box.y == pytest.approx(0.3)


def test_yolo_reads_names_from_a_yaml_mapping(tmp_path: Path) -> None:
    # Given data.yaml naming classes with an {index: name} mapping
    yolo_dataset(tmp_path)
    text(tmp_path / "data.yaml", "nc: 2\nnames:\n  0: cat\n  1: wolf\n")
    # When it is read, then class 1 is named from the mapping
    assert rows(read_manifest(tmp_path)) == [("images/train/a.jpg", "wolf", "train")]


@pytest.mark.parametrize("names_file", ["classes.txt", "obj.names"])
def test_yolo_reads_names_from_a_text_file_in_split_first_layout(
    tmp_path: Path, names_file: str
) -> None:
    # Given train/images + train/labels and class names one per line
    image(tmp_path / "train" / "images" / "a.png")
    image(tmp_path / "valid" / "images" / "b.png")
    text(tmp_path / "train" / "labels" / "a.txt", "0 0.5 0.5 1 1\n")
    text(tmp_path / "valid" / "labels" / "b.txt", "1 0.5 0.5 0.5 0.5\n\n")
    text(tmp_path / names_file, "cat\ndog\n")
    # When it is read
    manifest = read_manifest(tmp_path)
    # Then the split comes from the top folder and the classes from the text file
    assert manifest.format == "yolo"
    assert rows(manifest) == [
        ("train/images/a.png", "cat", "train"),
        ("valid/images/b.png", "dog", "val"),
    ]


def test_yolo_refuses_a_class_id_out_of_range(tmp_path: Path) -> None:
    # Given a label line using class 5 when data.yaml names two
    yolo_dataset(tmp_path)
    text(tmp_path / "labels" / "train" / "a.txt", "0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.2 0.2\n")
    # When it is read, then the error names the file and line
    error = refused(tmp_path)
    assert error.code == "LABEL_OUT_OF_RANGE"
    assert "labels/train/a.txt line 2" in error.message


@pytest.mark.parametrize("line", ["0.0 0.5 0.5 0.2 0.2", "dog 0.5 0.5 0.2 0.2"])
def test_yolo_refuses_a_class_id_that_is_not_a_whole_number(tmp_path: Path, line: str) -> None:
    # Given a label line whose class is not an integer
    yolo_dataset(tmp_path)
    text(tmp_path / "labels" / "train" / "a.txt", line)
    # When it is read, then it is out of range
    assert refused(tmp_path).code == "LABEL_OUT_OF_RANGE"


@pytest.mark.parametrize("line", ["0 1.5 0.5 0.2 0.2", "0 0.5 0.5 0 0.2", "0 0.5 nan 0.2 0.2"])
def test_yolo_refuses_coordinates_outside_the_image(tmp_path: Path, line: str) -> None:
    # Given a coordinate of 1.5, a zero width, or not-a-number
    yolo_dataset(tmp_path)
    text(tmp_path / "labels" / "train" / "a.txt", line)
    # When it is read, then it is out of range, naming the line
    error = refused(tmp_path)
    assert error.code == "LABEL_OUT_OF_RANGE"
    assert "line 1" in error.message


def test_yolo_refuses_malformed_yaml(tmp_path: Path) -> None:
    # Given a data.yaml that does not parse
    yolo_dataset(tmp_path)
    text(tmp_path / "data.yaml", "names: [cat, dog\n")
    # When it is read, then the error says it is not valid YAML
    error = refused(tmp_path, "yolo")
    assert error.code == "INVALID_DATASET"
    assert "data.yaml is not valid YAML" in error.message


def test_yolo_reports_images_without_labels_or_with_several_classes(tmp_path: Path) -> None:
    # Given one image with no label file, one with an empty one, and one with two classes
    yolo_dataset(tmp_path)
    for name in ("b", "c", "d"):
        image(tmp_path / "images" / "train" / f"{name}.jpg")
    text(tmp_path / "labels" / "train" / "c.txt", "")
    text(tmp_path / "labels" / "train" / "d.txt", "0 0.5 0.5 0.1 0.1\n1 0.2 0.2 0.1 0.1\n")
    text(tmp_path / "labels" / "train" / "orphan.txt", "0 0.5 0.5 0.1 0.1\n")
    # When it is read
    manifest = read_manifest(tmp_path)
    # Then only a.jpg is imported and the others say why not
    assert [e.name for e in manifest.entries] == ["images/train/a.jpg"]
    assert manifest.label_problems == [
        Problem("images/train/b.jpg", "no labels"),
        Problem("images/train/c.jpg", "no labels"),
        Problem("images/train/d.jpg", "several classes: cat, dog"),
    ]
    assert manifest.skipped == [
        Problem("labels/train/orphan.txt", "label file with no matching image")
    ]


def test_yolo_layout_without_class_names_is_refused(tmp_path: Path) -> None:
    # Given images/ and labels/ but no data.yaml, classes.txt or obj.names
    yolo_dataset(tmp_path)
    (tmp_path / "data.yaml").unlink()
    # When it is read, then the user is told to add class names rather than get two classes
    for fmt in ("auto", "yolo"):
        error = refused(tmp_path, fmt)
        assert "data.yaml, classes.txt or obj.names" in error.message


# -- detection --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (folder_dataset, "folder"),
        (csv_dataset, "csv"),
        (coco_dataset, "coco"),
        (yolo_dataset, "yolo"),
    ],
)
def test_detects_each_format(tmp_path: Path, build: Callable[[Path], Path], expected: str) -> None:
    # Given a dataset in one format, when its format is detected, then it is that one
    assert detect(build(tmp_path)) == expected
    assert read_manifest(tmp_path).format == expected


def test_an_unknown_layout_says_what_each_format_needs(tmp_path: Path) -> None:
    # Given images loose at the top with nothing describing them
    image(tmp_path / "a.png")
    image(tmp_path / "b.png")
    # When the format is detected, then the error lists every format's needs
    with pytest.raises(FormatError) as caught:
        detect(tmp_path)
    assert caught.value.code == "UNKNOWN_FORMAT"
    for fmt in ("folder", "csv", "coco", "yolo"):
        assert fmt in caught.value.message


def test_a_dataset_without_images_is_refused(tmp_path: Path) -> None:
    # Given only text files, when it is read, then there are no images to import
    text(tmp_path / "cat" / "notes.txt", "x")
    assert refused(tmp_path).code == "NO_IMAGES"


def test_an_unknown_format_name_is_a_validation_error(tmp_path: Path) -> None:
    # Given a valid dataset, when it is read as "voc"
    folder_dataset(tmp_path)
    error = refused(tmp_path, "voc")
    # Then the format field is blamed
    assert (error.code, error.field) == ("VALIDATION_ERROR", "format")
