"""Training: :class:`~flash.core.training.trainer.Trainer`, finetuning strategies, optimizers and the learning-rate finder."""
