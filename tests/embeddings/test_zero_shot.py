"""TextClassifier.zero_shot: a classifier from label names alone, and a starting point for training."""

from __future__ import annotations

import pytest
import torch
from embedding_fixtures import ANIMALS, MONEY, TEXT_LABELS, TEXTS, quiet_trainer, text_data

from flash.text import TextClassificationData, TextClassifier, TextEmbedder


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


def test_few_shot_training_from_zero_shot_with_the_contrastive_strategy():
    # the label names say nothing; three examples per class teach the classes
    task = TextClassifier.zero_shot(["first", "second"], template="{}", max_length=16)
    trainer = quiet_trainer(max_epochs=3)
    data = TextClassificationData.from_lists(
        TEXTS, ["first"] * len(ANIMALS) + ["second"] * len(MONEY), batch_size=6
    )
    trainer.finetune(task, data, strategy="contrastive")
    assert task.training_objective is None
    assert task.predict(["A kitten chased a mouse", "The market rallied after the report"]) == [
        "first",
        "second",
    ]
    probabilities = task.predict(TEXTS, output="probabilities")
    assert [max(p, key=p.get) for p in probabilities] == task.predict(TEXTS)  # one label order


def test_a_prior_head_lets_a_class_train_from_a_single_example():
    data = TextClassificationData.from_lists(
        [ANIMALS[0], *MONEY], ["animals", "money", "money", "money"], batch_size=4
    )
    fresh = TextClassifier(num_classes=2, labels=["animals", "money"], max_length=16)
    with pytest.raises(ValueError, match="single training example.*prior"):
        quiet_trainer(max_epochs=1).finetune(fresh, data, strategy="contrastive")
    task = TextClassifier.zero_shot(["animals", "money"], template="{}", max_length=16)
    quiet_trainer(max_epochs=1).finetune(task, data, strategy="contrastive")
    assert task.predict([ANIMALS[0], *MONEY]) == ["animals", "money", "money", "money"]
