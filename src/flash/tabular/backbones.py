"""Tabular backbones: TabM and MLPs over numerical embeddings, trained from scratch.

Every backbone takes the preprocessed row vectors of :mod:`flash.tabular.preprocessing`
(``(batch, numerical features + categorical codes)``, float) and returns ``(batch, k, width)``:
``k`` ensemble members (``k = 1`` for a plain network). The head maps each member to the outputs
and the task averages the members' predictions.

=================  ==========================================================================
name               model
=================  ==========================================================================
``tabm``           TabM (Gorishniy et al., ICLR 2025): a parameter-efficient ensemble of
                   ``k = 32`` MLPs (BatchEnsemble layers) from the ``tabm`` package
``tabm_pwl``       TabM over piecewise-linear embeddings of the numerical features (TabM
                   with ``rtdl_num_embeddings.PiecewiseLinearEmbeddings``, version B)
``mlp``            a plain MLP
``mlp_plr``        an MLP over periodic embeddings (PLR, lite) of the numerical features
``ft_transformer`` FT-Transformer (Gorishniy et al., 2021): one token per feature, a
                   pre-norm Transformer, prediction from the [CLS] token
=================  ==========================================================================
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flash.core.model.registry import Backbone, BackboneRegistry
from flash.core.utils.extras import require
from flash.tabular.preprocessing import TabularPreprocessor

TABULAR_BACKBONES = BackboneRegistry("tabular")
DEFAULT_BACKBONE = "tabm"


def _rtdl(purpose: str) -> Any:
    return require("rtdl_num_embeddings", "tabular", purpose)


class LinearEnsemble(nn.Module):
    """``k`` linear layers applied in parallel: ``(batch, k, in_features) -> (batch, k, out_features)``.

    The same parameters (``weight`` of shape ``(k, in, out)``, ``bias`` of shape ``(k, out)``) and
    initialisation as ``tabm.LinearEnsemble``, so that the plain backbones need no extra package.
    """

    def __init__(self, in_features: int, out_features: int, k: int) -> None:
        super().__init__()
        if min(in_features, out_features, k) < 1:
            raise ValueError(
                f"LinearEnsemble needs positive sizes, got {in_features}, {out_features}, k={k}."
            )
        self.weight = nn.Parameter(torch.empty(k, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(k, out_features))
        bound = in_features**-0.5
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.transpose(0, 1) @ self.weight).transpose(0, 1) + self.bias


class CategoricalOneHot(nn.Module):
    """One-hot vectors of categorical codes; code ``0`` ("unknown") becomes all zeros."""

    def __init__(self, cardinalities: Sequence[int]) -> None:
        super().__init__()
        self.cardinalities = [int(c) for c in cardinalities]
        for i, cardinality in enumerate(self.cardinalities):
            self.register_buffer(f"levels_{i}", torch.arange(1, cardinality + 1), persistent=False)

    @property
    def width(self) -> int:
        return sum(self.cardinalities)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        columns = [
            (codes[:, i : i + 1] == getattr(self, f"levels_{i}")).to(torch.float32)
            for i in range(len(self.cardinalities))
        ]
        return torch.cat(columns, dim=1)


class FeatureEncoder(nn.Module):
    """Row vectors -> a flat feature vector: numerical features (optionally embedded) and one-hots.

    Args:
        num_numerical: numerical features (scaled values and missing indicators).
        cardinalities: training categories per categorical column.
        embedding: ``None``, ``"piecewise_linear"`` (needs ``bins``) or ``"periodic"``.
        d_embedding: width of each numerical feature's embedding.
        bins: bin edges per numerical feature (piecewise-linear embeddings).
    """

    def __init__(
        self,
        num_numerical: int,
        cardinalities: Sequence[int],
        embedding: str | None = None,
        d_embedding: int = 16,
        bins: Sequence[Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        self.num_numerical = num_numerical
        self.num_embeddings: nn.Module | None = None
        numerical_width = num_numerical
        if embedding is not None and num_numerical > 0:
            if embedding == "piecewise_linear":
                if bins is None:
                    raise ValueError("Piecewise-linear embeddings need the bins of the numerical features.")
                edges = [torch.tensor(b, dtype=torch.float32) for b in bins]
                with warnings.catch_warnings():  # one bin is expected for 0/1 and few-valued features
                    warnings.filterwarnings("ignore", message=".*has just two bin edges.*")
                    self.num_embeddings = _rtdl("piecewise-linear embeddings").PiecewiseLinearEmbeddings(
                        edges, d_embedding, activation=False, version="B"
                    )
            elif embedding == "periodic":
                self.num_embeddings = _rtdl("periodic embeddings").PeriodicEmbeddings(
                    num_numerical, d_embedding, lite=True
                )
            else:
                raise ValueError(f"Unknown numerical embedding {embedding!r}.")
            numerical_width = num_numerical * d_embedding
        self.one_hot = CategoricalOneHot(cardinalities)
        self.feature_widths = [numerical_width // max(num_numerical, 1)] * num_numerical + list(cardinalities)
        self.width = numerical_width + self.one_hot.width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.num_numerical:
            numerical = x[:, : self.num_numerical]
            if self.num_embeddings is not None:
                numerical = self.num_embeddings(numerical).flatten(1)
            parts.append(numerical)
        if self.one_hot.cardinalities:
            parts.append(self.one_hot(x[:, self.num_numerical :].long()))
        return torch.cat(parts, dim=1)


class TabMNetwork(nn.Module):
    """A feature encoder followed by TabM's ensemble of ``k`` MLPs; output ``(batch, k, d_block)``."""

    def __init__(
        self,
        encoder: FeatureEncoder,
        k: int,
        n_blocks: int,
        d_block: int,
        dropout: float,
        arch_type: str = "tabm",
    ) -> None:
        super().__init__()
        self.encoder = encoder
        tabm = require("tabm", "tabular", "The tabm backbones")
        self.ensemble_view = tabm.EnsembleView(k=k)
        embedded = encoder.num_embeddings is not None
        packed = arch_type == "tabm-packed"
        self.mlp = tabm.make_tabm_backbone(
            d_in=encoder.width,
            n_blocks=n_blocks,
            d_block=d_block,
            dropout=dropout,
            k=k,
            arch_type=arch_type,
            start_scaling_init=None if packed else ("normal" if embedded else "random-signs"),
            start_scaling_init_chunks=None if packed else encoder.feature_widths,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.ensemble_view(self.encoder(x)))


