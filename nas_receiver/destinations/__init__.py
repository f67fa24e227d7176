"""Destinations: where off-site copies go, behind one small interface (``base.Destination``).

``local.LocalDestination`` (a folder: USB disk, another share) is a real implementation and
also what tests use where any destination will do.
"""
