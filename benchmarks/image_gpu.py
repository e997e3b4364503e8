"""GPU finetuning throughput: the train-step ceiling against two ways of feeding it from JPEG files.

    python benchmarks/image_gpu.py DATA_DIR [--out table.md] [--images 20000] [--compile]

DATA_DIR holds ``train/<class>/*.jpg`` (or ``<class>/*.jpg``), e.g. the ants-vs-bees photos; the
files are repeated to make an epoch of ``--images`` images. One table, three rows, all with
EfficientNet-Lite0 (timm ``efficientnet_lite0``), full finetuning, bf16 autocast, channels-last:

1. the raw train-step ceiling: a plain PyTorch loop on a synthetic batch already on the GPU;
2. flash: JPEG files -> reader workers -> nvJPEG batch decoding and GPU augmentation
   (:mod:`flash.image.gpu_pipeline`) -> a ``flash.Trainer`` training step;
3. the same Lightning training step fed by a plain PIL + torchvision-transforms DataLoader with
   ``cores - 1`` workers.

Each row runs in its own process (its own CUDA context and memory peak) with a time limit; the
whole run stays under ``--time-limit`` seconds (default 300). Throughput is measured after
``--warmup`` batches, with the GPU synchronised at both ends. ``--device cpu`` is a functional
self-test with tiny settings (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
CONTENDERS = ("ceiling", "flash_gpu", "pil_loader")
TITLES = {
    "ceiling": "(1) train-step ceiling: synthetic batch resident on the GPU, plain PyTorch loop",
    "flash_gpu": "(2) flash: JPEG files -> nvJPEG + GPU augmentation -> Lightning step",
    "pil_loader": "(3) PIL DataLoader (decode + augment in workers) -> Lightning step",
}
TIME_SHARES = {"ceiling": 0.25, "flash_gpu": 0.35, "pil_loader": 0.40}
NO_CUDA_MESSAGE = (
    "benchmarks/image_gpu.py measures GPU throughput, but PyTorch sees no CUDA device "
    "(torch.cuda.is_available() is False). Run it on a machine with an NVIDIA GPU and a CUDA "
    "build of torch, or pass --device cpu for a functional self-test."
)
_START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _START:7.1f}s] {message}", flush=True)


# -- settings ----------------------------------------------------------------------------------------
@dataclass
class Settings:
    data_dir: str
    images: int = 20_000
    batch_size: int = 256
    image_size: int = 224
    warmup: int = 10
    workers: int | None = None
    pil_workers: int | None = None
    compile: bool = False
    device: str = "cuda"
    time_limit: float = 300.0
    out: str | None = None
    seed: int = 0

    @property
    def low_precision(self) -> bool:
        """bf16 autocast on the GPU; the CPU self-test runs in float32 (CPU bf16 is slow without AMX)."""
        return self.device == "cuda"

    @property
    def measured_batches(self) -> int:
        return self.images // self.batch_size - self.warmup


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks/image_gpu.py",
        description="EfficientNet-Lite0 finetuning images/s on one GPU: ceiling vs flash's GPU input path vs PIL.",
    )
    parser.add_argument("data_dir", help="folder with train/<class>/*.jpg (or <class>/*.jpg)")
    parser.add_argument(
        "--images", type=_positive, default=20_000, help="images per measured epoch (files repeat)"
    )
    parser.add_argument("--batch-size", type=_positive, default=256)
    parser.add_argument("--image-size", type=_positive, default=224)
    parser.add_argument("--warmup", type=_positive, default=10, help="batches before timing starts")
    parser.add_argument(
        "--workers", type=_non_negative, default=None, help="reader workers of the flash path"
    )
    parser.add_argument(
        "--pil-workers", type=_non_negative, default=None, help="PIL DataLoader workers (cores - 1)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model in every row")
    parser.add_argument(
        "--device", choices=("cuda", "cpu"), default="cuda", help="cpu: functional self-test only"
    )
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds for the whole run")
    parser.add_argument("--out", default=None, help="also write the table (Markdown) to this file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    """Settings from the command line; errors name the bad value and exit with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = Settings(
        data_dir=args.data_dir,
        images=args.images,
        batch_size=args.batch_size,
        image_size=args.image_size,
        warmup=args.warmup,
        workers=args.workers,
        pil_workers=args.pil_workers,
        compile=args.compile,
        device=args.device,
        time_limit=args.time_limit,
        out=args.out,
        seed=args.seed,
    )
    if settings.measured_batches < 2:
        parser.error(
            f"--images {settings.images} at --batch-size {settings.batch_size} gives "
            f"{settings.images // settings.batch_size} batches; it needs at least --warmup ({settings.warmup}) + 2."
        )
    if settings.time_limit <= 30:
        parser.error(f"--time-limit must be more than 30 seconds, got {settings.time_limit}.")
    try:
        find_images(settings.data_dir)
    except ValueError as error:
        parser.error(str(error))
    return settings, args