class MLPNetwork(nn.Module):
    """A feature encoder followed by an MLP; output ``(batch, 1, d_block)``."""

    def __init__(self, encoder: FeatureEncoder, n_blocks: int, d_block: int, dropout: float) -> None:
        super().__init__()
        self.encoder = encoder
        widths = [encoder.width] + [d_block] * n_blocks
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout))
            for a, b in itertools.pairwise(widths)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder(x)
        for block in self.blocks:
            x = block(x)
        return x.unsqueeze(1)


class FeatureTokenizer(nn.Module):
    """One ``d_token`` vector per feature (linear for numbers, a lookup for categories), plus [CLS]."""

    def __init__(self, num_numerical: int, cardinalities: Sequence[int], d_token: int) -> None:
        super().__init__()
        self.num_numerical = num_numerical
        self.numerical = (
            _rtdl("The ft_transformer backbone").LinearEmbeddings(num_numerical, d_token)
            if num_numerical
            else None
        )
        cardinalities = [int(c) for c in cardinalities]
        self.categorical = nn.Embedding(sum(c + 1 for c in cardinalities), d_token) if cardinalities else None
        offsets = torch.tensor([0] + [c + 1 for c in cardinalities[:-1]]).cumsum(0) if cardinalities else None
        self.register_buffer("offsets", offsets, persistent=False)
        self.cls = nn.Parameter(torch.empty(d_token))
        bound = d_token**-0.5
        nn.init.uniform_(self.cls, -bound, bound)
        if self.categorical is not None:
            nn.init.uniform_(self.categorical.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = [self.cls.expand(x.shape[0], 1, -1)]
        if self.numerical is not None:
            tokens.append(self.numerical(x[:, : self.num_numerical]))
        if self.categorical is not None:
            codes = x[:, self.num_numerical :].long()
            known = (codes > 0).unsqueeze(-1).to(x.dtype)  # the "unknown" code 0 gets a zero token
            tokens.append(self.categorical(codes + self.offsets) * known)
        return torch.cat(tokens, dim=1)


class TransformerBlock(nn.Module):
    """A pre-norm Transformer layer (the first one skips its attention norm, as in FT-Transformer)."""

    def __init__(self, d_token: int, n_heads: int, d_ffn: int, dropout: float, first: bool) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.attention_norm = nn.Identity() if first else nn.LayerNorm(d_token)
        self.qkv = nn.Linear(d_token, 3 * d_token)
        self.out = nn.Linear(d_token, d_token)
        self.ffn_norm = nn.LayerNorm(d_token)
        self.ffn = nn.Sequential(
            nn.Linear(d_token, d_ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ffn, d_token)
        )
        self.dropout = nn.Dropout(dropout)
        self.attention_dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        q, k, v = (
            self.qkv(self.attention_norm(x))
            .view(batch, tokens, 3, self.n_heads, width // self.n_heads)
            .permute(2, 0, 3, 1, 4)
        )
        attended = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attention_dropout if self.training else 0.0
        )
        x = x + self.dropout(self.out(attended.transpose(1, 2).reshape(batch, tokens, width)))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class FTTransformerNetwork(nn.Module):
    """Feature tokens through Transformer layers; output the normalised [CLS] token, ``(batch, 1, d)``."""

    def __init__(
        self,
        num_numerical: int,
        cardinalities: Sequence[int],
        d_token: int,
        n_blocks: int,
        n_heads: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.tokenizer = FeatureTokenizer(num_numerical, cardinalities, d_token)
        d_ffn = int(d_token * 4 / 3)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_token, n_heads, d_ffn, dropout, first=i == 0) for i in range(n_blocks)
        )
        self.norm = nn.Sequential(nn.LayerNorm(d_token), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.tokenizer(x)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens[:, :1])


