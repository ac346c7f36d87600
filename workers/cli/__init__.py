"""The `clad` command line, one module per command group; main.py reads the settings
once and registers the groups.

May import everything in workers, pipeline and engine (lazily, inside commands).
"""
