"""Training methods over the shared loop: one module each (``scn``), on ``base.Method``."""