def _options(defaults: dict[str, Any], given: dict[str, Any], name: str) -> dict[str, Any]:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(
            f"Unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for tabular backbone {name!r}. "
            f"Its options: {', '.join(f'{k}={v!r}' for k, v in defaults.items())}."
        )
    return {**defaults, **given}


# TabM's paper uses d_block=512; 128 was as accurate on the small tables of
# benchmarks/tabular_cpu.py and about 3x faster on a CPU. Large tables may want more.
_TABM = {"k": 32, "n_blocks": 3, "d_block": 128, "dropout": 0.1, "arch_type": "tabm"}
_TABM_PWL = {**_TABM, "n_blocks": 2, "d_embedding": 16, "n_bins": 48}
_MLP = {"n_blocks": 3, "d_block": 256, "dropout": 0.1}
_MLP_PLR = {**_MLP, "n_blocks": 2, "d_embedding": 16}
_FT = {"d_token": 96, "n_blocks": 3, "n_heads": 8, "dropout": 0.1}


def _described(network: nn.Module, width: int, blocks: list[nn.Module], options: dict[str, Any]) -> Backbone:
    """A built backbone that also records every option it was built with, defaults filled in
    (``preprocessing["options"]``): tasks save those, so a checkpoint rebuilds the same network
    whatever the defaults are when it is loaded."""
    ensemble_size = network.mlp.k if isinstance(network, TabMNetwork) else 1
    return Backbone(network, width, blocks, {"ensemble_size": ensemble_size, "options": dict(options)})


def _tabm_backbone(network: TabMNetwork, options: dict[str, Any]) -> Backbone:
    blocks = [network.encoder, *network.mlp.blocks]
    return _described(network, network.mlp.blocks[-1][0].out_features, blocks, options)


def _check_arch(arch_type: str) -> None:
    if arch_type not in ("tabm", "tabm-mini", "tabm-packed"):
        raise ValueError(f"arch_type must be 'tabm', 'tabm-mini' or 'tabm-packed', got {arch_type!r}.")


@TABULAR_BACKBONES.register(
    "tabm", offline=True, description="TabM: an efficient ensemble of 32 MLPs (tabm package)"
)
def tabm_plain(pretrained: bool, preprocessor: TabularPreprocessor, **options: Any) -> Backbone:
    o = _options(_TABM, options, "tabm")
    _check_arch(o["arch_type"])
    encoder = FeatureEncoder(preprocessor.num_numerical_features, preprocessor.cardinalities)
    return _tabm_backbone(
        TabMNetwork(encoder, o["k"], o["n_blocks"], o["d_block"], o["dropout"], o["arch_type"]), o
    )


