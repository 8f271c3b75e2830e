"""`python -m serving.router`: serve the router (see serving.router.entry)."""

import sys

from serving.router.entry import main

sys.exit(main())
