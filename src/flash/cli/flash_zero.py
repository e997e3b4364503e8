"""Lightning Flash Zero commands (``flash image_classification from_folders --train_folder ...``)
translated into ``flash finetune``.

Flash Zero took ``flash TASK [--trainer.X V] [--model.X V] from_CONSTRUCTOR [--ARG V ...]``. Its
training tasks that exist here run as the equivalent ``flash finetune DOMAIN`` command (printed
first); anything else stops with the command to write instead.
"""

from __future__ import annotations

from collections.abc import Sequence

TASKS = {
    "image_classification": ("image", []),
    "text_classification": ("text", []),
    "tabular_classification": ("tabular", []),
    "tabular_regression": ("tabular", ["--regression"]),
}
"""Flash Zero task names that map onto ``flash finetune``: the domain and its extra flags."""

WITHOUT_COUNTERPART = (
    "audio_classification",
    "graph_classification",
    "image_embedder",
    "instance_segmentation",
    "keypoint_detection",
    "multi_label_image_classification",
    "object_detection",
    "pointcloud_detection",
    "pointcloud_segmentation",
    "question_answering",
    "semantic_segmentation",
    "speech_recognition",
    "style_transfer",
    "summarization",
    "tabular_forecasting",
    "translation",
    "video_classification",
)
"""Other Lightning Flash Zero tasks: refused with the tasks that exist here."""

CONSTRUCTORS = ("from_folders", "from_csv", "from_parquet")

_OPTIONS = {
    "trainer.max_epochs": "--epochs",
    "model.backbone": "--backbone",
    "model.learning_rate": "--lr",
    "model.optimizer": "--optimizer",
    "model.lr_scheduler": "--lr-scheduler",
    "seed_everything": "--seed",
    "train_folder": "--train-folder",
    "val_folder": "--val-folder",
    "test_folder": "--test-folder",
    "train_file": "--train-file",
    "val_file": "--val-file",
    "test_file": "--test-file",
    "input_field": "--input-field",
    "target_fields": "--target-fields",
    "target_field": "--target-fields",
    "categorical_fields": "--categorical-fields",
    "numerical_fields": "--numerical-fields",
    "batch_size": "--batch-size",
    "num_workers": "--num-workers",
    "val_split": "--val-split",
    "transform_kwargs.image_size": "--image-size",
}
"""Flash Zero options (without ``--``) and their ``flash finetune`` counterparts."""

_LIST_OPTIONS = {"target_fields", "categorical_fields", "numerical_fields"}
"""Options that took several values (``--target_fields a b``): joined with commas here."""


def is_flash_zero(argv: Sequence[str]) -> bool:
    """Whether ``argv`` starts (after global flags) with a Lightning Flash Zero task name."""
    command = next((token for token in argv if not token.startswith("-")), None)
    return command in TASKS or command in WITHOUT_COUNTERPART


def translate(argv: Sequence[str]) -> list[str]:
    """The ``flash finetune`` argv equivalent to the Flash Zero ``argv``.

    Raises:
        ValueError: for a task, constructor or option with no counterpart; the message gives the
            equivalent command as far as it goes.
    """
    argv = list(argv)
    at = next(i for i, token in enumerate(argv) if not token.startswith("-"))
    head, task, rest = argv[:at], argv[at], argv[at + 1 :]
    if task not in TASKS:
        raise ValueError(
            f"`flash {task}` is a Lightning Flash Zero task with no counterpart here. Tasks here: "
            + ", ".join(f"flash finetune {d}" for d in dict.fromkeys(d for d, _ in TASKS.values()))
            + "."
        )
    domain, extra = TASKS[task]
    translated = [*head, "finetune", domain, *extra]
    pairs, constructor = _pairs(rest)
    if constructor is None:
        raise ValueError(
            f"`flash {task}` without a from_* part ran a Lightning Flash demo that downloads data; here, "
            f"name your data: flash finetune {domain} --train-folder DIR ... (see `flash finetune {domain} --help`)."
        )
    if constructor not in CONSTRUCTORS:
        raise ValueError(
            f"`{constructor}` has no counterpart here; use from_folders or from_csv "
            f"(flash finetune {domain} --train-folder DIR / --train-file FILE)."
        )
    unknown = []
    for name, values in pairs:
        if name == "trainer.gpus":
            count = values[0] if values else "1"
            translated += ["--accelerator", "cpu" if count in ("0", "None") else "gpu"]
        elif name in _OPTIONS:
            value = ",".join(values) if name in _LIST_OPTIONS else " ".join(values)
            if name == "transform_kwargs.image_size":
                value = values[0].strip("()[], ") if values else value
            translated += [_OPTIONS[name], value]
        else:
            unknown.append(f"--{name}")
    if unknown:
        known = ", ".join(f"--{o}" for o in (*_OPTIONS, "trainer.gpus"))
        raise ValueError(
            f"Lightning Flash Zero option(s) {', '.join(unknown)} have no counterpart here (known: {known}). "
            f"The rest translates to: flash {' '.join(translated)}"
        )
    return translated


def _pairs(tokens: list[str]) -> tuple[list[tuple[str, list[str]]], str | None]:
    """``--name value [value ...]`` pairs (``--name=value`` too) and the ``from_*`` constructor."""
    pairs: list[tuple[str, list[str]]] = []
    constructor = None
    for token in tokens:
        if token.startswith("--"):
            name, eq, value = token[2:].partition("=")
            pairs.append((name, [value] if eq else []))
        elif token.startswith("from_") and constructor is None:
            constructor = token
        elif pairs:
            pairs[-1][1].append(token)
        else:
            raise ValueError(f"Unexpected {token!r} in a Lightning Flash Zero command.")
    return pairs, constructor
