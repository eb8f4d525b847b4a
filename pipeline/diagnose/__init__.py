"""The pre-flight diagnosis (stages ``diagnose_objects``, ``diagnose``): supervised ceiling,
context and target predictability, proposal quality."""
