"""The spatial context module and the SCN loss (:mod:`pipeline.models.context`)."""
