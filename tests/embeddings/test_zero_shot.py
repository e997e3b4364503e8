"""TextClassifier.zero_shot: a classifier from label names alone, and a starting point for training."""

from __future__ import annotations

import pytest
import torch
from embedding_fixtures import TEXT_LABELS, TEXTS, quiet_trainer, text_data

from flash.text import TextClassifier, TextEmbedder


@pytest.fixture(scope="module")
def zero_shot():
    return TextClassifier.zero_shot(
        {"animals": "a sentence about animals and pets", "money": "a sentence about money and finance"},
        template="{}",
        max_length=32,
    )


def test_it_classifies_from_the_label_descriptions_alone(zero_shot):
    assert zero_shot.labels == ["animals", "money"]
    assert zero_shot.predict(TEXTS) == TEXT_LABELS
    assert zero_shot.predict("My cat sleeps all day") == "animals"
    probabilities = zero_shot.predict("The bank lent us money", output="probabilities")
    assert probabilities["money"] > 0.7


def test_the_head_is_the_scaled_label_embeddings(zero_shot):
    prompts = TextEmbedder(max_length=32).embed(
        ["a sentence about animals and pets", "a sentence about money and finance"]
    )
    weight = zero_shot.head[-1].weight.detach()
    directions = torch.nn.functional.normalize(weight, dim=1).numpy()
    assert directions == pytest.approx(prompts, abs=1e-5)
    assert torch.equal(zero_shot.head[-1].bias, torch.zeros(2))


def test_it_trains_on_from_there():
    task = TextClassifier.zero_shot(["animals", "money"], template="This text is about {}.", max_length=16)
    head = task.head[-1].weight.detach().clone()
    quiet_trainer(max_epochs=1).finetune(task, text_data(), strategy="freeze")
    assert not torch.equal(task.head[-1].weight, head)
    assert task.predict(TEXTS) == TEXT_LABELS


@pytest.mark.parametrize(
    ("labels", "kwargs", "error", "message"),
    [
        (["a", "b"], {"template": "no slot"}, ValueError, "exactly one"),
        (["only"], {}, ValueError, "at least two labels"),
        (["a", "a"], {}, ValueError, "duplicates"),
        (["a", ""], {}, ValueError, "non-empty string"),
        ("ab", {}, TypeError, "list of class names"),
        (["a", "b"], {"num_classes": 2}, TypeError, "do not pass num_classes"),
        (["a", "b"], {"pooling": "cls"}, ValueError, "mean-pooled"),
        (["a", "b"], {"scale": 0}, ValueError, "scale must be"),
    ],
)
def test_bad_arguments_are_refused(labels, kwargs, error, message):
    with pytest.raises(error, match=message):
        TextClassifier.zero_shot(labels, **kwargs)