def find_images(data_dir: str) -> tuple[list[str], list[int], list[str]]:
    """Image files under ``data_dir/train/<class>/`` (or ``data_dir/<class>/``), their class indices, classes."""
    root = Path(data_dir)
    if not root.is_dir():
        raise ValueError(f"DATA_DIR {data_dir!r} is not a folder.")
    if (root / "train").is_dir():
        root = root / "train"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, targets = [], []
    for index, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += [str(p) for p in files]
        targets += [index] * len(files)
    if len(classes) < 2 or not paths:
        raise ValueError(
            f"{root} needs one sub-folder of images per class (at least two), e.g. train/ants/*.jpg; "
            f"found {len(classes)} class folders and {len(paths)} images."
        )
    return paths, targets, classes


def repeat_to(paths: list[str], targets: list[int], count: int) -> tuple[list[str], list[int]]:
    """The files repeated (in order) until there are ``count`` of them."""
    reps = -(-count // len(paths))
    return (paths * reps)[:count], (targets * reps)[:count]


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# -- the table ----------------------------------------------------------------------------------------
def format_table(results: dict[str, dict[str, Any]], header: list[str]) -> str:
    """A Markdown table: one row per contender, images/s, ratio to the ceiling and peak memory."""
    ceiling = results.get("ceiling", {}).get("images_per_s")
    columns = ["input path", "images/s", "ratio to (1)", "peak GPU memory (MiB)", "notes"]
    rows = []
    for name in CONTENDERS:
        result = results.get(name, {"error": "not run"})
        rate = result.get("images_per_s")
        if rate is None:
            rows.append([TITLES[name], "-", "-", "-", f"failed: {result.get('error', 'unknown error')}"])
            continue
        ratio = f"{rate / ceiling:.2f}" if ceiling else "-"
        memory = result.get("peak_gpu_mib")
        rows.append(
            [
                TITLES[name],
                f"{rate:,.0f}",
                ratio,
                "-" if memory is None else f"{memory:,.0f}",
                result.get("note", ""),
            ]
        )
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = [*header, ""]
    lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def table_header(settings: Settings, environment: dict[str, Any], files: int) -> list[str]:
    return [
        f"EfficientNet-Lite0 finetuning throughput on {environment.get('device_name', settings.device)}: "
        f"{settings.image_size} px, batch {settings.batch_size}, "
        f"{'bf16 autocast' if settings.low_precision else 'float32'}, channels-last, full finetune"
        f"{', torch.compile' if settings.compile else ''}.",
        f"{settings.images:,} images per epoch ({files} files repeated); timed after {settings.warmup} warm-up "
        f"batches; {environment.get('cpus', cpu_count())} CPU cores; torch {environment.get('torch', '?')}, "
        f"torchvision {environment.get('torchvision', '?')}, CUDA {environment.get('cuda', '?')}.",
    ]


# -- shared pieces of the contenders ------------------------------------------------------------------------
def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gpu_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def _prepare_device(settings: Settings) -> torch.device:
    device = torch.device(settings.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(NO_CUDA_MESSAGE)
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    return device


def build_task(num_classes: int) -> tuple[Any, str]:
    """The flash image task on EfficientNet-Lite0; a core task on timm's model if the image task is missing."""
    try:
        from flash.image import ImageClassifier

        return ImageClassifier(num_classes=num_classes, backbone="efficientnet_lite0"), "ImageClassifier"
    except Exception as error:  # an image package in flux must not sink the run
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:80] if str(error) else ''}"
    import timm
    from torch import nn

    from flash.core.model.classification import ClassificationTask

    backbone = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
    task = ClassificationTask(
        backbone, nn.Linear(backbone.num_features, num_classes), num_classes=num_classes
    )
    return task, f"core ClassificationTask on timm (flash.image.ImageClassifier unavailable: {reason})"


