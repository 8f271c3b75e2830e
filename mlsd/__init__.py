"""mlsd package."""
