"""The demo dataset, drawn rather than downloaded (Pillow and numpy; no torch)."""
