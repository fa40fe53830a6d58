"""stage2 as a REST service: ``python -m stage2.service``. See :mod:`stage2.service.app`."""
