"""Tests of the REST service (``python -m stage2.service``) against real servers."""
