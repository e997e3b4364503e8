"""Tasks: the :class:`~flash.core.model.task.Task` base, classification and regression, and the backbone registry."""