class Throughput(Callback):
    """Times batches ``warmup`` .. end of a Lightning epoch, synchronising the GPU at both ends."""

    def __init__(self, warmup: int, max_seconds: float, device: torch.device, label: str) -> None:
        self.warmup, self.max_seconds, self.device, self.label = warmup, max_seconds, device, label
        self.start: float | None = None
        self.end: float | None = None
        self.images = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.warmup - 1:
            _synchronize(self.device)
            self.start = time.perf_counter()
            log(f"{self.label}: warm-up done, timing the remaining batches")
            return
        if self.start is None:
            return
        self.images += len(batch["target"])
        over_time = time.perf_counter() - self.start > self.max_seconds
        if over_time:
            trainer.should_stop = True
        if over_time or batch_idx == trainer.num_training_batches - 1:
            _synchronize(self.device)
            self.end = time.perf_counter()
        elif batch_idx % 20 == 0:
            log(f"{self.label}: batch {batch_idx + 1}/{trainer.num_training_batches}")

    def rate(self) -> float:
        if self.start is None or self.end is None or self.images == 0:
            raise RuntimeError(f"{self.label}: no timed batches (the epoch ended during warm-up)")
        return self.images / (self.end - self.start)


def _fit(
    settings: Settings, loader: Any, device: torch.device, label: str, max_seconds: float
) -> dict[str, Any]:
    import flash
    from flash.image.gpu_pipeline import CudaSpeedups

    task, task_note = build_task(num_classes=2)
    meter = Throughput(settings.warmup, max_seconds, device, label)
    trainer = flash.Trainer(
        max_epochs=1,
        accelerator="cuda" if device.type == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed" if settings.low_precision else "32-true",
        benchmark=device.type == "cuda",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[CudaSpeedups(channels_last=True, compile=settings.compile), meter],
    )
    trainer.finetune(task, train_dataloaders=loader, strategy="no_freeze")
    return {
        "images_per_s": meter.rate(),
        "images": meter.images,
        "peak_gpu_mib": _peak_gpu_mib(device),
        "task": task_note,
    }


