"""Where a loaded model runs: ``--accelerator`` / ``accelerator=`` choices to a torch device."""

from __future__ import annotations

import torch

ACCELERATORS = ("auto", "cpu", "gpu", "cuda")


def resolve_device(accelerator: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or ``None``): the first CUDA GPU when there is one, else the CPU; ``"cpu"``;
    ``"gpu"``/``"cuda"`` (or ``"cuda:N"``, or a :class:`torch.device`): a GPU, which must exist.

    Raises:
        ValueError: for an unknown name, or a GPU asked for where there is none.
    """
    if isinstance(accelerator, torch.device):
        name = accelerator.type
        device = accelerator
    else:
        name = "auto" if accelerator is None else str(accelerator).lower()
        base = name.split(":", 1)[0]
        if base not in ACCELERATORS:
            raise ValueError(f"Unknown accelerator {accelerator!r}. Choose one of {', '.join(ACCELERATORS)}.")
        if base == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device("cpu" if base == "cpu" else name.replace("gpu", "cuda"))
        name = device.type
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "A GPU was asked for, but torch sees no CUDA device; use accelerator 'cpu' or 'auto'."
        )
    return device
