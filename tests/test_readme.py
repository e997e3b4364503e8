"""Run the README's examples on tiny generated data, so they cannot rot.

How a Markdown file marks its examples for this test:

- Only code blocks right after an HTML comment ``<!-- test ... -->`` run (```python and ```bash).
- ``<!-- test -->`` runs the next block in a fresh namespace, in an empty temporary folder.
- ``<!-- test: continue -->`` runs it in the namespace and folder of the previous tested block.
- ``<!-- test: A -> B; C -> D -->`` replaces the text ``A`` by ``B`` (and ``C`` by ``D``) before
  running, e.g. to skip a download; combine with ``continue`` as ``<!-- test: continue; A -> B -->``.
- The Markdown declares where its examples' sample data lives with
  ``<!-- example-data: PREFIX -->`` (the README does, in its introduction; a ``docs/`` section
  tested alone uses the README's). Paths under that prefix are replaced by tiny generated copies
  with the same layout: ``hymenoptera_data/{train,val}/{ants,bees}/*.jpg``,
  ``sst2/{train,valid}.csv`` (``sentence,label``), ``titanic/titanic.csv`` (the Kaggle columns),
  ``camvid/{train,val}/{images,masks}`` with ``camvid/classes.txt`` (11 classes, 11 = void)
  and ``bccd/{train,val}/{images,annotations}`` (JPEGs with Pascal VOC XML boxes).
- For speed, ``max_epochs=N`` runs at most 2 epochs and ``--epochs N`` at most 1.
- A python block that uses ``data``, ``model`` or ``task`` without defining them (as the
  finetuning page's later snippets do) gets the seed example's: the tiny ants/bees
  ``ImageClassificationData`` (64 px crops) and an ``ImageClassifier`` for it.
- Examples that train an image model (they name ``hymenoptera``, ``ImageClassif...``,
  ``finetune image``, ``SemanticSegmentation``, ``finetune segmentation`` or ``flash demo``, or
  use the seed example's names) are marked ``slow``.
- In bash blocks, each command that starts with ``flash`` runs through ``flash.cli.main`` in
  this process (continuation lines with ``\\`` are joined); other lines are not run.
- The ``docs/`` pages that are not sections of the README (serving, GPU, migrating, ...) are
  tested too, each with the README's sample-data declaration.
- ``FLASH_README=docs/cli.md pytest tests/test_readme.py`` tests another Markdown file alone, e.g. a
  ``docs/`` section before the README is assembled from them.
"""

from __future__ import annotations

import ast
import csv
import gc
import importlib.util
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!--\s*test\b\s*:?\s*(?P<options>.*?)\s*-->\s*$")
FENCE = re.compile(r"^```(?P<language>\w*)\s*$")
DATA_DECLARATION = re.compile(r"^<!--\s*example-data:\s*(?P<prefix>\S+)\s*-->\s*$", re.MULTILINE)
PREDEFINED = ("data", "model", "task")


@dataclass
class Block:
    language: str
    source: str
    line: int
    heading: str
    continues: bool = False
    replacements: list[tuple[str, str]] = field(default_factory=list)


def readme_path() -> Path:
    given = os.environ.get("FLASH_README")
    return (ROOT / given) if given else ROOT / "README.md"


def example_pages() -> list[Path]:
    """The README (or ``$FLASH_README`` alone), and the docs/ pages that are not sections of it."""
    if os.environ.get("FLASH_README"):
        return [readme_path()]
    spec = importlib.util.spec_from_file_location("build_readme", ROOT / "tools" / "build_readme.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    others = [p for p in sorted((ROOT / "docs").glob("*.md")) if p.stem not in builder.SECTIONS]
    return [readme_path(), *others]


def example_data_prefix(text: str) -> str | None:
    """The path prefix a Markdown text declares for its examples' sample data, if any."""
    found = DATA_DECLARATION.search(text)
    return found.group("prefix") if found else None


def declared_prefix(path: Path | None = None) -> str | None:
    """The tested file's declaration, else the README's."""
    for candidate in (path or readme_path(), ROOT / "README.md"):
        prefix = example_data_prefix(candidate.read_text(encoding="utf-8")) if candidate.is_file() else None
        if prefix:
            return prefix
    return None


def parse_marker(options: str) -> tuple[bool, list[tuple[str, str]]]:
    continues, replacements = False, []
    for part in (p.strip() for p in options.split(";")):
        if not part:
            continue
        if part == "continue":
            continues = True
        elif "->" in part:
            old, new = (side.strip() for side in part.split("->", 1))
            replacements.append((_unquote(old), _unquote(new)))
        else:
            raise ValueError(f"Unknown test marker option {part!r}: use 'continue' or 'OLD -> NEW'.")
    return continues, replacements


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"`" else text


def marked_blocks(text: str) -> list[Block]:
    """The code blocks of a Markdown text that follow a ``<!-- test -->`` marker."""
    lines = text.splitlines()
    blocks: list[Block] = []
    heading = "(top)"
    pending: tuple[bool, list[tuple[str, str]]] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        marker = MARKER.match(line.strip())
        fence = FENCE.match(line.strip())
        if marker:
            pending = parse_marker(marker.group("options"))
        elif fence and fence.group("language"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), len(lines))
            if pending is not None and fence.group("language") in ("python", "bash", "sh", "console"):
                source = "\n".join(lines[i + 1 : end])
                blocks.append(Block(fence.group("language"), source, i + 2, heading, *pending))
            pending = None
            i = end
        elif line.strip() and pending is not None:
            pending = None  # a marker applies only to the block right after it
        i += 1
    return blocks


