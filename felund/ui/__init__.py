"""The curses ui: a sans-IO view model, its parts, rendering, and the terminal."""
