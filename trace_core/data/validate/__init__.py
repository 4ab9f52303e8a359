"""Data quality of M-BEIR files with Great Expectations.

- :mod:`~trace_core.data.validate.checks`: streams the files into tables (structural problems
  become issues with file and line);
- :mod:`~trace_core.data.validate.suite`: the GX suites, Data Docs and the ``validate`` stage.
"""