def chains(blocks: list[Block]) -> list[list[Block]]:
    """Blocks grouped so that each ``continue`` block runs after the one before it."""
    grouped: list[list[Block]] = []
    for block in blocks:
        if block.continues and grouped:
            grouped[-1].append(block)
        else:
            grouped.append([block])
    return grouped


def _cases():
    cases = []
    for path in example_pages():
        name = path.relative_to(ROOT).as_posix()
        if not path.is_file():
            cases.append(
                pytest.param(None, None, marks=pytest.mark.skip(reason=f"{name} does not exist yet"))
            )
            continue
        found = chains(marked_blocks(path.read_text(encoding="utf-8")))
        if not found and path == readme_path():
            reason = f"{name} has no code block marked <!-- test --> yet"
            cases.append(pytest.param(path, None, marks=pytest.mark.skip(reason=reason)))
        cases += [
            pytest.param(
                path,
                chain,
                id=f"{'' if path == readme_path() else path.stem + '-'}line{chain[0].line}-{_slug(chain[0].heading)}",
                marks=[pytest.mark.slow] if any(_trains_images(block) for block in chain) else [],
            )
            for chain in found
        ]
    return cases


IMAGE_WORDS = re.compile(
    r"hymenoptera|ImageClassif|finetune\s+image|flash\s+demo|vision|SemanticSegmentation|finetune\s+segmentation"
    r"|ObjectDetect|finetune\s+detection"
)


def _trains_images(block: Block) -> bool:
    if IMAGE_WORDS.search(block.source):
        return True
    try:
        return block.language == "python" and bool(undefined_names(block.source))
    except SyntaxError:
        return False  # the test itself reports it


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "block"


# -- tiny data with the sample data's layout ----------------------------------------------------
def write_hymenoptera(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = {"ants": (150, 40, 30), "bees": (230, 190, 40)}
    for split, count in (("train", 6), ("val", 3)):
        for name, colour in colours.items():
            folder = root / "hymenoptera_data" / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                noise = rng.integers(-40, 40, size=(40, 48, 3))
                pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}_{k}.jpg", quality=90)


def write_sst2(root: Path) -> None:
    good = ["a wonderful film", "moving and funny", "great acting", "a lovely story"]
    bad = ["a dreadful film", "dull and too long", "awful acting", "a waste of time"]
    folder = root / "sst2"
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in (("train.csv", 16), ("valid.csv", 8)):
        with (folder / name).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["sentence", "label"])
            for k in range(count):
                positive = k % 2
                words = good if positive else bad
                writer.writerow([f"{words[k % 4]} number {k}", positive])


