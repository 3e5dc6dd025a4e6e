"""Experiments built from the library's parts (the library never imports from here).

``mias_cv``: patient-wise k-fold cross-validation of the patch trainer
(``mammojax cv``), with its report.
"""
