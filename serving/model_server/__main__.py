"""`python -m serving.model_server`: serve one product's pinned versions (see entry.main)."""

from serving.model_server.entry import main

main()
