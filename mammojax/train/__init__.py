"""Training: state, losses, optimizer, sharding, checkpoints and the loop.

The entry point is :func:`mammojax.train.loop.train_and_evaluate`, which the
``mammojax train`` command and the tests both call. Submodules are imported
on demand so that importing this package stays cheap.
"""
