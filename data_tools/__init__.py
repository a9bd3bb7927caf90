"""Command-line tools that prepare data on disk for dropclass.

Each tool is a thin command-line layer over `dropclass.data`, where the logic and its tests live.
"""
