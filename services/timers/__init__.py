"""Timers: time-driven gate work (a consent whose period begins later, or ends)."""