# -- the three contenders --------------------------------------------------------------------------------
def run_ceiling(settings: Settings, max_seconds: float) -> dict[str, Any]:
    """A plain PyTorch train step on a synthetic batch that never leaves the GPU."""
    import timm
    import torch.nn.functional as F

    device = _prepare_device(settings)
    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=2).to(device)
    model = model.to(memory_format=torch.channels_last).train()
    if settings.compile:
        model.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    size, batch = settings.image_size, settings.batch_size
    dtype = torch.bfloat16 if settings.low_precision else torch.float32
    inputs = torch.randn(batch, 3, size, size, device=device).to(dtype, memory_format=torch.channels_last)
    targets = torch.randint(0, 2, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.low_precision):
            loss = F.cross_entropy(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    log(f"ceiling: {settings.warmup} warm-up steps")
    for _ in range(max(settings.warmup, 1)):
        step()
    _synchronize(device)
    log(f"ceiling: timing up to {settings.measured_batches} steps")
    start = time.perf_counter()
    steps = 0
    while steps < settings.measured_batches:
        step()
        steps += 1
        if steps % 10 == 0 and time.perf_counter() - start > max_seconds:
            break
    _synchronize(device)
    seconds = time.perf_counter() - start
    return {
        "images_per_s": steps * batch / seconds,
        "images": steps * batch,
        "peak_gpu_mib": _peak_gpu_mib(device),
    }


def run_flash_gpu(settings: Settings, max_seconds: float) -> dict[str, Any]:
    """flash's device input path from the JPEG files into a Lightning training step."""
    from flash.core.data.datamodule import EpochShuffleSampler
    from flash.image.gpu_pipeline import (
        DeviceImageTransform,
        default_reader_workers,
        device_image_loader,
        gpu_decoding_available,
    )

    device = _prepare_device(settings)
    if device.type == "cuda" and not gpu_decoding_available(str(device)):
        raise RuntimeError(
            "torchvision.io.decode_jpeg cannot decode on this GPU (torchvision built without nvJPEG?)"
        )
    files, targets, _ = find_images(settings.data_dir)
    paths, targets = repeat_to(files, targets, settings.images)
    transform = DeviceImageTransform(
        settings.image_size, (0.5,) * 3, (0.5,) * 3, train=True, device=device, seed=settings.seed,
        dtype=torch.bfloat16 if settings.low_precision else torch.float32, channels_last=True,
    )  # fmt: skip
    workers = default_reader_workers() if settings.workers is None else settings.workers
    loader = device_image_loader(
        paths, targets, transform, batch_size=settings.batch_size, num_workers=workers,
        sampler=EpochShuffleSampler(len(paths), settings.seed), drop_last=True,
    )  # fmt: skip
    result = _fit(settings, loader, device, "flash_gpu", max_seconds)
    result["note"] = f"{workers} reader workers; {result.pop('task')}"
    return result


class PilImages:
    """A map-style dataset: PIL decode + torchvision's RandomResizedCrop, flip, ToTensor, Normalize."""

    def __init__(self, paths: list[str], targets: list[int], image_size: int) -> None:
        from torchvision import transforms as T

        from flash.image.transforms import DEFAULT_CROP_SCALE  # crop as flash's path does

        self.paths, self.targets = paths, targets
        self.transform = T.Compose(
            [
                T.RandomResizedCrop(image_size, scale=DEFAULT_CROP_SCALE),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                T.Normalize((0.5,) * 3, (0.5,) * 3),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from PIL import Image

        with Image.open(self.paths[index]) as image:
            pixels = self.transform(image.convert("RGB"))
        return {"input": pixels, "target": self.targets[index]}


def run_pil_loader(settings: Settings, max_seconds: float) -> dict[str, Any]:
    """The same Lightning step fed by a plain PIL DataLoader with ``cores - 1`` workers."""
    from torch.utils.data import DataLoader

    from flash.core.data.datamodule import EpochShuffleSampler

    device = _prepare_device(settings)
    files, targets, _ = find_images(settings.data_dir)
    paths, targets = repeat_to(files, targets, settings.images)
    workers = max(1, cpu_count() - 1) if settings.pil_workers is None else settings.pil_workers
    sampler = EpochShuffleSampler(len(paths), settings.seed)
    loader = DataLoader(
        PilImages(paths, targets, settings.image_size), batch_size=settings.batch_size, sampler=sampler,
        num_workers=workers, pin_memory=device.type == "cuda", drop_last=True, generator=sampler.generator,
        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
    )  # fmt: skip
    result = _fit(settings, loader, device, "pil_loader", max_seconds)
    result["note"] = f"{workers} workers; {result.pop('task')}"
    return result


RUNNERS = {"ceiling": run_ceiling, "flash_gpu": run_flash_gpu, "pil_loader": run_pil_loader}


def environment(settings: Settings) -> dict[str, Any]:
    import torchvision

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cpus": cpu_count(),
    }
    info["cuda"] = torch.version.cuda or "none"
    if settings.device == "cuda" and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(0)
    else:
        info["device_name"] = "CPU (self-test: numbers are meaningless)"
    return info


# -- running each contender in its own process --------------------------------------------------------------
def run_in_subprocess(name: str, argv: list[str], timeout: float) -> dict[str, Any]:
    """Run one contender as ``python image_gpu.py ... --contender name`` in its own process group.

    The group (the contender and its loader workers) is killed when the contender ends, times out
    or this process is interrupted.
    """
    with tempfile.TemporaryDirectory() as folder:
        result_file = Path(folder) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), *argv, "--contender", name]
        command += ["--result-file", str(result_file)]
        process = subprocess.Popen(command, start_new_session=True)
        timed_out = False
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            code = process.wait()
        if result_file.exists():
            return json.loads(result_file.read_text())
        if timed_out:
            return {"error": f"timed out after {timeout:.0f} s"}
        return {"error": f"exited with code {code} before reporting (see the log above)"}


