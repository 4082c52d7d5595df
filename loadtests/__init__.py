"""Locust load tests for Readwire: scenarios, load shapes, SLO files, the runner and its reports.

`python loadtests/run.py SCENARIO` stands the local stack up, runs one scenario headless, checks its SLOs and
renders the report (see loadtests/README.md). The modules that tests import (zipf, pacing, consistency, slo,
report, catalog) never import locust: importing locust monkey-patches the process with gevent.
"""
