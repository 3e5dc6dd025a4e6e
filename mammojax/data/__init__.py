"""Data: reading, screening and preprocessing mammograms, datasets, caches.

Deliberately empty of imports so that ``import mammojax.data.<module>`` stays
cheap (no TensorFlow, no pydicom until a DICOM is read). Entry points:

- :func:`mammojax.data.readers.read_image`: any supported file -> float32 (H, W)
- :func:`mammojax.data.screening.screen_files`: keep readable files, list the rest
- :func:`mammojax.data.preprocess.preprocess_image`: (h, w) -> model input (H, W, 1)
- :func:`mammojax.data.records.load_dataset`: a dataset's records and exclusions
"""
