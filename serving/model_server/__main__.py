"""`python -m serving.model_server`: serve one product's pinned versions (see entry.main)."""

from serving.model_server.entry import main

# Guarded, so that importing the module starts nothing (a tool or a test may import it).
if __name__ == "__main__":
    main()
