import pandas as pd
import torch

from flash.tabular.backbones import CategoricalOneHot, FeatureTokenizer, build_backbone
from flash.tabular.preprocessing import TabularPreprocessor


def test_unknown_category_contributes_nothing():
    codes = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    one_hot = CategoricalOneHot([2, 3])(codes)
    assert one_hot.tolist() == [[0, 0, 0, 1, 0], [1, 0, 0, 0, 0]]
    tokens = FeatureTokenizer(num_numerical=0, cardinalities=[2, 3], d_token=8)(codes)
    assert tokens.shape == (2, 3, 8)  # [CLS] and one token per column
    assert torch.all(tokens[0, 1] == 0) and torch.all(tokens[1, 2] == 0)
    assert torch.any(tokens[0, 2] != 0) and torch.any(tokens[1, 1] != 0)


def test_backbones_give_k_members_and_name_their_blocks():
    frame = pd.DataFrame({"n": [1.0, 2.0, None, 4.0, 5.0], "c": ["a", "b", "a", "c", "b"]})
    pre = TabularPreprocessor.fit(frame, ["c"], ["n"])
    x = torch.as_tensor(pre.transform(frame))
    tabm = build_backbone("tabm", pre, k=4, d_block=8)
    assert tabm.module(x).shape == (5, 4, 8) and tabm.preprocessing["ensemble_size"] == 4
    assert len(tabm.blocks) == 1 + 3  # the feature encoder, then TabM's three blocks
    mlp = build_backbone("mlp", pre, d_block=8, n_blocks=2)
    assert mlp.module(x).shape == (5, 1, 8) and len(mlp.blocks) == 3
