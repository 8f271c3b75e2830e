"""Imported only by a forkserver's preload in tests/integration/test_flow_runs_forked.py: the
process that imported it is recorded, so a flow run can tell that it inherited it."""

import os

IMPORTED_BY = os.getpid()
