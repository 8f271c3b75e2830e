"""`python -m serving.model_server`: serve one product's pinned versions (see entry.main)."""

from serving.model_server.entry import main

# Guarded: a process spawned by the server (the fraud version's loader) imports this module too.
if __name__ == "__main__":
    main()
