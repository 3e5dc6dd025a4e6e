"""Training: one core loop, the trainers that feed it, and what they share.

The entry point is :func:`mammojax.train.trainers.train_and_evaluate`, which the
``mammojax train`` command and the tests both call; it runs the trainer that
``train.recipe`` names in :data:`mammojax.train.trainers.TRAINERS`. Submodules
are imported on demand so that importing this package stays cheap.
"""
