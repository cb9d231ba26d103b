"""What the API keeps between requests to answer /predict: the serving choices, the bundle
cache and the batcher.

Built once per app, in its lifespan (`service.app`); routes receive it as `ModelServerDep`.
"""

from __future__ import annotations

import models
from core.servable import ServingChoices
from core.settings import Settings
from service.batcher import InferenceBatcher
from service.bundle_cache import BundleCache


class ModelServer:
    """What the API keeps between requests: which job serves, the loaded models, the batcher."""

    def __init__(
        self, cache_size: int, precision: models.Precision = "float32", runners: int = 2
    ) -> None:
        self.dtype = models.inference_dtype(precision)
        self.choices = ServingChoices()
        self.cache = BundleCache(cache_size, self.dtype)
        self.batcher = InferenceBatcher(runners=runners)

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelServer:
        return cls(settings.model_cache_size, settings.predict_precision, settings.predict_runners)
