"""Build and desktop-integration scripts for the double-click app (see README.md here)."""
