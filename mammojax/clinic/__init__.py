"""Into the clinic's systems (issue 24).

* :mod:`mammojax.clinic.exams`: DICOM images grouped into exams (Study
  Instance UID) and breasts (Image Laterality), scored per breast and per exam.
* :mod:`mammojax.clinic.dicom_out`: the Structured Report and the Secondary
  Capture that ``predict --dicom-out`` writes for each DICOM input.

The exported model (``mammojax export``) lives in :mod:`mammojax.export`.
Identifiers read from DICOM headers stay in memory, and go only into the
DICOM objects written for a PACS.
"""
