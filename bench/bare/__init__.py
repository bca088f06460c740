"""A bare DRF insert endpoint: the yardstick `make bench-load` compares intake against.

Never installed in production: nothing in the product imports it, and it has settings of its own.
"""
