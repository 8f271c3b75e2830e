"""Sub-commands of the `mlsd` CLI, one module per area. Heavy libraries are imported inside commands."""
