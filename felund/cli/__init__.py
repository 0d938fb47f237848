"""The felund command."""