def run_here(name: str, settings: Settings, max_seconds: float) -> dict[str, Any]:
    """Run one contender in this process; its result, or ``{"error": ...}`` naming what failed."""
    try:
        return RUNNERS[name](settings, max_seconds)
    except Exception as error:
        traceback.print_exc()
        first_line = str(error).splitlines()[0] if str(error) else ""
        return {"error": f"{type(error).__name__}: {first_line[:200]}"}


def contender_main(name: str, settings: Settings, result_file: str | None, max_seconds: float) -> int:
    """Run one contender in this process and write its result (or its error) as JSON."""
    result = run_here(name, settings, max_seconds)
    if result_file:
        Path(result_file).write_text(json.dumps(result))
    return 0 if "images_per_s" in result else 1


def main(argv: list[str] | None = None, isolate: bool = True) -> int:
    settings, args = parse_args(argv)
    budget_per_row = settings.time_limit * 0.6 / len(CONTENDERS)  # what the timed loop may use
    if args.contender:
        return contender_main(args.contender, settings, args.result_file, budget_per_row)
    if settings.device == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE, file=sys.stderr, flush=True)
        return 2
    deadline = time.perf_counter() + settings.time_limit
    info = environment(settings)
    files = len(find_images(settings.data_dir)[0])
    log(
        f"device: {info['device_name']}; {files} files repeated to {settings.images:,} images; {info['cpus']} CPUs"
    )
    child_argv = _without_option(argv if argv is not None else sys.argv[1:], "--out")
    results: dict[str, dict[str, Any]] = {}
    for name in CONTENDERS:
        remaining = deadline - time.perf_counter()
        timeout = min(remaining - 5, settings.time_limit * TIME_SHARES[name] + 30)
        if timeout < 20:
            results[name] = {"error": "skipped: the run's time limit was used up"}
            log(f"{name}: skipped, out of time")
            continue
        log(f"{name}: starting (limit {timeout:.0f} s)")
        if isolate:
            results[name] = run_in_subprocess(name, child_argv, timeout)
        else:
            results[name] = run_here(name, settings, budget_per_row)
        rate = results[name].get("images_per_s")
        log(f"{name}: " + (f"{rate:,.0f} images/s" if rate else results[name].get("error", "failed")))
    table = format_table(results, table_header(settings, info, files))
    print("\n" + table, flush=True)
    if settings.out:
        Path(settings.out).parent.mkdir(parents=True, exist_ok=True)
        Path(settings.out).write_text(table)
        log(f"table written to {settings.out}")
    return 0 if all("images_per_s" in r for r in results.values()) else 1


def _without_option(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` / ``option=VALUE`` (the children must not write the table)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            kept.append(arg)
    return kept


if __name__ == "__main__":
    sys.exit(main())
