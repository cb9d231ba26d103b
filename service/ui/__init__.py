"""The browser dashboard: HTML pages at /ui/ over the same JSON API (see service/ui/pages.py)."""
