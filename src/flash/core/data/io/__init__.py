"""Lightning Flash 0.8's ``flash.core.data.io`` import paths (``input``, ``output``)."""
