"""What the command lines share: flag parsing (``flags``), turning flags into one ``RunConfig`` (``layering``), and
the data and loaders a run config asks for (``data``). The commands themselves stay ``python -m imgcls.train``,
``imgcls.eval``, ``imgcls.infer`` and ``imgcls.convert``."""
