"""The e2e tier."""
