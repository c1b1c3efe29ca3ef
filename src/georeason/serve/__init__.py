"""The web demo and REST service (`georeason serve`): FastAPI app factory and its settings.

Web demo and REST service (docs/serve.md); not in the paper. `create_app(model_dir_or_reasoner, settings)`.
"""

from georeason.serve.app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]
