"""Model loading: embedded catalog, Hugging Face ids, tiny random models; chat formatting; layout discovery."""

from valuemech.models.arch import ModelArch, discover
from valuemech.models.catalog import CATALOG, DEFAULT_MODEL
from valuemech.models.loading import LoadedModel, load_model, wrap_model

__all__ = ["CATALOG", "DEFAULT_MODEL", "LoadedModel", "ModelArch", "discover", "load_model", "wrap_model"]