def write_titanic(root: Path) -> None:
    rng = np.random.default_rng(0)
    folder = root / "titanic"
    folder.mkdir(parents=True, exist_ok=True)
    columns = ["PassengerId", "Survived", "Pclass", "Name", "Sex", "Age", "SibSp", "Parch", "Ticket", "Fare", "Cabin", "Embarked"]  # fmt: skip
    with (folder / "titanic.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for k in range(60):
            sex = "female" if rng.random() < 0.4 else "male"
            survived = int((sex == "female") != (rng.random() < 0.15))
            age = "" if rng.random() < 0.1 else round(float(rng.uniform(1, 70)), 1)
            row = [k + 1, survived, int(rng.integers(1, 4)), f"Passenger {k}", sex, age, int(rng.integers(0, 3)),
                   int(rng.integers(0, 3)), f"T{k}", round(float(rng.exponential(30)), 2), "",
                   str(rng.choice(["S", "C", "Q"]))]  # fmt: skip
            writer.writerow(row)


CAMVID_CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car", "pedestrian", "bicyclist"]  # fmt: skip


def write_camvid(root: Path) -> None:
    """Street-scene-like 64x48 images with masks of bands of classes 0-10 and a void (11) border."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = root / "camvid"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classes.txt").write_text("\n".join(CAMVID_CLASSES) + "\n")
    colours = rng.integers(0, 255, size=(len(CAMVID_CLASSES), 3))
    for split, count in (("train", 6), ("val", 3)):
        (folder / split / "images").mkdir(parents=True, exist_ok=True)
        (folder / split / "masks").mkdir(parents=True, exist_ok=True)
        for k in range(count):
            bands = np.sort(rng.choice(np.arange(4, 60), size=len(CAMVID_CLASSES) - 1, replace=False))
            mask = (
                np.searchsorted(bands, np.arange(64), side="right")[None, :]
                .repeat(48, axis=0)
                .astype(np.uint8)
            )
            mask[:2] = 11
            pixels = np.clip(colours[mask.clip(0, 10)] + rng.integers(-15, 15, (48, 64, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / split / "images" / f"{split}_{k:03d}.jpg")
            Image.fromarray(mask).save(folder / split / "masks" / f"{split}_{k:03d}.png")


def write_bccd(root: Path) -> None:
    """Cells as coloured discs' boxes on pink, three classes, with one zero-size box as BCCD has."""
    from detection_fixtures import voc_xml
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = {"RBC": (200, 60, 60), "WBC": (90, 60, 160), "Platelets": (120, 40, 120)}
    for split, count in (("train", 8), ("val", 3)):
        for sub in ("images", "annotations"):
            (root / "bccd" / split / sub).mkdir(parents=True, exist_ok=True)
        for k in range(count):
            pixels = np.full((48, 64, 3), (240, 200, 200), np.uint8)
            boxes, labels = [], []
            for name, colour in colours.items():
                side = int(rng.integers(8, 14))
                x0, y0 = int(rng.integers(0, 64 - side)), int(rng.integers(0, 48 - side))
                pixels[y0 : y0 + side, x0 : x0 + side] = colour
                boxes.append([x0, y0, x0 + side, y0 + side])
                labels.append(name)
            if k == 0:
                boxes.append([10, 10, 10, 10])
                labels.append("RBC")
            name = f"BloodImage_{k:05d}"
            Image.fromarray(pixels).save(root / "bccd" / split / "images" / f"{name}.jpg", quality=95)
            xml = voc_xml(f"{name}.jpg", 64, 48, boxes, labels)
            (root / "bccd" / split / "annotations" / f"{name}.xml").write_text(xml)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sample_data")
    write_hymenoptera(root)
    write_sst2(root)
    write_titanic(root)
    write_camvid(root)
    write_bccd(root)
    return root


# -- running ------------------------------------------------------------------------------------
def prepare(source: str, block: Block, data_root: Path, data_prefix: str | None) -> str:
    for old, new in block.replacements:
        if old not in source:
            raise AssertionError(
                f"line {block.line}: the test marker replaces {old!r}, which the block lacks."
            )
        source = source.replace(old, new)
    if data_prefix:
        source = source.replace(data_prefix.rstrip("/") + "/", f"{data_root.as_posix()}/")
    source = re.sub(r"max_epochs\s*=\s*(\d+)", lambda m: f"max_epochs={min(int(m.group(1)), 2)}", source)
    return re.sub(r"--epochs(\s+|=)(\d+)", lambda m: f"--epochs{m.group(1)}{min(int(m.group(2)), 1)}", source)


def undefined_names(source: str) -> set[str]:
    tree = ast.parse(source)
    stored = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    loaded = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return (loaded - stored) & set(PREDEFINED)


def seed_example(data_root: Path) -> dict[str, object]:
    """The seed example's ``data`` and ``model`` (also as ``task``), on the tiny ants and bees."""
    image = pytest.importorskip("flash.image", reason="the block uses the seed example's image task")
    data = image.ImageClassificationData.from_folders(
        train_folder=str(data_root / "hymenoptera_data" / "train"),
        val_folder=str(data_root / "hymenoptera_data" / "val"),
        batch_size=4,
        image_size=64,
    )
    model = image.ImageClassifier(num_classes=data.num_classes)
    return {"data": data, "model": model, "task": model}


def run_python(source: str, block: Block, namespace: dict, data_root: Path, path: Path) -> None:
    missing = undefined_names(source) - set(namespace)
    if missing:
        namespace.update(seed_example(data_root))
    exec(compile(source, f"{path}:{block.line}", "exec"), namespace)


def run_bash(source: str, block: Block, path: Path) -> None:
    from flash import cli

    joined = re.sub(r"\\\n\s*", " ", source)
    commands = [line.strip().removeprefix("$ ") for line in joined.splitlines()]
    commands = [c for c in commands if c.startswith(("flash ", "python -m flash "))]
    if not commands:
        raise AssertionError(f"{path}:{block.line}: a tested bash block has no flash command to run.")
    for command in commands:
        argv = shlex.split(command, comments=True)
        argv = argv[3:] if argv[0] == "python" else argv[1:]
        try:
            code = cli.main(argv)
        except SystemExit as stop:
            code = stop.code
        assert code == 0, f"{path}:{block.line}: `{command}` exited with {code}"


@pytest.mark.parametrize(("path", "chain"), _cases())
def test_readme_example(path, chain, tiny_data):
    namespace: dict = {"__name__": "__readme__"}
    prefix = declared_prefix(path)
    try:
        for block in chain:
            source = prepare(block.source, block, tiny_data, prefix)
            if block.language == "python":
                run_python(source, block, namespace, tiny_data, path)
            else:
                run_bash(source, block, path)
    finally:
        # An example's functions hold the namespace (their globals), a cycle only the garbage
        # collector frees; if it first runs in a forked DataLoader worker of a later example, an
        # onnxruntime session's destructor there waits forever on threads the fork left behind.
        namespace.clear()
        gc.collect()


# -- the mechanism itself -------------------------------------------------------------------------
EXAMPLE = """# Title

<!-- test -->
```python
x = 1
```

```python
never = run
```

## Section
<!-- test: continue; 1 -> 2 -->
```python
y = x + 1
```

<!-- test -->
```bash
flash --version
```
"""


def test_markers_select_blocks_continuations_and_replacements():
    blocks = marked_blocks(EXAMPLE)
    assert [(b.language, b.line, b.heading, b.continues) for b in blocks] == [
        ("python", 5, "Title", False),
        ("python", 15, "Section", True),
        ("bash", 20, "Section", False),
    ]
    assert blocks[1].replacements == [("1", "2")]
    assert [len(chain) for chain in chains(blocks)] == [2, 1]


def test_data_paths_and_epochs_are_made_tiny(tmp_path):
    block = Block("python", "", 1, "x", replacements=[("download_data(", "print(")])
    source = (
        'download_data("https://example.org/a.zip", "data/")\n'
        'f = "samples/sst2/train.csv"\n'
        "t = flash.Trainer(max_epochs=10)\n"
        "# flash finetune image --epochs 4\n"
    )
    prepared = prepare(source, block, tmp_path, "samples")
    assert 'print("https://example.org/a.zip", "data/")' in prepared
    assert f'"{tmp_path.as_posix()}/sst2/train.csv"' in prepared
    assert "max_epochs=2" in prepared and "--epochs 1" in prepared
    with pytest.raises(AssertionError, match="which the block lacks"):
        prepare("x = 1", Block("python", "", 1, "x", replacements=[("y", "z")]), tmp_path, None)
    assert example_data_prefix("# T\n<!-- example-data: samples/ -->\ntext") == "samples/"
    assert example_data_prefix("# T\nno declaration") is None
    assert undefined_names("trainer.finetune(model, data)") == {"model", "data"}
    assert undefined_names("data = 1\nprint(data)") == set()


def test_the_readme_declares_its_sample_data_and_no_example_reads_it(tmp_path):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    prefix = example_data_prefix(text)
    assert prefix, "README.md lacks its <!-- example-data: PREFIX --> declaration"
    for path in example_pages():
        for block in marked_blocks(path.read_text(encoding="utf-8")):
            prepared = prepare(block.source, block, tmp_path, prefix)
            assert prefix not in prepared, f"{path.name}:{block.line}"


def test_tiny_data_has_the_sample_data_layout(tiny_data):
    assert len(list((tiny_data / "hymenoptera_data" / "train" / "ants").glob("*.jpg"))) == 6
    assert (tiny_data / "hymenoptera_data" / "val" / "bees").is_dir()
    with (tiny_data / "sst2" / "valid.csv").open() as handle:
        assert next(csv.reader(handle)) == ["sentence", "label"]
    with (tiny_data / "titanic" / "titanic.csv").open() as handle:
        header = next(csv.reader(handle))
    assert {"Survived", "Pclass", "Sex", "Age", "SibSp", "Parch", "Fare", "Embarked"} <= set(header)
    camvid = tiny_data / "camvid"
    assert (camvid / "classes.txt").read_text().split() == CAMVID_CLASSES
    for split in ("train", "val"):
        images = sorted(p.stem for p in (camvid / split / "images").glob("*.jpg"))
        assert images and images == sorted(p.stem for p in (camvid / split / "masks").glob("*.png"))
