"""The ``devops`` command line: a client of the HTTP API (issue 15). It imports nothing of the
service's own packages, so it runs anywhere the API is reachable."""
