"""The clinical web page: a Streamlit script (``page.py``) over pure functions (``logic.py``).

Start it with ``mammojax app --checkpoint DIR``. Everything the page computes
lives in :mod:`mammojax.app.logic`, so it is tested without a browser.
"""
