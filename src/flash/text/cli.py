"""Text in the ``flash`` command: ``flash finetune text``, ``flash predict`` inputs, and the default
embedder of ``flash embed`` and ``flash search`` (whose commands this family carries).

Imports nothing heavy at module level: see :mod:`flash.cli.domains`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flash.cli import domains
from flash.cli.domains import DomainSpec, Option, register_domain
from flash.cli.embed import EMBED, SEARCH, register_embedder


def _text_data(options: dict[str, Any]) -> Any:
    from flash.text import TextClassificationData

    kind = domains.file_kind(options["train_file"], "--train-file")
    constructor = getattr(TextClassificationData, f"from_{kind}")
    files = domains.data_kwargs(options, ("train_file", "val_file", "test_file"))
    reading: dict[str, Any] = {"drop_empty": True} if options.get("drop_empty") else {}
    if options.get("encoding") is not None:
        if kind == "parquet":
            raise ValueError("--encoding applies to CSV and JSON files; Parquet files carry their own.")
        reading["encoding"] = options["encoding"]
    return constructor(
        options["input_field"],
        domains.one_or_many(options["target_fields"]),
        **files,
        **reading,
        **domains.loader_kwargs(options),
    )


def _text_task(options: dict[str, Any], data: Any) -> Any:
    from flash.text import TextClassifier

    extra = {"max_length": options["max_length"]} if options.get("max_length") is not None else {}
    template = options.get("zero_shot")
    if template is not None:
        if data.multi_label:
            raise ValueError("--zero-shot builds a single-label classifier; this data is multi-label.")
        return TextClassifier.zero_shot(
            [str(label) for label in data.labels], template, **domains.task_kwargs(options, **extra)
        )
    return TextClassifier(
        num_classes=data.num_classes,
        multi_label=bool(data.multi_label),
        **domains.task_kwargs(options, **extra),
    )


def _text_inputs(task: Any, inputs: Sequence[str], options: dict[str, Any]) -> tuple[list[str], Any]:
    """Each input is a text, or a file of texts (.txt, .csv, .tsv, .json, .jsonl, .parquet)."""
    if options.get("input_field"):
        task.input_field = options["input_field"]
    names: list[str] = []
    texts: list[str] = []
    for item in inputs:
        found, single = task.texts_of(item)
        names.extend([item] if single else [f"{item}:{row}" for row in range(len(found))])
        texts.extend(found)
    return names, texts


register_embedder("text", "flash.text.embedder:TextEmbedder")

TEXT = register_domain(
    DomainSpec(
        commands=(EMBED, SEARCH),
        predict_help="texts, .txt files (one text a line) or tables",
        predict_options=(
            Option(
                "--input-field",
                "the text column of table inputs (default: the only text column)",
                metavar="COLUMN",
            ),
        ),
        order=20,
        outputs=("labels", "probabilities", "set"),
        name="text",
        summary="text classification from a CSV, JSON or Parquet file",
        package="flash.text",
        default_backbone="all-MiniLM-L6-v2",
        default_strategy="no_freeze",
        options=(
            *domains.split_options(
                "file",
                "training file (.csv, .json, .jsonl or .parquet)",
                "validation file, same columns",
                "test file, same columns",
                metavar="FILE",
                val_aliases=("--valid-file",),
            ),
            Option("--input-field", "the column holding the text", metavar="COLUMN"),
            domains.target_fields_option(
                "the label column (several, comma-separated: multi-label with one 0/1 column per class)"
            ),
            Option(
                "--max-length",
                "tokens kept per text (default: the task's)",
                domains.positive_int,
                metavar="TOKENS",
            ),
            Option(
                "--encoding",
                "the text encoding of CSV and JSON files, e.g. latin-1 or cp1252 (default: utf-8)",
                metavar="NAME",
            ),
            Option("--drop-empty", "drop rows without text instead of stopping with an error", kind="flag"),
            Option(
                "--zero-shot",
                "start from a zero-shot classifier: each class's text is TEMPLATE with the class name "
                "for {}, e.g. 'This review is {}.' (few-shot data: with --strategy contrastive)",
                metavar="TEMPLATE",
            ),
            *domains.LOADING,
        ),
        build_data=_text_data,
        build_task=_text_task,
        predict_inputs=_text_inputs,
        required=(("train_file",), ("input_field",), ("target_fields",)),
        example=(
            "flash finetune text --train-file train.csv --val-file valid.csv "
            "--input-field sentence --target-field label --epochs 2"
        ),
    )
)