@TABULAR_BACKBONES.register(
    "tabm_pwl", offline=True, description="TabM over piecewise-linear embeddings of the numerical features"
)
def tabm_piecewise_linear(pretrained: bool, preprocessor: TabularPreprocessor, **options: Any) -> Backbone:
    o = _options(_TABM_PWL, options, "tabm_pwl")
    _check_arch(o["arch_type"])
    encoder = FeatureEncoder(
        preprocessor.num_numerical_features,
        preprocessor.cardinalities,
        embedding="piecewise_linear",
        d_embedding=o["d_embedding"],
        bins=preprocessor.feature_bins(o["n_bins"]),
    )
    return _tabm_backbone(
        TabMNetwork(encoder, o["k"], o["n_blocks"], o["d_block"], o["dropout"], o["arch_type"]), o
    )


def _mlp_backbone(preprocessor: TabularPreprocessor, o: dict[str, Any], **embedding: Any) -> Backbone:
    """An MLP over the encoded features (``embedding``: how numbers are embedded, if at all)."""
    encoder = FeatureEncoder(preprocessor.num_numerical_features, preprocessor.cardinalities, **embedding)
    network = MLPNetwork(encoder, o["n_blocks"], o["d_block"], o["dropout"])
    return _described(network, o["d_block"], [encoder, *network.blocks], o)


@TABULAR_BACKBONES.register("mlp", offline=True, description="a plain MLP")
def mlp(pretrained: bool, preprocessor: TabularPreprocessor, **options: Any) -> Backbone:
    return _mlp_backbone(preprocessor, _options(_MLP, options, "mlp"))


@TABULAR_BACKBONES.register(
    "mlp_plr", offline=True, description="an MLP over periodic (PLR-lite) numerical embeddings"
)
def mlp_plr(pretrained: bool, preprocessor: TabularPreprocessor, **options: Any) -> Backbone:
    o = _options(_MLP_PLR, options, "mlp_plr")
    return _mlp_backbone(preprocessor, o, embedding="periodic", d_embedding=o["d_embedding"])


@TABULAR_BACKBONES.register(
    "ft_transformer", offline=True, description="FT-Transformer: a Transformer over one token per feature"
)
def ft_transformer(pretrained: bool, preprocessor: TabularPreprocessor, **options: Any) -> Backbone:
    o = _options(_FT, options, "ft_transformer")
    if o["d_token"] % o["n_heads"]:
        raise ValueError(f"d_token ({o['d_token']}) must be a multiple of n_heads ({o['n_heads']}).")
    network = FTTransformerNetwork(
        preprocessor.num_numerical_features,
        preprocessor.cardinalities,
        o["d_token"],
        o["n_blocks"],
        o["n_heads"],
        o["dropout"],
    )
    return _described(network, o["d_token"], [network.tokenizer, *network.blocks], o)


FLASH_BACKBONE_NAMES = {"fttransformer": "ft_transformer", "category_embedding": "mlp"}
"""Lightning Flash's tabular backbone names (from pytorch-tabular) that have a counterpart here."""

FLASH_BACKBONES_WITHOUT_COUNTERPART = ("tabnet", "tabtransformer", "autoint", "node", "gate", "gandalf")
"""Lightning Flash's tabular backbones that have none."""


def build_backbone(name: str, preprocessor: TabularPreprocessor, **options: Any) -> Backbone:
    """Build the tabular backbone ``name`` for the columns ``preprocessor`` produces (Lightning
    Flash's ``"fttransformer"`` and ``"category_embedding"`` name ``"ft_transformer"`` and ``"mlp"``)."""
    name = FLASH_BACKBONE_NAMES.get(name, name) if isinstance(name, str) else name
    if name in FLASH_BACKBONES_WITHOUT_COUNTERPART:
        raise ValueError(
            f"Lightning Flash's tabular backbone {name!r} (pytorch-tabular) is not available here. "
            f"Choose one of {', '.join(TABULAR_BACKBONES.available())} ('tabm', the default, is usually best)."
        )
    if name not in TABULAR_BACKBONES:
        raise ValueError(
            f"Unknown tabular backbone {name!r}. Choose one of {', '.join(TABULAR_BACKBONES.available())}."
        )
    return TABULAR_BACKBONES.build(name, pretrained=False, preprocessor=preprocessor, **options)
