"""Dataset-specific training recipes built from the library's parts.

``mias_cv``: patient-wise k-fold cross-validation on mini-MIAS with a
lesion-patch classifier that scores whole images through top-k pooling
(``patches``).
"""
